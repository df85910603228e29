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
}

// nonRootUID is the unprivileged user every image runs as: the distroless "nonroot" user,
// which the engine pods' securityContext names too.
const nonRootUID = 65532

// goBuildFlags are the `go build` flags of every image binary: static, reproducible paths,
// no symbol tables. The images have no C library, so the engine's Vulkan backend (which
// opens libvulkan.so.1 through the C library's dlopen) is left out with -tags novulkan:
// these engines compute on the CPU, and say so when asked for a GPU.
var goBuildFlags = []string{"-trimpath", "-tags=novulkan", "-ldflags=-s -w"}

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
