#!/usr/bin/env bash
# Installs what the Vulkan backend's tests and shader build need, from
# Debian's main archive: the loader (libvulkan1) and the X libraries that
# hack/image layers beside it (libx11-6 libxext6 libglvnd0), Mesa's CPU driver
# lavapipe (mesa-vulkan-drivers), the Khronos validation layers, glslc and
# spirv-tools (spirv-val), and vulkaninfo. Does nothing when they are all
# there. Needs root (or sudo) only when something is missing.
set -euo pipefail
pkgs=(libvulkan1 libx11-6 libxext6 libglvnd0 mesa-vulkan-drivers vulkan-validationlayers glslc spirv-tools vulkan-tools)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
	exit 0
fi
if ! command -v apt-get >/dev/null; then
	echo "setup-vulkan: not a Debian system; install ${missing[*]} (a Vulkan loader, lavapipe, glslc) by hand" >&2
	exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null || { echo "setup-vulkan: need root to install ${missing[*]}" >&2; exit 1; }
	sudo=(sudo)
fi
echo "setup-vulkan: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
