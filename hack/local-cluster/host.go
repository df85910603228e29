package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
)

// trackedSysctls are the host settings the cluster's components change: kubelet sets the
// kernel.panic*, vm.* and kernel.keys.* values it wants, the CNI bridge turns on IPv4
// forwarding, and kube-proxy may touch route_localnet and conntrack limits (its
// configuration asks it not to). `up` records them and `down` writes back any that moved.
var trackedSysctls = []string{
	"vm.overcommit_memory",
	"vm.panic_on_oom",
	"kernel.panic",
	"kernel.panic_on_oops",
	"kernel.keys.root_maxkeys",
	"kernel.keys.root_maxbytes",
	"net.ipv4.ip_forward",
	"net.ipv4.conf.all.forwarding",
	"net.ipv4.conf.default.forwarding",
	"net.ipv6.conf.all.forwarding",
	"net.ipv4.conf.all.route_localnet",
	"net.bridge.bridge-nf-call-iptables",
	"net.bridge.bridge-nf-call-ip6tables",
	"net.netfilter.nf_conntrack_max",
	"net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.netfilter.nf_conntrack_tcp_timeout_close_wait",
}

// trackedPaths are the host paths the cluster may create outside its own folders. `down`
// removes each one `up` did not find.
var trackedPaths = []string{
	stateDir,
	runDir,
	kubeletRootDir,
	"/var/log/pods",
	"/var/log/containers",
	"/var/lib/cni",
	"/run/netns",
	"/run/containerd",
	"/var/lib/containerd",
	"/opt/containerd",
	"/etc/cni",
	"/opt/cni",
	"/etc/kubernetes",
	"/var/lib/kube-proxy",
	"/var/run/kubernetes",
	"/run/xtables.lock",
}

// cgroupRoot is the cgroup v1 mount folder; kubelet's cgroupfs driver makes a kubepods
// tree in each hierarchy.
const cgroupRoot = "/sys/fs/cgroup"

// hostSnapshot is the host as `up` found it.
type hostSnapshot struct {
	Sysctls   map[string]string `json:"sysctls"`
	Paths     map[string]bool   `json:"paths"`
	IPTables  string            `json:"iptables"`
	IP6Tables string            `json:"ip6tables"`
	NFTables  string            `json:"nftables"`
	Links     []string          `json:"links"`
	Netns     []string          `json:"netns"`
	Cgroups   []string          `json:"cgroups"`
}

func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

func readSysctl(key string) (string, bool) {
	b, err := os.ReadFile(sysctlPath(key))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

func takeSnapshot() (hostSnapshot, error) {
	s := hostSnapshot{Sysctls: map[string]string{}, Paths: map[string]bool{}}
	for _, k := range trackedSysctls {
		if v, ok := readSysctl(k); ok {
			s.Sysctls[k] = v
		}
	}
	for _, p := range trackedPaths {
		_, err := os.Lstat(p)
		s.Paths[p] = err == nil
	}
	var err error
	if s.IPTables, err = tablesSave("iptables-save"); err != nil {
		return s, err
	}
	if s.IP6Tables, err = tablesSave("ip6tables-save"); err != nil {
		return s, err
	}
	s.NFTables = nftRuleset()
	s.Links = links()
	s.Netns = netnsNames()
	s.Cgroups = kubeCgroups()
	return s, nil
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// tablesSave runs iptables-save (or ip6tables-save) and drops what changes on its own:
// comment lines and packet counters.
func tablesSave(cmd string) (string, error) {
	out, err := exec.Command(cmd).Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", cmd, err)
	}
	var b strings.Builder
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b.WriteString(counters.ReplaceAllString(line, "[0:0]"))
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// nftRuleset is `nft list ruleset`, or "" without the nft tool.
func nftRuleset() string {
	out, err := exec.Command("nft", "list", "ruleset").Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func links() []string {
	ifaces, err := netInterfaces()
	if err != nil {
		return nil
	}
	sort.Strings(ifaces)
	return ifaces
}

// linkExists reports whether the network link is still there.
func linkExists(name string) bool {
	_, err := os.Lstat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// netInterfaces lists link names from /sys/class/net.
func netInterfaces() ([]string, error) {
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

func netnsNames() []string {
	entries, _ := os.ReadDir("/run/netns")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// kubeCgroups lists the kubepods folders directly under each cgroup hierarchy.
func kubeCgroups() []string {
	matches, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", "kubepods*"))
	sort.Strings(matches)
	return matches
}

// isOwnedChain says whether an iptables chain belongs to the cluster: kube-proxy's and
// kubelet's KUBE-* chains and the CNI plugins' CNI-* chains.
func isOwnedChain(name string) bool {
	return strings.HasPrefix(name, "KUBE-") || strings.HasPrefix(name, "CNI-")
}

var jumpTarget = regexp.MustCompile(`\s-[jg]\s+(\S+)`)

// withoutOwnedRules removes the cluster's chains and every rule in them or jumping to them
// from an iptables-save dump, keeping everything else as it is.
func withoutOwnedRules(dump string) string {
	var b strings.Builder
	for _, line := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			if isOwnedChain(strings.Fields(line[1:])[0]) {
				continue
			}
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			if len(f) > 1 && isOwnedChain(f[1]) {
				continue
			}
			if m := jumpTarget.FindStringSubmatch(line); m != nil && isOwnedChain(m[1]) {
				continue
			}
		}
		if line != "" {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// tableNames lists the tables (*filter, *nat, ...) of a dump.
func tableNames(dump string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(dump, "\n") {
		if strings.HasPrefix(line, "*") {
			out[line[1:]] = true
		}
	}
	return out
}

// tableIsEmpty says whether table holds only built-in chains with ACCEPT policies and no
// rules in dump.
func tableIsEmpty(dump, table string) bool {
	in := false
	for _, line := range strings.Split(dump, "\n") {
		switch {
		case line == "*"+table:
			in = true
		case !in:
		case line == "COMMIT":
			return true
		case strings.HasPrefix(line, "-A "):
			return false
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			// User chains have the policy "-"; built-in ones must still accept.
			if len(f) < 2 || f[1] != "ACCEPT" {
				return false
			}
		}
	}
	return true
}

// cleanTables removes the cluster's iptables chains and rules (IPv4 and IPv6), and drops
// the tables that iptables-nft created for them when `up` found none.
func cleanTables(before hostSnapshot) error {
	var errs []error
	for _, fam := range []struct{ save, restore, nftFamily, baseline string }{
		{"iptables-save", "iptables-restore", "ip", before.IPTables},
		{"ip6tables-save", "ip6tables-restore", "ip6", before.IP6Tables},
	} {
		now, err := tablesSave(fam.save)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cleaned := withoutOwnedRules(now)
		if cleaned != now {
			cmd := exec.Command(fam.restore)
			cmd.Stdin = strings.NewReader(cleaned)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w: %s", fam.restore, err, out))
				continue
			}
		}
		had := tableNames(fam.baseline)
		for table := range tableNames(cleaned) {
			if !had[table] && tableIsEmpty(cleaned, table) {
				// iptables-nft keeps an emptied table; nft removes it.
				if out, err := exec.Command("nft", "delete", "table", fam.nftFamily, table).CombinedOutput(); err != nil {
					errs = append(errs, fmt.Errorf("nft delete table %s %s: %w: %s", fam.nftFamily, table, err, out))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// restoreSysctls writes back every tracked setting that differs from the snapshot.
// IPv4 forwarding goes first: writing ip_forward resets every interface's forwarding flag.
func restoreSysctls(before hostSnapshot) error {
	keys := make([]string, 0, len(before.Sysctls))
	for k := range before.Sysctls {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == "net.ipv4.ip_forward") != (keys[j] == "net.ipv4.ip_forward") {
			return keys[i] == "net.ipv4.ip_forward"
		}
		return keys[i] < keys[j]
	})
	var errs []error
	for _, k := range keys {
		want := before.Sysctls[k]
		if have, ok := readSysctl(k); ok && have != want {
			if err := os.WriteFile(sysctlPath(k), []byte(want), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restoring %s=%s: %w", k, want, err))
			}
		}
	}
	return errors.Join(errs...)
}

// mountsUnder lists mount points at or below any of roots, deepest first.
func mountsUnder(roots ...string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		for _, r := range roots {
			if mp == r || strings.HasPrefix(mp, r+"/") {
				out = append(out, mp)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountAll unmounts everything below roots, lazily when a plain unmount fails.
func unmountAll(roots ...string) error {
	var errs []error
	for range 3 {
		mps := mountsUnder(roots...)
		if len(mps) == 0 {
			return nil
		}
		errs = errs[:0]
		for _, mp := range mps {
			if err := syscall.Unmount(mp, 0); err != nil {
				if err2 := syscall.Unmount(mp, syscall.MNT_DETACH); err2 != nil && !errors.Is(err2, syscall.EINVAL) {
					errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err2))
				}
			}
		}
	}
	if mps := mountsUnder(roots...); len(mps) > 0 {
		errs = append(errs, fmt.Errorf("still mounted: %s", strings.Join(mps, ", ")))
	}
	return errors.Join(errs...)
}

// removeCgroupTree removes a cgroup folder and its children, deepest first (cgroup
// folders are removed with rmdir, never by deleting their files).
func removeCgroupTree(root string) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupProcs lists the processes in a cgroup tree.
func cgroupProcs(root string) []int {
	var pids []int
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// compareHost lists how the host differs from the snapshot in what the cluster touches.
func compareHost(before hostSnapshot) []string {
	after, err := takeSnapshot()
	if err != nil {
		return []string{err.Error()}
	}
	var diffs []string
	for k, v := range before.Sysctls {
		if after.Sysctls[k] != v {
			diffs = append(diffs, fmt.Sprintf("sysctl %s = %s, was %s", k, after.Sysctls[k], v))
		}
	}
	for p, existed := range before.Paths {
		if after.Paths[p] != existed {
			diffs = append(diffs, fmt.Sprintf("path %s exists=%v, was %v", p, after.Paths[p], existed))
		}
	}
	if after.IPTables != before.IPTables {
		diffs = append(diffs, "iptables rules differ:\n"+after.IPTables)
	}
	if after.IP6Tables != before.IP6Tables {
		diffs = append(diffs, "ip6tables rules differ:\n"+after.IP6Tables)
	}
	if after.NFTables != before.NFTables {
		diffs = append(diffs, "nftables ruleset differs:\n"+after.NFTables)
	}
	if a, b := strings.Join(after.Links, " "), strings.Join(before.Links, " "); a != b {
		diffs = append(diffs, fmt.Sprintf("network links are [%s], were [%s]", a, b))
	}
	if a, b := strings.Join(after.Netns, " "), strings.Join(before.Netns, " "); a != b {
		diffs = append(diffs, fmt.Sprintf("network namespaces are [%s], were [%s]", a, b))
	}
	if a, b := strings.Join(after.Cgroups, " "), strings.Join(before.Cgroups, " "); a != b {
		diffs = append(diffs, fmt.Sprintf("kubepods cgroups are [%s], were [%s]", a, b))
	}
	if mps := mountsUnder(stateDir, runDir, kubeletRootDir, "/run/netns", "/run/containerd"); len(mps) > 0 {
		diffs = append(diffs, "mounts left: "+strings.Join(mps, ", "))
	}
	sort.Strings(diffs)
	return diffs
}
