package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
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
			layer, err := rootfsLayer(im, []byte("binary"), host)
			if err != nil {
				t.Fatal(err)
			}
			df := dockerfile(im)
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
	for _, im := range images {
		if im.Name != "engine" {
			continue
		}
		if _, err := compile(context.Background(), im, o, t.TempDir()); err != nil {
			t.Fatalf("engine image binary: %v", err)
		}
	}
	dyn := Image{Name: "dynamic", Package: "./hack/image/testdata/dynamic", Binary: "/dynamic"}
	_, err := compile(context.Background(), dyn, o, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Fatalf("a purego binary was accepted for an image: %v", err)
	}
}
