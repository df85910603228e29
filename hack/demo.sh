#!/usr/bin/env bash
# make demo: from a fresh machine to a chat answer from an engine pod that a
# MixtralDeployment created.
#   1. the cluster: $KUBECONFIG's when set, otherwise the local single-node cluster
#      (hack/local-cluster/up, as root; the first run builds Kubernetes from the module proxy);
#   2. the operator and engine images, built without Docker and loaded into the nodes;
#   3. the Helm chart (charts/moe-operator) in namespace moe-system;
#   4. the moe-models PersistentVolumeClaim in namespace moe-demo, filled by a Job with a
#      small generated Mixtral-architecture model;
#   5. the sample MixtralDeployment (config/samples/serving_v1alpha1_mixtraldeployment_demo_cpu.yaml),
#      waited on until Available, and its plan from status;
#   6. one OpenAI chat request through the Service, and the answer.
# Everything stays up; the last lines say how to reach it and how to tear it down.
#
# Usage: hack/demo.sh          (make demo)
#        hack/demo.sh clean    (make demo-clean: delete the demo namespace and its volume)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export GOWORK=off
: "${HELM:=${XDG_CACHE_HOME:-$HOME/.cache}/moe-operator/bin/helm-v3.22.0}"
: "${DEMO_NAMESPACE:=moe-demo}"
NAME=mixtral-demo
# shellcheck source=lib/deploy.sh
source hack/lib/deploy.sh

if [[ ${1:-} == clean ]]; then
  if [[ -z ${KUBECONFIG:-} && -f $LOCAL_KUBECONFIG ]]; then export KUBECONFIG=$LOCAL_KUBECONFIG; fi
  KUBECTL=$(deploy::kubectl_bin)
  "$KUBECTL" delete namespace "$DEMO_NAMESPACE" --ignore-not-found --wait=true
  "$KUBECTL" delete pv "moe-models-$DEMO_NAMESPACE" --ignore-not-found
  rm -rf "/var/lib/moe-local-cluster/volumes/moe-models-$DEMO_NAMESPACE"
  exit 0
fi

start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))" >&2; }

step "cluster"
deploy::cluster
"$KUBECTL" get nodes -o wide >&2

step "images (operator, engine) built with go-containerregistry and loaded"
deploy::images

step "operator (Helm chart) in namespace $OPERATOR_NAMESPACE"
deploy::operator

step "model volume: PersistentVolumeClaim moe-models in $DEMO_NAMESPACE, filled by a Job"
deploy::model_volume "$DEMO_NAMESPACE"

step "MixtralDeployment $NAME"
"$KUBECTL" -n "$DEMO_NAMESPACE" apply -f config/samples/serving_v1alpha1_mixtraldeployment_demo_cpu.yaml
if ! "$KUBECTL" -n "$DEMO_NAMESPACE" wait "mixtraldeployment/$NAME" --for=condition=Available --timeout=10m; then
  "$KUBECTL" -n "$DEMO_NAMESPACE" describe "mixtraldeployment/$NAME" >&2
  "$KUBECTL" -n "$DEMO_NAMESPACE" get pods -o wide >&2
  exit 1
fi
"$KUBECTL" -n "$DEMO_NAMESPACE" get mixtraldeployment,deployment,service,pods -o wide

cache=${XDG_CACHE_HOME:-$HOME/.cache}/moe-operator/demo
go build -o "$cache/demo" ./hack/demo
step "plan (from status.plan)"
"$cache/demo" plan -n "$DEMO_NAMESPACE" "$NAME"

step "chat through the Service"
"$cache/demo" chat -n "$DEMO_NAMESPACE" "$NAME"

step "done in $(( $(date +%s) - start ))s"
svc_ip=$("$KUBECTL" -n "$DEMO_NAMESPACE" get service "$NAME" -o jsonpath='{.spec.clusterIP}')
cat <<MSG

The endpoint stays up. To reach it:
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL -n $DEMO_NAMESPACE port-forward service/$NAME 8000:8000 &
  curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model":"$NAME","messages":[{"role":"user","content":"Hello!"}],"max_tokens":32}'
MSG
if [[ $CLUSTER_KIND == local ]]; then
  cat <<MSG
  # or, on this host, straight to the Service's cluster IP (kube-proxy routes it):
  curl -s http://$svc_ip:8000/v1/models
MSG
fi
cat <<MSG

To tear it down:
  make demo-clean        # the demo namespace and its model volume
  make undeploy          # the operator (helm uninstall; the CRD stays)
MSG
if [[ $CLUSTER_KIND == local ]]; then
  echo "  make cluster-down      # the whole local cluster; restores the host"
fi
