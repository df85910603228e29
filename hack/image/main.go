// Command image builds the project's container images without Docker and keeps the
// Dockerfiles for Docker users equivalent to them. Both come from one definition
// (images.go).
//
//	go run ./hack/image build [--out DIR] [--ref NAME=REF]... [NAME...]
//	    compile each image's binary and write DIR/NAME.tar (docker-archive);
//	    NAME is operator, engine, engine-vulkan, engine-lavapipe or pause (default:
//	    operator engine)
//	go run ./hack/image load --containerd-address SOCK [--out DIR] [NAME...]
//	    import DIR/NAME.tar into containerd's k8s.io namespace with ctr
//	go run ./hack/image load --kind CLUSTER [--out DIR] [NAME...]
//	    load DIR/NAME.tar into a kind cluster's nodes
//	go run ./hack/image dockerfiles [--check]
//	    render Dockerfile.manager, Dockerfile.engine and Dockerfile.engine-vulkan; --check
//	    fails when they are stale
//	go run ./hack/image refs [--ref NAME=REF]...
//	    print NAME=REF lines
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

const defaultOutDir = "dist/images"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// refFlags collects --ref NAME=REF overrides.
type refFlags map[string]string

func (r refFlags) String() string { return fmt.Sprint(map[string]string(r)) }

func (r refFlags) Set(s string) error {
	n, ref, ok := strings.Cut(s, "=")
	if !ok || ref == "" {
		return fmt.Errorf("want NAME=REF, have %q", s)
	}
	if _, err := lookup(n); err != nil {
		return err
	}
	r[n] = ref
	return nil
}

func (r refFlags) ref(im Image) string {
	if ref, ok := r[im.Name]; ok {
		return ref
	}
	return im.Ref
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: image build|load|dockerfiles|refs [flags] (see the package doc)")
	}
	fs := flag.NewFlagSet("image "+args[0], flag.ContinueOnError)
	out := fs.String("out", defaultOutDir, "folder of the image tarballs")
	refs := refFlags{}
	fs.Var(refs, "ref", "NAME=REF: the reference to tag image NAME with (repeatable)")
	arch := fs.String("arch", defaultGOARCH(), "GOARCH of the image binaries")
	address := fs.String("containerd-address", "", "load: containerd socket to import into")
	kind := fs.String("kind", "", "load: kind cluster to load into")
	check := fs.Bool("check", false, "dockerfiles: fail when a Dockerfile is stale instead of writing it")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	selected, err := selectImages(fs.Args())
	if err != nil {
		return err
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	switch args[0] {
	case "build":
		o := buildOptions{repoRoot: root, outDir: absUnder(root, *out), goarch: *arch, hostRoot: "/"}
		for _, im := range selected {
			path, digest, err := build(ctx, im, refs.ref(im), o)
			if err != nil {
				return err
			}
			fmt.Printf("%s\t%s\t%s\n", refs.ref(im), digest, path)
		}
		return nil
	case "load":
		return load(ctx, selected, absUnder(root, *out), *address, *kind)
	case "dockerfiles":
		return dockerfiles(root, *check)
	case "refs":
		for _, im := range images {
			fmt.Printf("%s=%s\n", im.Name, refs.ref(im))
		}
		return nil
	}
	return fmt.Errorf("unknown command %q: want build, load, dockerfiles or refs", args[0])
}

// selectImages maps names to images; no names means the operator and engine images.
func selectImages(names []string) ([]Image, error) {
	if len(names) == 0 {
		names = []string{"operator", "engine"}
	}
	var out []Image
	for _, n := range names {
		im, err := lookup(n)
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	return out, nil
}

// load imports the tarballs into containerd (ctr) or kind.
func load(ctx context.Context, selected []Image, outDir, address, kind string) error {
	if (address == "") == (kind == "") {
		return errors.New("load: give exactly one of --containerd-address and --kind")
	}
	for _, im := range selected {
		tarPath := filepath.Join(outDir, im.Name+".tar")
		if _, err := os.Stat(tarPath); err != nil {
			return fmt.Errorf("load %s: %w (run `go run ./hack/image build %s` first)", im.Name, err, im.Name)
		}
		var cmd *exec.Cmd
		if address != "" {
			// --no-unpack is not used: kubelet needs the image unpacked into the snapshotter
			// the CRI plugin uses (overlayfs, the default).
			cmd = exec.CommandContext(ctx, "ctr", "--address", address, "-n", "k8s.io", "images", "import", tarPath)
		} else {
			cmd = exec.CommandContext(ctx, "kind", "load", "image-archive", "--name", kind, tarPath)
		}
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = os.Stderr, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("load %s: %s: %w: %s", im.Name, strings.Join(cmd.Args, " "), err, stderr.String())
		}
	}
	return nil
}

// dockerfiles writes (or, with check, compares) the rendered Dockerfiles.
func dockerfiles(root string, check bool) error {
	var stale []string
	for _, im := range images {
		if im.Dockerfile == "" {
			continue
		}
		path := filepath.Join(root, im.Dockerfile)
		want := dockerfile(im)
		if check {
			have, err := os.ReadFile(path)
			if err != nil || string(have) != want {
				stale = append(stale, im.Dockerfile)
			}
			continue
		}
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			return err
		}
	}
	if len(stale) > 0 {
		return fmt.Errorf("stale: %s (run `go run ./hack/image dockerfiles` and commit the result)", strings.Join(stale, ", "))
	}
	return nil
}

// moduleRoot is the folder of the go.mod `go` resolves from the working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run inside the moe-operator module")
	}
	return filepath.Dir(gomod), nil
}

func absUnder(root, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(root, p)
}
