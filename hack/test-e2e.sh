#!/usr/bin/env bash
# make test-e2e: the end-to-end tests (test/e2e, build tag e2e) on a real cluster.
#   hack/test-e2e.sh         the cluster $KUBECONFIG names, else the local cluster (brought up
#                            as root when it is down); CI (.ci/run) runs this.
#   hack/test-e2e.sh --kind  a kind cluster made for the run (needs Docker and kind, so it
#                            cannot run on the CI machines): the images are loaded with
#                            `kind load`, and GPUs are emulated by patching the node's capacity.
# Both build and load the images and install the chart first (hack/lib/deploy.sh).
# E2E_FLAGS are passed to go test (default: -v -timeout 45m); KIND_KEEP=1 keeps the kind cluster.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export GOWORK=off
: "${HELM:=${XDG_CACHE_HOME:-$HOME/.cache}/moe-operator/bin/helm-v3.22.0}"
: "${E2E_FLAGS:=-v -timeout 45m}"
# shellcheck source=lib/deploy.sh
source hack/lib/deploy.sh

if [[ ${1:-} == --kind ]]; then
  for tool in docker kind; do
    command -v "$tool" >/dev/null || { echo "test-e2e-kind needs $tool" >&2; exit 1; }
  done
  KIND_CLUSTER=${KIND_CLUSTER:-moe-e2e}
  if ! kind get clusters | grep -qx "$KIND_CLUSTER"; then
    kind create cluster --name "$KIND_CLUSTER" --wait 5m
  fi
  if [[ ${KIND_KEEP:-} != 1 ]]; then
    trap 'kind delete cluster --name "$KIND_CLUSTER"' EXIT
  fi
  KUBECONFIG=$(mktemp)
  export KUBECONFIG KIND_CLUSTER
  kind get kubeconfig --name "$KIND_CLUSTER" > "$KUBECONFIG"
  KUBECTL=$(deploy::kubectl_bin)
  # Emulated GPUs: extended resources that no device plugin manages are advertised by
  # patching the node's status (kubelet leaves them alone), and labelled like GPU feature
  # discovery labels an L4 node.
  for node in $("$KUBECTL" get nodes -o name); do
    "$KUBECTL" patch "$node" --subresource=status --type=json \
      -p '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"4"}]'
    "$KUBECTL" label --overwrite "$node" nvidia.com/gpu.present=true nvidia.com/gpu.product=NVIDIA-L4 nvidia.com/gpu.count=4
  done
fi

start=$(date +%s)
deploy::cluster
deploy::images
deploy::operator
echo "[test-e2e] cluster ready and operator deployed in $(( $(date +%s) - start ))s" >&2
# shellcheck disable=SC2086
ENGINE_IMG=$ENGINE_IMG go test -tags e2e -count=1 $E2E_FLAGS ./test/e2e/
