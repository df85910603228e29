#!/usr/bin/env bash
# Prints a folder holding every binary the local cluster runs: kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy, kubelet, kubectl and etcd.
#
# They are built from the Go module proxy (hack/lib/build-k8s.sh), one at a time and
# under `nice`, then cached outside the clone, keyed by version:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/moe-operator/k8s/<version>-<os>-<arch>/
# kube-apiserver and etcd are the same binaries envtest uses, so they are taken from
# hack/setup-envtest.sh's cache rather than built twice.
#
# Cost on 2 cores: about 20 minutes with a warm module cache, 33 cold; instant once cached.
# Overrides: LOCAL_CLUSTER_K8S_VERSION (default 1.37.2), LOCAL_CLUSTER_BIN_CACHE (the parent folder).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/build-k8s.sh
source "${here}/../lib/build-k8s.sh"

version=${LOCAL_CLUSTER_K8S_VERSION:-${ENVTEST_K8S_VERSION:-1.37.2}}
version=${version#v}
cache_root=${LOCAL_CLUSTER_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-operator/k8s}
dir="${cache_root}/${version}-$(go env GOOS)-$(go env GOARCH)"
mkdir -p "$dir"

exec 8>"${dir}/.lock"
flock 8

# kube-apiserver and etcd: from the envtest cache (building them there when missing).
envtest_dir=$(ENVTEST_K8S_VERSION="$version" "${here}/../setup-envtest.sh")
for bin in kube-apiserver etcd; do
  if [[ ! -x "${dir}/${bin}" ]] || ! cmp -s "${envtest_dir}/${bin}" "${dir}/${bin}"; then
    # A hard link costs no space; fall back to a copy across file systems.
    ln -f "${envtest_dir}/${bin}" "${dir}/${bin}" 2>/dev/null || cp -f "${envtest_dir}/${bin}" "${dir}/${bin}"
  fi
done

# The rest, smallest first so that kubectl is usable early.
# kubectl has no --version flag; `kubectl version --client` prints "Client Version: vX.Y.Z".
have() {
  local out
  if [[ $1 == kubectl ]]; then
    [[ -x "${dir}/kubectl" ]] && out=$("${dir}/kubectl" version --client 2>/dev/null) && [[ $out == *"v${version}"* ]]
  else
    k8s::have_version "${dir}/$1" "v${version}"
  fi
}
for bin in kubectl kube-scheduler kube-proxy kube-controller-manager kubelet; do
  if ! have "$bin"; then
    k8s::build_component "$bin" "v${version}" "$dir"
  fi
done

printf '%s\n' "$dir"
