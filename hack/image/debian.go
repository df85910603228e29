package main

import (
	"archive/tar"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Debian packages layered into an image come from the build host's dpkg database: the
// packages an Image names and every package they depend on (the first installed
// alternative of each dependency), less the ones it excludes, with their files as
// installed. The host is Debian (the golang image for Docker users is too), so what the
// image holds is what `apt-get install` gives there.

// skippedTrees are package paths an image does not need.
var skippedTrees = []string{"/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/lintian/",
	"/usr/share/bug/", "/usr/share/locale/", "/usr/share/gcc/", "/usr/share/gdb/"}

// dpkgQuery runs dpkg-query; a variable so tests can see the commands.
var dpkgQuery = func(args ...string) (string, error) {
	out, err := exec.Command("dpkg-query", args...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", fmt.Errorf("dpkg-query %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", fmt.Errorf("dpkg-query %s: %w (the image needs a Debian build host)", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// installed reports whether package p is installed on the host.
func installed(p string) bool {
	out, err := dpkgQuery("-W", "-f=${db:Status-Status}", p)
	return err == nil && strings.TrimSpace(out) == "installed"
}

// packageClosure is pkgs and everything they depend on, sorted, without exclude.
func packageClosure(pkgs, exclude []string) ([]string, error) {
	skip := map[string]bool{}
	for _, e := range exclude {
		skip[e] = true
	}
	seen := map[string]bool{}
	queue := append([]string(nil), pkgs...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] || skip[p] {
			continue
		}
		if !installed(p) {
			return nil, fmt.Errorf("Debian package %s is not installed on this host (hack/setup-vulkan.sh installs the images' packages)", p)
		}
		seen[p] = true
		deps, err := dpkgQuery("-W", "-f=${Pre-Depends}, ${Depends}", p)
		if err != nil {
			return nil, err
		}
		for _, dep := range strings.Split(deps, ",") {
			if strings.TrimSpace(dep) == "" {
				continue
			}
			choice, names := "", []string(nil)
			for _, alt := range strings.Split(dep, "|") {
				name := strings.TrimSpace(alt)
				if i := strings.IndexAny(name, " ("); i >= 0 {
					name = name[:i]
				}
				name, _, _ = strings.Cut(name, ":") // python3:any, libc6:amd64
				names = append(names, name)
				if skip[name] {
					choice = "-"
					break
				}
				if choice == "" && installed(name) {
					choice = name
				}
			}
			switch choice {
			case "":
				return nil, fmt.Errorf("Debian package %s depends on %s, none of which is installed", p, strings.Join(names, " or "))
			case "-":
			default:
				queue = append(queue, choice)
			}
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// packageEntries are the layer entries of the packages' files: directories, regular files
// and symbolic links, with the host's modes, owned by root. A path under a directory that
// is a symbolic link on the host (/lib -> usr/lib on a merged-/usr system) is stored at
// its real place, and the link as a link.
func packageEntries(pkgs []string, hostRoot string) ([]entry, error) {
	byName := map[string]entry{}
	var add func(p string) error
	add = func(p string) error {
		p = path.Clean(p)
		if p == "/" || p == "." {
			return nil
		}
		name := strings.TrimPrefix(p, "/")
		if _, ok := byName[name]; ok {
			return nil
		}
		if err := add(path.Dir(p)); err != nil {
			return err
		}
		fi, err := os.Lstat(filepath.Join(hostRoot, p))
		if err != nil {
			return err
		}
		mode := int64(fi.Mode().Perm())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(filepath.Join(hostRoot, p))
			if err != nil {
				return err
			}
			byName[name] = entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
		case fi.IsDir():
			byName[name] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
		case fi.Mode().IsRegular():
			body, err := os.ReadFile(filepath.Join(hostRoot, p))
			if err != nil {
				return err
			}
			byName[name] = entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, body: body}
		}
		return nil
	}
	for _, pkg := range pkgs {
		list, err := dpkgQuery("-L", pkg)
		if err != nil {
			return nil, err
		}
	files:
		for _, p := range strings.Split(list, "\n") {
			p = strings.TrimSpace(p)
			if p == "" || p == "/." {
				continue
			}
			for _, s := range skippedTrees {
				if strings.HasPrefix(p+"/", s) {
					continue files
				}
			}
			real, err := realPath(hostRoot, p)
			if err != nil {
				if os.IsNotExist(err) { // listed but removed (a diverted or deleted file)
					continue
				}
				return nil, fmt.Errorf("package %s: %w", pkg, err)
			}
			if err := add(real); err != nil {
				return nil, fmt.Errorf("package %s: %w", pkg, err)
			}
			// The links on the way (lib -> usr/lib) go in as links.
			for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
				if fi, err := os.Lstat(filepath.Join(hostRoot, dir)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
					if err := add(dir); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	out := make([]entry, 0, len(byName))
	for _, e := range byName {
		out = append(out, e)
	}
	return out, nil
}

// realPath resolves the symbolic links among p's parent directories (not p itself) under
// hostRoot and returns the absolute path inside it.
func realPath(hostRoot, p string) (string, error) {
	dir, err := filepath.EvalSymlinks(filepath.Join(hostRoot, path.Dir(p)))
	if err != nil {
		return "", err
	}
	root, err := filepath.EvalSymlinks(hostRoot)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("%s leaves the host root", p)
	}
	return path.Join("/", filepath.ToSlash(rel), path.Base(p)), nil
}
