package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// epoch is the modification time of every file in the images and their creation time, so
// that an unchanged binary gives an unchanged image digest.
var epoch = time.Unix(0, 0).UTC()

// buildOptions say where and for which platform images are built.
type buildOptions struct {
	repoRoot string // the module root `go build` runs in
	outDir   string // where <name>.tar goes
	goarch   string
	// rootFiles overrides the host file a rootFile copies (tests).
	hostRoot string
}

// compile builds im's binary as a static Linux executable and returns its path.
func compile(ctx context.Context, im Image, o buildOptions, dir string) (string, error) {
	out := filepath.Join(dir, filepath.Base(im.Binary))
	args := append([]string{"-n", "10", "go", "build"}, im.goBuildFlags()...)
	args = append(args, "-o", out, im.Package)
	cmd := exec.CommandContext(ctx, "nice", args...)
	cmd.Dir = o.repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.goarch, "GOWORK=off")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("compiling %s: %w", im.Package, err)
	}
	if !im.Vulkan {
		if err := checkStatic(out); err != nil {
			return "", fmt.Errorf("%s: %w", im.Package, err)
		}
	}
	return out, nil
}

// checkStatic fails when the executable at path needs a dynamic loader or shared libraries,
// which the images do not have: such a binary would fail in the pod with "no such file or
// directory". A package that imports dlopen (purego) makes this happen even with
// CGO_ENABLED=0.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			libs, _ := f.ImportedLibraries()
			return fmt.Errorf("the binary is dynamically linked (needs %s) but the image has no C library: build it with -tags=novulkan", strings.Join(libs, ", "))
		}
	}
	return nil
}

// entry is one file of a layer.
type entry struct {
	hdr  tar.Header
	body []byte
}

// rootfsLayer writes the image's single layer: the directories and files of baseDirs and
// baseFiles (unless the image is minimal) and the binary, all owned by root, with the modes
// the Dockerfile's install/chmod commands give.
func rootfsLayer(im Image, binary []byte, hostRoot string) ([]byte, error) {
	var entries []entry
	if len(im.Packages) > 0 {
		pkgs, err := packageClosure(im.Packages, im.ExcludePackages)
		if err != nil {
			return nil, err
		}
		if entries, err = packageEntries(pkgs, hostRoot); err != nil {
			return nil, err
		}
	}
	if !im.Minimal {
		for _, d := range baseDirs {
			entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d.path, "/") + "/", Mode: d.mode}})
		}
		for _, f := range baseFiles {
			body := []byte(f.content)
			if f.hostPath != "" {
				b, err := os.ReadFile(filepath.Join(hostRoot, f.hostPath))
				if err != nil {
					return nil, fmt.Errorf("reading %s for the image (install Debian's ca-certificates): %w", f.hostPath, err)
				}
				body = b
			}
			entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.path, "/"), Mode: f.mode}, body: body})
		}
	}
	entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(im.Binary, "/"), Mode: 0o755}, body: binary})
	// The project's files win over a package's (its /etc directory, say): the last of a
	// name stays.
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].hdr.Name < entries[j].hdr.Name })
	for i := 0; i+1 < len(entries); {
		if entries[i].hdr.Name == entries[i+1].hdr.Name {
			entries = append(entries[:i], entries[i+1:]...)
			continue
		}
		i++
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.body))
		h.ModTime = epoch
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// assemble makes the image from the layer: an empty base, the layer, and the config the
// Dockerfile's USER, EXPOSE, LABEL and ENTRYPOINT lines set.
func assemble(im Image, layerTar []byte, goarch string) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("making the layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{CreatedBy: "go run ./hack/image build " + im.Name, Created: v1.Time{Time: epoch}},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = goarch
	cf.Created = v1.Time{Time: epoch}
	cf.Config.User = im.user()
	cf.Config.Entrypoint = im.entrypoint()
	cf.Config.Cmd = nil
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = im.labels()
	cf.Config.Env = append([]string(nil), im.Env...)
	if len(im.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range im.Ports {
			cf.Config.ExposedPorts[strconv.Itoa(p)+"/tcp"] = struct{}{}
		}
	}
	return mutate.ConfigFile(img, cf)
}

// build compiles and assembles im and writes it as a docker-archive tarball (which both
// `ctr images import` and `kind load image-archive` read) to outDir/<name>.tar.
func build(ctx context.Context, im Image, ref string, o buildOptions) (string, v1.Hash, error) {
	tmp, err := os.MkdirTemp("", "moe-image-"+im.Name+"-")
	if err != nil {
		return "", v1.Hash{}, err
	}
	defer os.RemoveAll(tmp)
	binPath, err := compile(ctx, im, o, tmp)
	if err != nil {
		return "", v1.Hash{}, err
	}
	binary, err := os.ReadFile(binPath)
	if err != nil {
		return "", v1.Hash{}, err
	}
	layerTar, err := rootfsLayer(im, binary, o.hostRoot)
	if err != nil {
		return "", v1.Hash{}, err
	}
	img, err := assemble(im, layerTar, o.goarch)
	if err != nil {
		return "", v1.Hash{}, fmt.Errorf("assembling %s: %w", im.Name, err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return "", v1.Hash{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return "", v1.Hash{}, err
	}
	out := filepath.Join(o.outDir, im.Name+".tar")
	if err := tarball.WriteToFile(out+".tmp", tag, img); err != nil {
		return "", v1.Hash{}, fmt.Errorf("writing %s: %w", out, err)
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return "", v1.Hash{}, err
	}
	digest, err := img.Digest()
	return out, digest, err
}

// defaultGOARCH is the architecture images are built for unless --arch says otherwise.
func defaultGOARCH() string {
	if a := os.Getenv("GOARCH"); a != "" {
		return a
	}
	return runtime.GOARCH
}
