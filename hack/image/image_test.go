package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The checked-in Dockerfiles are exactly what the shared definition renders, so the Docker
// build and the Go build cannot drift apart unnoticed.
func TestDockerfilesAreCurrent(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := dockerfiles(root, true); err != nil {
		t.Fatal(err)
	}
}

// Every path the Go builder puts in an image is one the Dockerfile creates, with the same
// mode, and the config matches the Dockerfile's USER, EXPOSE and ENTRYPOINT lines.
func TestImageMatchesDockerfile(t *testing.T) {
	host := t.TempDir()
	if err := os.MkdirAll(filepath.Join(host, "etc/ssl/certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "etc/ssl/certs/ca-certificates.crt"), []byte("certs"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, im := range images {
		t.Run(im.Name, func(t *testing.T) {
			df := dockerfile(im)
			for _, e := range im.Env {
				k, v, _ := strings.Cut(e, "=")
				if im.Dockerfile != "" && !strings.Contains(df, fmt.Sprintf("ENV %s=%q\n", k, v)) {
					t.Errorf("the Dockerfile does not set %s", e)
				}
			}
			if len(im.Packages) > 0 {
				// The packages' files come from dpkg on one side and apt-get on the
				// other (TestVulkanImagesHoldWhatTheirBinariesLoad checks the layer);
				// the project's own files must match as for any image.
				if im.Dockerfile != "" && !strings.Contains(df, "apt-get install -y --no-install-recommends "+strings.Join(im.Packages, " ")+" ") {
					t.Errorf("the Dockerfile does not install %v", im.Packages)
				}
				im.Packages = nil
			}
			layer, err := rootfsLayer(im, []byte("binary"), host)
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(bytes.NewReader(layer))
			var names []string
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, h.Name)
				path := "/rootfs/" + strings.TrimSuffix(h.Name, "/")
				if h.Uid != 0 || h.Gid != 0 {
					t.Errorf("%s owned by %d:%d, want root (Docker's COPY gives root)", h.Name, h.Uid, h.Gid)
				}
				if !strings.Contains(df, path) {
					t.Errorf("the Dockerfile never creates %s", path)
				}
				if h.Name != strings.TrimPrefix(im.Binary, "/") {
					// install -d -m MODE or chmod MODE name the same mode.
					if !strings.Contains(df, "-m "+modeString(h.Mode)+" ") && !strings.Contains(df, "chmod "+modeString(h.Mode)+" "+path) {
						t.Errorf("%s has mode %s, which the Dockerfile never sets", h.Name, modeString(h.Mode))
					}
				}
			}
			if im.Minimal && len(names) != 1 {
				t.Errorf("minimal image holds %v", names)
			}
			if !im.Minimal && len(names) != len(baseDirs)+len(baseFiles)+1 {
				t.Errorf("image holds %v", names)
			}

			img, err := assemble(im, layer, "amd64")
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Config.User != "65532:65532" || !strings.Contains(df, "USER 65532:65532\n") {
				t.Errorf("user %q", cf.Config.User)
			}
			if got := strings.Join(cf.Config.Entrypoint, " "); got != im.Binary || !strings.Contains(df, `ENTRYPOINT ["`+im.Binary+`"]`) {
				t.Errorf("entrypoint %q", got)
			}
			for _, p := range im.Ports {
				if !strings.Contains(df, fmt.Sprintf("EXPOSE %d\n", p)) {
					t.Errorf("port %d not exposed", p)
				}
			}
			if len(cf.Config.ExposedPorts) != len(im.Ports) {
				t.Errorf("exposed ports %v, want %v", cf.Config.ExposedPorts, im.Ports)
			}
			if !slices.Equal(cf.Config.Env, im.Env) {
				t.Errorf("environment %v, want %v", cf.Config.Env, im.Env)
			}
		})
	}
}

func modeString(m int64) string {
	const digits = "01234567"
	out := []byte{'0', '0', '0', '0'}
	for i := 3; i >= 0; i-- {
		out[i] = digits[m&7]
		m >>= 3
	}
	return string(out)
}

// TestBinariesAreStatic builds the engine image's binary as the image builder does and
// checks that it needs no dynamic loader (the images have none), and that the check refuses
// a binary that does.
func TestBinariesAreStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the engine (-short)")
	}
	o := buildOptions{repoRoot: "../..", goarch: runtime.GOARCH}
	im, _ := lookup("engine")
	if _, err := compile(context.Background(), im, o, t.TempDir()); err != nil {
		t.Fatalf("engine image binary: %v", err)
	}
	dyn := Image{Name: "dynamic", Package: "./hack/image/testdata/dynamic", Binary: "/dynamic"}
	_, err := compile(context.Background(), dyn, o, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Fatalf("a purego binary was accepted for an image: %v", err)
	}
}

// The Vulkan engine images hold everything their binary loads: the dynamic loader, every
// shared library the binary, the Vulkan loader and (in the lavapipe image) the ICD that
// the image's ICD manifest names need, found where the loader searches. The layers are
// built from this host's Debian packages, as `hack/image build` builds them.
func TestVulkanImagesHoldWhatTheirBinariesLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the engine (-short)")
	}
	vk, _ := lookup("engine-vulkan")
	bin, err := compile(context.Background(), vk, buildOptions{repoRoot: "../..", goarch: runtime.GOARCH}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"engine-vulkan", "engine-lavapipe"} {
		t.Run(name, func(t *testing.T) {
			im, _ := lookup(name)
			layer, err := rootfsLayer(im, binary, "/")
			if err != nil {
				t.Fatal(err)
			}
			fs := layerFiles(t, layer)
			roots := []string{"moe", "usr/lib/x86_64-linux-gnu/libvulkan.so.1"}
			if name == "engine-lavapipe" {
				icd, ok := fs("usr/share/vulkan/icd.d/lvp_icd.x86_64.json")
				if !ok {
					t.Fatal("no lavapipe ICD manifest")
				}
				var m struct {
					ICD struct {
						LibraryPath string `json:"library_path"`
					}
				}
				if err := json.Unmarshal(icd.body, &m); err != nil {
					t.Fatal(err)
				}
				roots = append(roots, strings.TrimPrefix(m.ICD.LibraryPath, "/"))
			}
			checkLoadable(t, fs, roots)
		})
	}
}

// layerFiles returns a lookup of a layer's files by path, following links in every
// component inside the layer.
func layerFiles(t *testing.T, layer []byte) func(string) (entry, bool) {
	t.Helper()
	raw := map[string]entry{}
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		raw[strings.TrimSuffix(h.Name, "/")] = entry{hdr: *h, body: body}
	}
	// resolve follows links in every component, inside the layer.
	var resolve func(p string, depth int) (string, bool)
	resolve = func(p string, depth int) (string, bool) {
		if depth > 40 {
			return "", false
		}
		parts := strings.Split(p, "/")
		cur := ""
		for i, part := range parts {
			cur = path.Join(cur, part)
			e, ok := raw[cur]
			if !ok {
				return "", false
			}
			if e.hdr.Typeflag == tar.TypeSymlink {
				target := e.hdr.Linkname
				if !path.IsAbs(target) {
					target = path.Join(path.Dir(cur), target)
				}
				rest := path.Join(append([]string{strings.TrimPrefix(target, "/")}, parts[i+1:]...)...)
				return resolve(rest, depth+1)
			}
		}
		return cur, true
	}
	return func(p string) (entry, bool) {
		real, ok := resolve(p, 0)
		if !ok {
			return entry{}, false
		}
		return raw[real], true
	}
}

// checkLoadable follows the ELF interpreter and DT_NEEDED entries from roots through the
// directories the Debian loader searches, failing on anything missing.
func checkLoadable(t *testing.T, fs func(string) (entry, bool), roots []string) {
	t.Helper()
	dirs := []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib"}
	seen := map[string]bool{}
	queue := append([]string(nil), roots...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		e, ok := fs(p)
		if !ok || e.hdr.Typeflag != tar.TypeReg {
			t.Errorf("%s is not in the image", p)
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(e.body))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				b := make([]byte, prog.Filesz)
				if _, err := prog.ReadAt(b, 0); err == nil {
					queue = append(queue, strings.TrimPrefix(strings.TrimRight(string(b), "\x00"), "/"))
				}
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
		for _, lib := range libs {
			found := ""
			for _, d := range dirs {
				if _, ok := fs(d + "/" + lib); ok {
					found = d + "/" + lib
					break
				}
			}
			if found == "" {
				t.Errorf("%s needs %s, which is in none of %v", p, lib, dirs)
				continue
			}
			queue = append(queue, found)
		}
		f.Close()
	}
	if len(seen) < len(roots)+2 {
		t.Errorf("only %d files checked: %v", len(seen), seen)
	}
	t.Logf("%d ELF files resolved from %v", len(seen), roots)
}
