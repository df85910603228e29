package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Fixed network settings of the cluster. The pod and service ranges are private ranges
// Kubernetes tooling commonly uses; override them if they collide with the host's networks.
const (
	clusterDomain = "cluster.local"
	apiserverPort = 6443
	bridgeName    = "moe0"
	cniNetName    = "moe-local"
)

// Host paths. Everything the cluster writes lives under stateDir and runDir; the other
// paths are where kubelet, containerd's CRI plugin and the CNI library insist on writing,
// and `down` removes them when `up` found them absent.
const (
	stateDir         = "/var/lib/moe-local-cluster"
	runDir           = "/run/moe-local-cluster"
	kubeletRootDir   = "/var/lib/kubelet"
	cniPluginDir     = "/usr/lib/cni"
	stateFileName    = "cluster.json"
	kubeconfigName   = "kubeconfig"
	pauseImageRef    = "localhost/moe-operator/pause:1"
	gpuResourceName  = "nvidia.com/gpu"
	emulatedGPULabel = "local-cluster.moe-operator.io/emulated-gpus"
)

// clusterConfig is what `up` decided; it is saved as stateDir/cluster.json so that `down`
// and `status` need no flags.
type clusterConfig struct {
	NodeName    string `json:"nodeName"`
	NodeIP      net.IP `json:"nodeIP"`
	PodCIDR     string `json:"podCIDR"`
	ServiceCIDR string `json:"serviceCIDR"`
	BinDir      string `json:"binDir"`
	GPUs        int    `json:"gpus"`
	GPUProduct  string `json:"gpuProduct"`
	GPUMemoryMi int    `json:"gpuMemoryMiB"`
	// Host is the host as `up` found it, for `down` to restore.
	Host hostSnapshot `json:"host"`
}

// apiServiceIP is the first address of the service range: the `kubernetes` Service.
func (c clusterConfig) apiServiceIP() net.IP {
	_, n, err := net.ParseCIDR(c.ServiceCIDR)
	if err != nil {
		panic(err)
	}
	ip := n.IP.To4()
	out := make(net.IP, len(ip))
	copy(out, ip)
	out[len(out)-1]++
	return out
}

func (c clusterConfig) apiserverURL() string {
	return fmt.Sprintf("https://%s", net.JoinHostPort(c.NodeIP.String(), fmt.Sprint(apiserverPort)))
}

// Paths under stateDir and runDir.
func pkiDir() string              { return filepath.Join(stateDir, "pki") }
func pkiFile(name string) string  { return filepath.Join(pkiDir(), name) }
func logDir() string              { return filepath.Join(stateDir, "logs") }
func confDir() string             { return filepath.Join(stateDir, "conf") }
func confFile(name string) string { return filepath.Join(confDir(), name) }
func pidDir() string              { return filepath.Join(runDir, "pids") }
func containerdSocket() string    { return filepath.Join(runDir, "containerd", "containerd.sock") }
func kubeconfigPath() string      { return filepath.Join(stateDir, kubeconfigName) }
func cniConfDir() string          { return filepath.Join(stateDir, "cni", "net.d") }
func selfBinary() string          { return filepath.Join(stateDir, "bin", "local-cluster") }

func saveConfig(c clusterConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(stateDir, stateFileName), b, 0o600)
}

func loadConfig() (clusterConfig, error) {
	var c clusterConfig
	b, err := os.ReadFile(filepath.Join(stateDir, stateFileName))
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(b, &c)
}

// writeKubeconfig writes a kubeconfig with the CA and the client certificate NAME embedded,
// so that it keeps working when copied elsewhere.
func writeKubeconfig(path, server, certName string) error {
	read := func(p string) ([]byte, error) { return os.ReadFile(pkiFile(p)) }
	ca, err := read("ca.crt")
	if err != nil {
		return err
	}
	crt, err := read(certName + ".crt")
	if err != nil {
		return err
	}
	key, err := read(certName + ".key")
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["moe-local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[certName] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
	cfg.Contexts["moe-local"] = &clientcmdapi.Context{Cluster: "moe-local", AuthInfo: certName}
	cfg.CurrentContext = "moe-local"
	return clientcmd.WriteToFile(*cfg, path)
}

// writeConfigs writes every component's configuration into confDir.
func writeConfigs(c clusterConfig) error {
	for _, d := range []string{confDir(), cniConfDir(), logDir(), pidDir(), filepath.Dir(containerdSocket())} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		confFile("containerd.toml"):                    containerdConfig(),
		filepath.Join(cniConfDir(), "10-moe.conflist"): cniConfig(c),
		confFile("kubelet.yaml"):                       kubeletConfig(c),
		confFile("kube-proxy.yaml"):                    kubeProxyConfig(c),
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	for name, cert := range map[string]string{
		"admin": "admin", "controller-manager": "controller-manager", "scheduler": "scheduler",
		"kube-proxy": "kube-proxy", "kubelet": "kubelet-client",
	} {
		if err := writeKubeconfig(confFile(name+".kubeconfig"), c.apiserverURL(), cert); err != nil {
			return err
		}
	}
	return writeKubeconfig(kubeconfigPath(), c.apiserverURL(), "admin")
}

// containerdConfig keeps containerd's state, sockets and plugin folders inside the cluster's
// folders, and carries the CRI settings this kind of host needs (see docs/local-cluster.md):
// cgroupfs (a cgroup v1 host), restrict_oom_score_adj (no CAP_SYS_RESOURCE), the local pause
// image, overlayfs, Debian's CNI plugins.
func containerdConfig() string {
	r := strings.NewReplacer("STATE", stateDir, "RUN", runDir, "CNIBIN", cniPluginDir, "CNICONF", cniConfDir(), "PAUSE", pauseImageRef)
	return r.Replace(`version = 2
root = "STATE/containerd/root"
state = "RUN/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "RUN/containerd/containerd.sock"

[ttrpc]
  address = "RUN/containerd/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "STATE/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "PAUSE"
    restrict_oom_score_adj = true
    enable_selinux = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "RUN/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "CNIBIN"
      conf_dir = "CNICONF"
      max_conf_num = 1
`)
}

// cniConfig is a bridge network with host-local addresses, masquerading and hostPort
// support; host-local keeps its leases inside the cluster's folder.
func cniConfig(c clusterConfig) string {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       cniNetName,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": bridgeName, "isGateway": true, "ipMasq": true, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": c.PodCIDR}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": filepath.Join(stateDir, "cni", "ipam"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	return string(b) + "\n"
}

// kubeletConfig serves on the node IP (healthz on loopback), authenticates clients by
// certificate and authorizes through the API server; the cgroup, swap and eviction settings
// are what this kind of host needs. No cluster DNS: pods resolve through the host's
// resolv.conf.
func kubeletConfig(c clusterConfig) string {
	r := strings.NewReplacer("NODEIP", c.NodeIP.String(), "PKI", pkiDir(), "SOCK", containerdSocket(), "DOMAIN", clusterDomain)
	return r.Replace(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: NODEIP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: PKI/ca.crt
authorization:
  mode: Webhook
tlsCertFile: PKI/kubelet-serving.crt
tlsPrivateKeyFile: PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
resolvConf: /etc/resolv.conf
clusterDomain: DOMAIN
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
serializeImagePulls: false
protectKernelDefaults: false
maxPods: 110
`)
}

// kubeProxyConfig runs iptables mode with every host-wide setting left as it is:
// conntrack limits and timeouts untouched (zero means "leave"), NodePorts only on the node
// IP and not on localhost (which would need route_localnet), metrics and healthz on loopback.
func kubeProxyConfig(c clusterConfig) string {
	r := strings.NewReplacer("NODEIP", c.NodeIP.String(), "NODE", c.NodeName, "KUBECONFIG", confFile("kube-proxy.kubeconfig"), "PODCIDR", c.PodCIDR)
	return r.Replace(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: KUBECONFIG
hostnameOverride: NODE
mode: iptables
clusterCIDR: PODCIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses:
- NODEIP/32
iptables:
  localhostNodePorts: false
  masqueradeAll: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`)
}
