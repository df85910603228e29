#!/usr/bin/env bash
# make test-e2e: the end-to-end tests (test/e2e, build tag e2e) on a real cluster.
#   hack/test-e2e.sh         the cluster $KUBECONFIG names, else the local cluster (brought up
#                            as root when it is down); CI (.ci/run) runs this.
#   hack/test-e2e.sh --kind  a kind cluster made for the run (needs Docker and kind, so it
#                            cannot run on the CI machines): the images are loaded with
#                            `kind load`, and GPUs are emulated by patching the node's capacity.
#   hack/test-e2e.sh --kind --vllm
#                            the vLLM runtime on real NVIDIA GPUs (test/e2e/vllm_test.go, build
#                            tags e2e vllm): the kind cluster KIND_CLUSTER must already see
#                            the GPUs (create it with NVIDIA's nvkind, or pass a KIND_CONFIG
#                            that mounts them), and HF_TOKEN must read the model. LWS_VERSION
#                            (say v0.7.0) installs LeaderWorkerSet first. Not run on this
#                            project's machines: they have no GPU, no Docker, and cannot pull
#                            the vLLM image.
# Both build and load the images and install the chart first (hack/lib/deploy.sh).
# E2E_FLAGS are passed to go test (default: -v -timeout 45m); KIND_KEEP=1 keeps the kind cluster.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export GOWORK=off
: "${HELM:=${XDG_CACHE_HOME:-$HOME/.cache}/moe-operator/bin/helm-v3.22.0}"
: "${E2E_FLAGS:=-v -timeout 45m}"
# shellcheck source=lib/deploy.sh
source hack/lib/deploy.sh

kind_cluster=false vllm=false
for arg in "$@"; do
  case $arg in
    --kind) kind_cluster=true ;;
    --vllm) vllm=true ;;
    *) echo "usage: hack/test-e2e.sh [--kind [--vllm]]" >&2; exit 2 ;;
  esac
done
if $vllm && ! $kind_cluster; then
  echo "--vllm runs on a kind cluster with GPUs: use --kind --vllm" >&2
  exit 2
fi

if $kind_cluster; then
  for tool in docker kind; do
    command -v "$tool" >/dev/null || { echo "test-e2e-kind needs $tool" >&2; exit 1; }
  done
  KIND_CLUSTER=${KIND_CLUSTER:-moe-e2e}
  if ! kind get clusters | grep -qx "$KIND_CLUSTER"; then
    kind create cluster --name "$KIND_CLUSTER" ${KIND_CONFIG:+--config "$KIND_CONFIG"} --wait 5m
  fi
  if [[ ${KIND_KEEP:-} != 1 ]]; then
    trap 'kind delete cluster --name "$KIND_CLUSTER"' EXIT
  fi
  KUBECONFIG=$(mktemp)
  export KUBECONFIG KIND_CLUSTER
  kind get kubeconfig --name "$KIND_CLUSTER" > "$KUBECONFIG"
  KUBECTL=$(deploy::kubectl_bin)
  if $vllm; then
    # Real GPUs only: vLLM cannot run on emulated ones.
    gpus=$("$KUBECTL" get nodes -o jsonpath='{range .items[*]}{.status.allocatable.nvidia\.com/gpu}{"\n"}{end}' | awk '{s+=$1} END {print s+0}')
    if (( gpus == 0 )); then
      echo "--vllm: no node of kind cluster $KIND_CLUSTER offers nvidia.com/gpu (create it with nvkind, with the NVIDIA device plugin running)" >&2
      exit 1
    fi
    if [[ -n ${LWS_VERSION:-} ]]; then
      "$KUBECTL" apply --server-side -f "https://github.com/kubernetes-sigs/lws/releases/download/$LWS_VERSION/manifests.yaml"
    fi
  else
    # Emulated GPUs: extended resources that no device plugin manages are advertised by
    # patching the node's status (kubelet leaves them alone), and labelled like GPU feature
    # discovery labels an L4 node.
    for node in $("$KUBECTL" get nodes -o name); do
      "$KUBECTL" patch "$node" --subresource=status --type=json \
        -p '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"4"}]'
      "$KUBECTL" label --overwrite "$node" nvidia.com/gpu.present=true nvidia.com/gpu.product=NVIDIA-L4 nvidia.com/gpu.count=4
    done
  fi
fi

start=$(date +%s)
deploy::cluster
if $vllm; then
  deploy::images
else
  # The GPU test's engine: the Vulkan backend on Mesa's lavapipe, in the emulated GPU's pod.
  deploy::images engine-lavapipe
fi
deploy::operator
echo "[test-e2e] cluster ready and operator deployed in $(( $(date +%s) - start ))s" >&2
if $vllm; then
  # shellcheck disable=SC2086
  ENGINE_IMG=$ENGINE_IMG go test -tags 'e2e vllm' -run '^TestVLLM$' -count=1 $E2E_FLAGS ./test/e2e/
  exit
fi
# shellcheck disable=SC2086
ENGINE_IMG=$ENGINE_IMG ENGINE_LAVAPIPE_IMG=$ENGINE_LAVAPIPE_IMG go test -tags e2e -count=1 $E2E_FLAGS ./test/e2e/
