#!/usr/bin/env bash
# Prints a folder holding kube-apiserver and etcd for controller-runtime's envtest
# (use it as KUBEBUILDER_ASSETS). Both are built from the Go module proxy on first
# use (about 13 minutes and 2.5 GB on 2 cores) and cached outside the clone:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/moe-operator/envtest/<k8s version>-<os>-<arch>/
# A later run checks the cached binaries' versions and returns at once.
#
# Overrides: ENVTEST_K8S_VERSION (default 1.37.2), ENVTEST_ETCD_VERSION (default v3.7.3),
# ENVTEST_CACHE_DIR (the parent folder).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/build-k8s.sh
source "${here}/lib/build-k8s.sh"

k8s_version=${ENVTEST_K8S_VERSION:-1.37.2}
k8s_version=${k8s_version#v}
etcd_version=${ENVTEST_ETCD_VERSION:-v3.7.3}
cache_root=${ENVTEST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-operator/envtest}
dir="${cache_root}/${k8s_version}-$(go env GOOS)-$(go env GOARCH)"
mkdir -p "$dir"

# One build at a time, even when two callers race (make test and .ci/run, say).
exec 9>"${dir}/.lock"
flock 9

if ! k8s::have_version "${dir}/etcd" "etcd Version: ${etcd_version#v}"; then
  k8s::build_etcd "$etcd_version" "$dir"
fi
if ! k8s::have_version "${dir}/kube-apiserver" "v${k8s_version}"; then
  k8s::build_component kube-apiserver "v${k8s_version}" "$dir"
fi

printf '%s\n' "$dir"
