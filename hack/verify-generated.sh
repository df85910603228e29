#!/usr/bin/env bash
# Fails when a generated file is stale: the API's deepcopy code, the CRDs, the manager's RBAC
# role, the Helm chart's copies of them, docs/crd-reference.md, or the Vulkan backend's SPIR-V. Everything is regenerated
# into a temporary folder and compared with the working tree, so it works on a clean clone
# and in a tree with unrelated uncommitted changes alike.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
controller_gen=${CONTROLLER_GEN:?set CONTROLLER_GEN to the pinned controller-gen}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
compare() { # compare WANT GOT NAME
  if ! diff -ru "$1" "$2" > "$tmp/diff.txt"; then
    echo "stale: $3 (run the target named below and commit the result)" >&2
    head -n 40 "$tmp/diff.txt" >&2
    status=1
  fi
}

"$controller_gen" object paths="./api/..." output:object:dir="$tmp/object"
compare "$tmp/object/zz_generated.deepcopy.go" api/v1alpha1/zz_generated.deepcopy.go "deepcopy (make generate)"

"$controller_gen" crd:allowDangerousTypes=true rbac:roleName=manager-role paths="./api/...;./controllers/..." \
  output:crd:artifacts:config="$tmp/config/crd/bases" output:rbac:artifacts:config="$tmp/config/rbac"
compare "$tmp/config/crd/bases" config/crd/bases "CRDs (make manifests)"
compare "$tmp/config/rbac/role.yaml" config/rbac/role.yaml "RBAC role (make manifests)"

hack/sync-chart.sh "$tmp/config" "$tmp/chart"
compare "$tmp/chart/crds" charts/moe-operator/crds "chart CRDs (make manifests)"
compare "$tmp/chart/files/manager-rules.yaml" charts/moe-operator/files/manager-rules.yaml "chart RBAC rules (make manifests)"

if [[ -d hack/crd-reference ]]; then
  go run ./hack/crd-reference > "$tmp/crd-reference.md"
  compare "$tmp/crd-reference.md" docs/crd-reference.md "docs/crd-reference.md (make crd-reference)"
fi

hack/gen-shaders.sh "$tmp/spv"
compare "$tmp/spv" engine/gpu/spv "SPIR-V shaders (make generate)"

if [[ $status -eq 0 ]]; then echo "generated files are up to date"; fi
exit "$status"
