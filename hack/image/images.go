package main

import (
	"fmt"
	"strings"
)

// Image is one container image the project ships. It is the single definition both
// builders read: `go run ./hack/image build` assembles the image with go-containerregistry,
// and `go run ./hack/image dockerfiles` renders the Dockerfile that builds the same image
// with Docker. Neither builder knows anything an Image does not say.
type Image struct {
	// Name is the short name used on the command line: operator, engine, pause.
	Name string
	// Ref is the default image reference (overridable with --ref NAME=REF).
	Ref string
	// Description is one line for the image's labels and the Dockerfile header.
	Description string
	// Package is the Go main package compiled into the image.
	Package string
	// Binary is the binary's absolute path inside the image.
	Binary string
	// Args follow the binary in the image's entrypoint.
	Args []string
	// Ports are the TCP ports the image documents (EXPOSE).
	Ports []int
	// Minimal images hold only the binary: no users, certificates or /tmp.
	Minimal bool
	// Dockerfile is the file rendered for Docker users; empty for images only the local
	// cluster needs.
	Dockerfile string
	// Vulkan builds the binary with the engine's Vulkan backend, which purego links to the
	// C library's dlopen: the image must then carry the C library (Packages).
	Vulkan bool
	// Packages are Debian packages layered in with their dependencies (see debian.go);
	// ExcludePackages are dependencies left out (a script's interpreter the image never
	// runs).
	Packages, ExcludePackages []string
	// Env is the image's environment, NAME=VALUE.
	Env []string
}

// nonRootUID is the unprivileged user every image runs as: the distroless "nonroot" user,
// which the engine pods' securityContext names too.
const nonRootUID = 65532

// goBuildFlags are the `go build` flags of an image binary: reproducible paths, no symbol
// tables. An image without the C library leaves the engine's Vulkan backend (which opens
// libvulkan.so.1 through the C library's dlopen) out with -tags novulkan, so its binary is
// static: those engines compute on the CPU, and say so when asked for a GPU.
func (im Image) goBuildFlags() []string {
	if im.Vulkan {
		return []string{"-trimpath", "-ldflags=-s -w"}
	}
	return []string{"-trimpath", "-tags=novulkan", "-ldflags=-s -w"}
}

// vulkanPackages are the Vulkan engine images' Debian packages: the C library, the Vulkan
// loader, and the X11 and GLVND libraries NVIDIA's Vulkan driver (libGLX_nvidia, which the
// NVIDIA container toolkit mounts with the graphics capability) links to.
var vulkanPackages = []string{"libc6", "libvulkan1", "libx11-6", "libxext6", "libglvnd0"}

// nvidiaCapabilities makes the NVIDIA container toolkit mount the Vulkan ICD and driver
// (graphics) besides CUDA's (compute) and nvidia-smi (utility).
const nvidiaCapabilities = "NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics"

// images is the project's image set.
var images = []Image{
	{
		Name:        "operator",
		Ref:         "ghcr.io/moe-operator/moe-operator:dev",
		Description: "moe-operator controller manager: reconciles MixtralDeployments",
		Package:     "./cmd/manager",
		Binary:      "/manager",
		Ports:       []int{8443, 8081},
		Dockerfile:  "Dockerfile.manager",
	},
	{
		Name:        "engine",
		Ref:         "ghcr.io/moe-operator/moe-engine:dev",
		Description: "moe engine: the pure-Go Mixtral inference server (moe serve) and its tools",
		Package:     "./cmd/moe",
		Binary:      "/moe",
		Ports:       []int{8000},
		Dockerfile:  "Dockerfile.engine",
	},
	{
		Name:        "engine-vulkan",
		Ref:         "ghcr.io/moe-operator/moe-engine:dev-vulkan",
		Description: "moe engine for GPU nodes: moe serve with its Vulkan backend, the C library and the Vulkan loader",
		Package:     "./cmd/moe",
		Binary:      "/moe",
		Ports:       []int{8000},
		Dockerfile:  "Dockerfile.engine-vulkan",
		Vulkan:      true,
		Packages:    vulkanPackages,
		Env:         []string{nvidiaCapabilities},
	},
	{
		// The Vulkan engine with Mesa's lavapipe, a Vulkan driver that runs on the CPU: the
		// local cluster's emulated GPU nodes run the GPU code path with it. Not for
		// production (lavapipe is a correctness vehicle, not fast).
		Name:            "engine-lavapipe",
		Ref:             "localhost/moe-operator/moe-engine:lavapipe",
		Description:     "moe engine with its Vulkan backend on Mesa's lavapipe (CPU) driver, for tests",
		Package:         "./cmd/moe",
		Binary:          "/moe",
		Ports:           []int{8000},
		Vulkan:          true,
		Packages:        append(append([]string(nil), vulkanPackages...), "mesa-vulkan-drivers"),
		ExcludePackages: []string{"python3", "python3-minimal"},
		Env:             []string{nvidiaCapabilities, "MESA_SHADER_CACHE_DISABLE=true"},
	},
	{
		// The local cluster's sandbox image; containerd never pulls it.
		Name:        "pause",
		Ref:         "localhost/moe-operator/pause:1",
		Description: "pod sandbox for the local cluster: sleeps until signalled, reaps orphans",
		Package:     "./hack/image/pause",
		Binary:      "/pause",
		Minimal:     true,
	},
}

// rootFile is a file every non-minimal image carries besides its binary.
type rootFile struct {
	path string // absolute path in the image
	mode int64
	// Exactly one of content and hostPath: literal content, or a file copied from the
	// build machine (the golang image for Docker, the host for the Go builder; both are
	// Debian, with the ca-certificates package).
	content  string
	hostPath string
}

// rootDir is a directory every non-minimal image carries.
type rootDir struct {
	path string
	mode int64
}

// baseDirs and baseFiles make a scratch image usable by an unprivileged Go binary: a
// passwd entry for the user (so tools that look up $HOME or the user name work), CA
// certificates for HTTPS model downloads, and a world-writable /tmp.
var (
	baseDirs = []rootDir{
		{"/etc", 0o755},
		{"/etc/ssl", 0o755},
		{"/etc/ssl/certs", 0o755},
		{"/tmp", 0o1777},
	}
	baseFiles = []rootFile{
		{path: "/etc/passwd", mode: 0o644, content: fmt.Sprintf(
			"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonRootUID, nonRootUID)},
		{path: "/etc/group", mode: 0o644, content: fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonRootUID)},
		{path: "/etc/ssl/certs/ca-certificates.crt", mode: 0o644, hostPath: "/etc/ssl/certs/ca-certificates.crt"},
	}
)

// entrypoint is the image's ENTRYPOINT.
func (im Image) entrypoint() []string {
	return append([]string{im.Binary}, im.Args...)
}

// user is the image's USER.
func (im Image) user() string {
	return fmt.Sprintf("%d:%d", nonRootUID, nonRootUID)
}

// labels are the OCI annotations the image config carries.
func (im Image) labels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       strings.TrimPrefix(im.Binary, "/"),
		"org.opencontainers.image.description": im.Description,
		"org.opencontainers.image.source":      "https://github.com/moe-operator/moe-operator",
	}
}

// lookup finds an image by name.
func lookup(name string) (Image, error) {
	for _, im := range images {
		if im.Name == name {
			return im, nil
		}
	}
	var names []string
	for _, im := range images {
		names = append(names, im.Name)
	}
	return Image{}, fmt.Errorf("unknown image %q (have %s)", name, strings.Join(names, ", "))
}
