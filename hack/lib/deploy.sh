#!/usr/bin/env bash
# Shared steps of `make demo`, `make test-e2e` and `make test-e2e-kind`: pick (or bring up)
# a cluster, build and load the images, install the chart. Source this file, then call:
#   deploy::cluster          # sets KUBECONFIG, KUBECTL and CLUSTER_KIND (local, kind, other)
#   deploy::images [NAME...] # builds the operator and engine images (and NAME...) and loads them
#   deploy::operator         # installs or upgrades the chart and waits for the manager
#   deploy::model_volume NS  # the moe-models claim in NS, filled with the demo model
#
# Settings (environment): IMG, ENGINE_IMG, ENGINE_LAVAPIPE_IMG (image references), HELM (helm binary),
# OPERATOR_NAMESPACE (default moe-system), KUBECONFIG (use that cluster instead of the local
# one), KIND_CLUSTER (kind cluster name, for CLUSTER_KIND=kind).

: "${IMG:=ghcr.io/moe-operator/moe-operator:dev}"
: "${ENGINE_IMG:=ghcr.io/moe-operator/moe-engine:dev}"
: "${ENGINE_LAVAPIPE_IMG:=localhost/moe-operator/moe-engine:lavapipe}"
: "${OPERATOR_NAMESPACE:=moe-system}"
DEPLOY_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/moe-operator
LOCAL_KUBECONFIG=/var/lib/moe-local-cluster/kubeconfig
LOCAL_CONTAINERD=/run/moe-local-cluster/containerd/containerd.sock

deploy::log() { printf '[deploy] %s\n' "$*" >&2; }

# deploy::kubectl_bin: kubectl from the local cluster's cache, PATH, or built (only kubectl).
deploy::kubectl_bin() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  if [[ -x /var/lib/moe-local-cluster/bin/kubectl ]]; then
    echo /var/lib/moe-local-cluster/bin/kubectl
  elif command -v kubectl >/dev/null; then
    command -v kubectl
  else
    local dir="${DEPLOY_CACHE}/k8s/${ENVTEST_K8S_VERSION:-1.37.2}-$(go env GOOS)-$(go env GOARCH)"
    if [[ ! -x "$dir/kubectl" ]]; then
      # shellcheck source=build-k8s.sh
      source "${here}/build-k8s.sh"
      k8s::build_component kubectl "v${ENVTEST_K8S_VERSION:-1.37.2}" "$dir" >&2
    fi
    echo "$dir/kubectl"
  fi
}

# deploy::cluster: the cluster $KUBECONFIG names when it answers, else the local cluster
# (brought up when it is not; that needs root).
deploy::cluster() {
  if [[ -n ${KUBECONFIG:-} && $KUBECONFIG != "$LOCAL_KUBECONFIG" ]]; then
    KUBECTL=$(deploy::kubectl_bin)
    if ! "$KUBECTL" version >/dev/null 2>&1; then
      deploy::log "KUBECONFIG=$KUBECONFIG does not reach a cluster"
      return 1
    fi
    local ctx
    ctx=$("$KUBECTL" config current-context)
    if [[ $ctx == kind-* ]]; then
      CLUSTER_KIND=kind
      KIND_CLUSTER=${KIND_CLUSTER:-${ctx#kind-}}
    else
      CLUSTER_KIND=other
    fi
    deploy::log "using the cluster in $KUBECONFIG (context $ctx)"
  else
    if [[ $EUID -ne 0 ]]; then
      deploy::log "the local cluster needs root: run as root, or set KUBECONFIG to another cluster"
      return 1
    fi
    hack/local-cluster/up >&2
    export KUBECONFIG=$LOCAL_KUBECONFIG
    KUBECTL=/var/lib/moe-local-cluster/bin/kubectl
    CLUSTER_KIND=local
  fi
  export KUBECONFIG KUBECTL CLUSTER_KIND
}

# deploy::images [NAME...]: build the operator and engine images (and the hack/image images
# NAME..., such as engine-lavapipe) without Docker and load them where the cluster's nodes
# find them. OPERATOR_DIGEST is the operator's digest (it rolls the manager on change).
deploy::images() {
  local out names=(operator engine "$@")
  out=$(go run ./hack/image build --ref "operator=$IMG" --ref "engine=$ENGINE_IMG" \
    --ref "engine-lavapipe=$ENGINE_LAVAPIPE_IMG" "${names[@]}")
  OPERATOR_DIGEST=$(awk -v r="$IMG" '$1 == r {print $2}' <<<"$out")
  case $CLUSTER_KIND in
    local) go run ./hack/image load --containerd-address "$LOCAL_CONTAINERD" "${names[@]}" ;;
    kind) go run ./hack/image load --kind "$KIND_CLUSTER" "${names[@]}" ;;
    *) deploy::log "not loading images into this cluster: push $IMG and $ENGINE_IMG to a registry its nodes pull from (dist/images/*.tar are docker archives)" ;;
  esac
  export OPERATOR_DIGEST
}

# deploy::operator: the chart, with the CRDs applied first (Helm installs crds/ only once and
# never upgrades them), in a namespace that enforces Pod Security "restricted".
deploy::operator() {
  "$KUBECTL" create namespace "$OPERATOR_NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
  "$KUBECTL" label --overwrite namespace "$OPERATOR_NAMESPACE" pod-security.kubernetes.io/enforce=restricted >/dev/null
  "$KUBECTL" apply --server-side --force-conflicts -f charts/moe-operator/crds/ >/dev/null
  "$HELM" upgrade --install moe-operator charts/moe-operator --namespace "$OPERATOR_NAMESPACE" \
    --set image.repository="${IMG%:*}" --set image.tag="${IMG##*:}" --set engineImage="$ENGINE_IMG" \
    --set-string "podAnnotations.moe-operator\.io/image-digest=${OPERATOR_DIGEST:-none}" \
    --wait --timeout 5m >&2
  "$KUBECTL" -n "$OPERATOR_NAMESPACE" rollout status deployment/moe-operator --timeout=3m >&2
}

# deploy::model_volume NS: the moe-models claim in NS holding mixtral-small.gguf. A cluster
# without a default StorageClass (the local one) gets a hostPath PersistentVolume for it.
deploy::model_volume() {
  local ns=$1 pv="moe-models-$1"
  "$KUBECTL" create namespace "$ns" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
  "$KUBECTL" label --overwrite namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
  local default_sc
  default_sc=$("$KUBECTL" get storageclass -o jsonpath='{range .items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")]}{.metadata.name}{end}')
  if [[ -z $default_sc ]]; then
    if [[ $CLUSTER_KIND != local ]]; then
      deploy::log "the cluster has no default StorageClass for the moe-models claim"
      return 1
    fi
    if [[ $("$KUBECTL" get pv "$pv" -o jsonpath='{.status.phase}' 2>/dev/null) == Released ]]; then
      "$KUBECTL" delete pv "$pv" >/dev/null
    fi
    local dir=/var/lib/moe-local-cluster/volumes/$pv
    mkdir -p "$dir"
    chown 65532:65532 "$dir"
    "$KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $pv
  labels:
    app.kubernetes.io/part-of: moe-operator-demo
spec:
  capacity:
    storage: 1Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef:
    namespace: $ns
    name: moe-models
  hostPath:
    path: $dir
    type: Directory
YAML
    "$KUBECTL" -n "$ns" apply -f - >/dev/null <<YAML
$(sed 's/^spec:$/spec:\n  storageClassName: ""\n  volumeName: '"$pv"'/' config/samples/model-volume/pvc.yaml)
YAML
  else
    "$KUBECTL" -n "$ns" apply -f config/samples/model-volume/pvc.yaml >/dev/null
  fi
  "$KUBECTL" -n "$ns" apply -f config/samples/model-volume/fill-job.yaml >/dev/null
  "$KUBECTL" -n "$ns" wait --for=condition=complete job/moe-models-fill --timeout=5m >&2
}
