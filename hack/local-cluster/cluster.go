package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// upOptions are `up`'s flags.
type upOptions struct {
	binDir       string
	pauseImage   string
	nodeName     string
	nodeIP       string
	podCIDR      string
	serviceCIDR  string
	gpus         int
	gpuProduct   string
	gpuMemoryMiB int
	timeout      time.Duration
}

// Daemon names, in start order. `down` stops them in reverse.
const (
	dContainerd = "containerd"
	dEtcd       = "etcd"
	dAPIServer  = "kube-apiserver"
	dCM         = "kube-controller-manager"
	dScheduler  = "kube-scheduler"
	dKubelet    = "kubelet"
	dProxy      = "kube-proxy"
	dGPUPlugin  = "gpu-plugin"
)

var daemonOrder = []string{dContainerd, dEtcd, dAPIServer, dCM, dScheduler, dKubelet, dProxy, dGPUPlugin}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[local-cluster] "+format+"\n", args...)
}

// up brings the cluster up; when one is already up and healthy it only says so.
func up(ctx context.Context, o upOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("up must run as root (it starts kubelet and containerd and changes host networking)")
	}
	start := time.Now()
	if _, err := loadConfig(); err == nil {
		if healthy(ctx) == nil {
			logf("already up; kubeconfig: %s", kubeconfigPath())
			return nil
		}
		logf("a previous cluster is half up: tearing it down first")
		if err := down(ctx); err != nil {
			return fmt.Errorf("tearing down the previous cluster: %w", err)
		}
	}
	c, err := resolveConfig(o)
	if err != nil {
		return err
	}
	if err := preflight(c); err != nil {
		return err
	}
	if c.Host, err = takeSnapshot(); err != nil {
		return fmt.Errorf("recording the host's settings: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(stateDir, "bin"), 0o755); err != nil {
		return err
	}
	// From here on `down` can undo whatever happens: the snapshot is on disk.
	if err := saveConfig(c); err != nil {
		return err
	}
	if err := installSelf(); err != nil {
		return err
	}
	if err := generatePKI(pkiDir(), c); err != nil {
		return fmt.Errorf("generating certificates: %w", err)
	}
	if err := writeConfigs(c); err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}
	steps := []struct {
		name string
		run  func() error
	}{
		{"containerd", func() error { return startContainerd(ctx, c, o.pauseImage) }},
		{"etcd", func() error { return startEtcd(ctx, c) }},
		{"kube-apiserver", func() error { return startAPIServer(ctx, c) }},
		{"controller-manager and scheduler", func() error { return startControllers(c) }},
		{"kubelet, kube-proxy and the GPU plugin", func() error { return startNode(c) }},
		{"node Ready", func() error { return waitNode(ctx, c, o.timeout) }},
	}
	for _, s := range steps {
		t := time.Now()
		if err := s.run(); err != nil {
			return fmt.Errorf("%s: %w (logs: %s; undo with `down`)", s.name, err, logDir())
		}
		logf("%s: ready in %.1fs", s.name, time.Since(t).Seconds())
	}
	logf("up in %.1fs: node %s (%s), %d emulated %s (%s)", time.Since(start).Seconds(), c.NodeName, c.NodeIP, c.GPUs, gpuResourceName, c.GPUProduct)
	fmt.Println(kubeconfigPath())
	return nil
}

// resolveConfig fills in defaults: the node IP is the address of the default route's
// interface, so that pods reach the API server at an address the host owns.
func resolveConfig(o upOptions) (clusterConfig, error) {
	c := clusterConfig{
		NodeName: o.nodeName, PodCIDR: o.podCIDR, ServiceCIDR: o.serviceCIDR, BinDir: o.binDir,
		GPUs: o.gpus, GPUProduct: o.gpuProduct, GPUMemoryMi: o.gpuMemoryMiB,
	}
	if o.nodeIP != "" {
		c.NodeIP = net.ParseIP(o.nodeIP)
		if c.NodeIP == nil || c.NodeIP.To4() == nil {
			return c, fmt.Errorf("--node-ip %q is not an IPv4 address", o.nodeIP)
		}
	} else {
		ip, err := defaultRouteIP()
		if err != nil {
			return c, fmt.Errorf("finding the node IP (give --node-ip): %w", err)
		}
		c.NodeIP = ip
	}
	for _, cidr := range []string{c.PodCIDR, c.ServiceCIDR} {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return c, err
		}
	}
	if c.BinDir == "" {
		return c, errors.New("--bin-dir is required (hack/local-cluster/binaries.sh prints it)")
	}
	return c, nil
}

// defaultRouteIP is the IPv4 address the kernel would use to reach the internet.
func defaultRouteIP() (net.IP, error) {
	// UDP "connect" sends nothing; it only picks the route and source address.
	conn, err := net.Dial("udp4", "198.51.100.1:9")
	if err != nil {
		conn, err = net.Dial("udp4", "8.8.8.8:53")
		if err != nil {
			return nil, err
		}
	}
	defer conn.Close()
	ip := conn.LocalAddr().(*net.UDPAddr).IP
	if ip.IsLoopback() {
		return nil, errors.New("the default route is on loopback")
	}
	return ip, nil
}

// preflight checks binaries and tools, and that no other kubelet or cluster owns the host.
func preflight(c clusterConfig) error {
	var missing []string
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl", "etcd"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			missing = append(missing, filepath.Join(c.BinDir, b))
		}
	}
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" (apt-get install containerd runc iptables iproute2)")
		}
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniPluginDir, p)); err != nil {
			missing = append(missing, filepath.Join(cniPluginDir, p)+" (apt-get install containernetworking-plugins)")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing: %s", strings.Join(missing, ", "))
	}
	if pids := processesMatching("kubelet", "--config"); len(pids) > 0 {
		return fmt.Errorf("another kubelet runs on this host (pids %v)", pids)
	}
	for _, addr := range []string{"127.0.0.1:2379", "127.0.0.1:2380", net.JoinHostPort(c.NodeIP.String(), strconv.Itoa(apiserverPort)), net.JoinHostPort(c.NodeIP.String(), "10250")} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("port %s is taken: %w", addr, err)
		}
		l.Close()
	}
	return nil
}

// installSelf copies this binary into the state folder: the GPU plugin daemon runs it, and
// it must not depend on a build cache that may be cleaned.
func installSelf() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(exe)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(selfBinary()+".tmp", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(selfBinary()+".tmp", selfBinary())
}

func bin(c clusterConfig, name string) string { return filepath.Join(c.BinDir, name) }

func startContainerd(ctx context.Context, c clusterConfig, pauseImage string) error {
	path, err := exec.LookPath("containerd")
	if err != nil {
		return err
	}
	if err := start(daemon{name: dContainerd, path: path, args: []string{"--config", confFile("containerd.toml")}}); err != nil {
		return err
	}
	if err := poll(ctx, time.Minute, func() error {
		return exec.CommandContext(ctx, "ctr", "--address", containerdSocket(), "version").Run()
	}); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "ctr", "--address", containerdSocket(), "-n", "k8s.io", "images", "import", pauseImage).CombinedOutput()
	if err != nil {
		return fmt.Errorf("importing the pause image %s: %w: %s", pauseImage, err, out)
	}
	return nil
}

func startEtcd(ctx context.Context, c clusterConfig) error {
	if err := start(daemon{name: dEtcd, path: bin(c, "etcd"), args: []string{
		"--name=moe-local",
		"--data-dir=" + filepath.Join(stateDir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=moe-local=http://127.0.0.1:2380",
		"--log-level=warn",
	}}); err != nil {
		return err
	}
	return poll(ctx, time.Minute, func() error { return httpOK(ctx, "http://127.0.0.1:2379/health") })
}

func startAPIServer(ctx context.Context, c clusterConfig) error {
	p := pkiFile
	if err := start(daemon{name: dAPIServer, path: bin(c, "kube-apiserver"), args: []string{
		"--advertise-address=" + c.NodeIP.String(),
		"--bind-address=" + c.NodeIP.String(),
		"--secure-port=" + strconv.Itoa(apiserverPort),
		"--etcd-servers=http://127.0.0.1:2379",
		"--cert-dir=" + filepath.Join(pkiDir(), "apiserver-generated"),
		"--client-ca-file=" + p("ca.crt"),
		"--tls-cert-file=" + p("apiserver.crt"),
		"--tls-private-key-file=" + p("apiserver.key"),
		"--kubelet-client-certificate=" + p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + p("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-account-issuer=https://kubernetes.default.svc." + clusterDomain,
		"--service-account-key-file=" + p("sa.pub"),
		"--service-account-signing-key-file=" + p("sa.key"),
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--profiling=false",
	}}); err != nil {
		return err
	}
	return poll(ctx, 2*time.Minute, func() error { return healthyAPIServer(ctx) })
}

func startControllers(c clusterConfig) error {
	cm := confFile("controller-manager.kubeconfig")
	if err := start(daemon{name: dCM, path: bin(c, "kube-controller-manager"), args: []string{
		"--kubeconfig=" + cm, "--authentication-kubeconfig=" + cm, "--authorization-kubeconfig=" + cm,
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
		"--cluster-name=moe-local",
		"--root-ca-file=" + pkiFile("ca.crt"),
		"--service-account-private-key-file=" + pkiFile("sa.key"),
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file=" + pkiFile("ca.crt"),
		"--cluster-signing-key-file=" + pkiFile("ca.key"),
		"--allocate-node-cidrs=false",
		"--profiling=false",
	}}); err != nil {
		return err
	}
	s := confFile("scheduler.kubeconfig")
	return start(daemon{name: dScheduler, path: bin(c, "kube-scheduler"), args: []string{
		"--kubeconfig=" + s, "--authentication-kubeconfig=" + s, "--authorization-kubeconfig=" + s,
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
		"--profiling=false",
	}})
}

func startNode(c clusterConfig) error {
	if err := start(daemon{name: dKubelet, path: bin(c, "kubelet"), args: []string{
		"--config=" + confFile("kubelet.yaml"),
		"--kubeconfig=" + confFile("kubelet.kubeconfig"),
		"--node-ip=" + c.NodeIP.String(),
		"--hostname-override=" + c.NodeName,
	}}); err != nil {
		return err
	}
	if err := start(daemon{name: dProxy, path: bin(c, "kube-proxy"), args: []string{"--config=" + confFile("kube-proxy.yaml")}}); err != nil {
		return err
	}
	if c.GPUs == 0 {
		return nil
	}
	return start(daemon{name: dGPUPlugin, path: selfBinary(), args: []string{"gpu-plugin", "--count=" + strconv.Itoa(c.GPUs), "--resource=" + gpuResourceName}})
}

// waitNode waits for the node to register, labels it like NVIDIA's GPU feature discovery
// labels a GPU node, and waits for it to be Ready, untainted, with the emulated GPUs
// allocatable and the default ServiceAccount in place: then workloads can be applied.
func waitNode(ctx context.Context, c clusterConfig, timeout time.Duration) error {
	cs, err := clientset()
	if err != nil {
		return err
	}
	var node *corev1.Node
	if err := poll(ctx, timeout, func() error {
		node, err = cs.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("node %s never registered: %w", c.NodeName, err)
	}
	if c.GPUs > 0 {
		labels := map[string]string{
			"nvidia.com/gpu.present": "true",
			"nvidia.com/gpu.product": c.GPUProduct,
			"nvidia.com/gpu.count":   strconv.Itoa(c.GPUs),
			"nvidia.com/gpu.memory":  strconv.Itoa(c.GPUMemoryMi),
			emulatedGPULabel:         "true",
		}
		var patch strings.Builder
		patch.WriteString(`{"metadata":{"labels":{`)
		first := true
		for k, v := range labels {
			if !first {
				patch.WriteByte(',')
			}
			first = false
			fmt.Fprintf(&patch, "%q:%q", k, v)
		}
		patch.WriteString(`}}}`)
		if _, err := cs.CoreV1().Nodes().Patch(ctx, c.NodeName, types.MergePatchType, []byte(patch.String()), metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("labelling the node: %w", err)
		}
	}
	return poll(ctx, timeout, func() error {
		node, err = cs.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ready := false
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			return errors.New("node not Ready")
		}
		for _, t := range node.Spec.Taints {
			if t.Key == "node.kubernetes.io/not-ready" || t.Key == "node.kubernetes.io/uninitialized" {
				return fmt.Errorf("node still tainted %s", t.Key)
			}
		}
		if c.GPUs > 0 {
			q := node.Status.Allocatable[gpuResourceName]
			if q.Value() != int64(c.GPUs) {
				return fmt.Errorf("allocatable %s is %s, want %d", gpuResourceName, q.String(), c.GPUs)
			}
		}
		if _, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("default ServiceAccount: %w", err)
		}
		return nil
	})
}

func clientset() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfigPath())
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(cfg)
}

// healthyAPIServer asks the API server's /readyz with the admin credentials.
func healthyAPIServer(ctx context.Context) error {
	cs, err := clientset()
	if err != nil {
		return err
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("readyz: %w: %s", err, body)
	}
	return nil
}

// healthy reports whether every daemon runs and the API server is ready.
func healthy(ctx context.Context) error {
	c, err := loadConfig()
	if err != nil {
		return err
	}
	for _, d := range daemonOrder {
		if d == dGPUPlugin && c.GPUs == 0 {
			continue
		}
		if _, ok := running(d); !ok {
			return fmt.Errorf("%s is not running", d)
		}
	}
	return healthyAPIServer(ctx)
}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// poll calls f every half second until it succeeds, ctx ends or timeout passes.
func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// down stops the cluster and restores the host as `up` found it, then checks that it did.
func down(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("down must run as root")
	}
	c, err := loadConfig()
	if errors.Is(err, os.ErrNotExist) {
		logf("no cluster state in %s: nothing to tear down", stateDir)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", filepath.Join(stateDir, stateFileName), err)
	}
	start := time.Now()
	var errs []error
	note := func(err error) {
		if err != nil {
			logf("%v", err)
			errs = append(errs, err)
		}
	}
	// The node side first, so nothing restarts pods while they are removed.
	for _, d := range []string{dGPUPlugin, dProxy, dKubelet} {
		note(stop(d, 15*time.Second))
	}
	if _, ok := running(dContainerd); ok {
		n, err := removeAllPods(ctx, containerdSocket())
		note(err)
		logf("removed %d pod sandboxes", n)
	}
	for _, d := range []string{dScheduler, dCM, dAPIServer, dEtcd, dContainerd} {
		note(stop(d, 15*time.Second))
	}
	// Shims outlive containerd; so do container processes whose sandbox could not be
	// stopped. Both are found by what is unique to this cluster.
	for _, pid := range processesMatching("containerd-shim", containerdSocket()) {
		note(terminate(pid, 5*time.Second))
	}
	for _, cg := range kubeCgroups() {
		if !contains(c.Host.Cgroups, cg) {
			for _, pid := range cgroupProcs(cg) {
				note(terminate(pid, 2*time.Second))
			}
		}
	}
	note(unmountAll(stateDir, runDir, kubeletRootDir, "/run/containerd"))
	for _, ns := range netnsNames() {
		if !contains(c.Host.Netns, ns) {
			p := filepath.Join("/run/netns", ns)
			note(unmountAll(p))
			note(os.Remove(p))
		}
	}
	for _, l := range links() {
		if !contains(c.Host.Links, l) {
			if out, err := exec.CommandContext(ctx, "ip", "link", "delete", l).CombinedOutput(); err != nil && linkExists(l) {
				// A veth goes away by itself when its peer's namespace or its peer is
				// deleted, so a link that vanished between listing and deleting is fine.
				note(fmt.Errorf("ip link delete %s: %w: %s", l, err, out))
			}
		}
	}
	note(cleanTables(c.Host))
	note(restoreSysctls(c.Host))
	for _, cg := range kubeCgroups() {
		if !contains(c.Host.Cgroups, cg) {
			note(removeCgroupTree(cg))
		}
	}
	for _, p := range trackedPaths {
		if !c.Host.Paths[p] && p != stateDir {
			note(os.RemoveAll(p))
		}
	}
	var left []string
	for _, d := range compareHost(c.Host) {
		if !strings.HasPrefix(d, "path "+stateDir+" ") {
			left = append(left, d)
		}
	}
	if len(left) > 0 || len(errs) > 0 {
		return fmt.Errorf("the host is not fully restored (state kept in %s; run down again):\n  %s",
			stateDir, strings.Join(append(left, errorStrings(errs)...), "\n  "))
	}
	if err := os.RemoveAll(stateDir); err != nil {
		return err
	}
	logf("down in %.1fs: processes stopped, sysctls restored, KUBE-*/CNI-* chains and the %s bridge gone, %s removed",
		time.Since(start).Seconds(), bridgeName, stateDir)
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func errorStrings(errs []error) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Error()
	}
	return out
}

// status prints each daemon and the nodes.
func status(ctx context.Context) error {
	c, err := loadConfig()
	if err != nil {
		fmt.Println("down (no state in " + stateDir + ")")
		return nil
	}
	for _, d := range daemonOrder {
		if d == dGPUPlugin && c.GPUs == 0 {
			continue
		}
		if pid, ok := running(d); ok {
			fmt.Printf("%-24s running (pid %d)\n", d, pid)
		} else {
			fmt.Printf("%-24s stopped\n", d)
		}
	}
	cs, err := clientset()
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("listing nodes: %w", err)
	}
	for _, n := range nodes.Items {
		gpus := n.Status.Allocatable[gpuResourceName]
		fmt.Printf("node %s: %s=%s, cpu=%s, memory=%s\n", n.Name, gpuResourceName, gpus.String(),
			n.Status.Allocatable.Cpu().String(), n.Status.Allocatable.Memory().String())
	}
	fmt.Printf("KUBECONFIG=%s\n", kubeconfigPath())
	return nil
}
