package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"
)

func TestWithoutOwnedRulesKeepsEverythingElse(t *testing.T) {
	dump := strings.Join([]string{
		"*nat",
		":PREROUTING ACCEPT [0:0]",
		":POSTROUTING ACCEPT [0:0]",
		":KUBE-SERVICES - [0:0]",
		":CNI-abc123 - [0:0]",
		":DOCKER - [0:0]",
		"-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
		"-A POSTROUTING -s 10.244.0.2/32 -m comment --comment \"name: \\\"moe-local\\\"\" -j CNI-abc123",
		"-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE",
		"-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-X",
		"-A CNI-abc123 -d 10.244.0.0/24 -j ACCEPT",
		"-A DOCKER -i docker0 -j RETURN",
		"-A PREROUTING -g KUBE-MARK",
		"COMMIT",
	}, "\n") + "\n"
	got := withoutOwnedRules(dump)
	want := strings.Join([]string{
		"*nat",
		":PREROUTING ACCEPT [0:0]",
		":POSTROUTING ACCEPT [0:0]",
		":DOCKER - [0:0]",
		"-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE",
		"-A DOCKER -i docker0 -j RETURN",
		"COMMIT",
	}, "\n") + "\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestTableIsEmpty(t *testing.T) {
	empty := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
	for name, tc := range map[string]struct {
		dump, table string
		want        bool
	}{
		"built-in chains only":  {empty, "filter", true},
		"a rule":                {strings.Replace(empty, "COMMIT", "-A INPUT -j DROP\nCOMMIT", 1), "filter", false},
		"a DROP policy":         {strings.Replace(empty, ":FORWARD ACCEPT", ":FORWARD DROP", 1), "filter", false},
		"a user chain":          {strings.Replace(empty, "COMMIT", ":MINE - [0:0]\nCOMMIT", 1), "filter", false},
		"another table's rules": {empty + "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DNAT\nCOMMIT\n", "filter", true},
	} {
		if got := tableIsEmpty(tc.dump, tc.table); got != tc.want {
			t.Errorf("%s: tableIsEmpty = %v, want %v", name, got, tc.want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/var/lib/kubelet/pods/a\040b/volumes`); got != "/var/lib/kubelet/pods/a b/volumes" {
		t.Errorf("got %q", got)
	}
}

func testConfig() clusterConfig {
	return clusterConfig{NodeName: "moe-local", NodeIP: net.ParseIP("192.0.2.2"), PodCIDR: "10.244.0.0/24", ServiceCIDR: "10.96.0.0/16", GPUs: 4}
}

// The kubelet configuration decodes strictly into kubelet's own v1beta1 type, so a
// misspelled field fails here instead of being ignored by kubelet.
func TestKubeletConfigIsValid(t *testing.T) {
	var kc kubeletv1beta1.KubeletConfiguration
	if err := yaml.UnmarshalStrict([]byte(kubeletConfig(testConfig())), &kc); err != nil {
		t.Fatal(err)
	}
	if kc.CgroupDriver != "cgroupfs" || kc.FailCgroupV1 == nil || *kc.FailCgroupV1 || kc.FailSwapOn == nil || *kc.FailSwapOn {
		t.Errorf("cgroup and swap settings: %+v", kc)
	}
	if kc.Address != "192.0.2.2" || kc.HealthzBindAddress != "127.0.0.1" || kc.ReadOnlyPort != 0 {
		t.Errorf("listen addresses: address %q, healthz %q, read-only port %d", kc.Address, kc.HealthzBindAddress, kc.ReadOnlyPort)
	}
	if kc.Authentication.Anonymous.Enabled == nil || *kc.Authentication.Anonymous.Enabled {
		t.Error("anonymous access to kubelet is on")
	}
}

func TestCNIConfig(t *testing.T) {
	var conf struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(cniConfig(testConfig())), &conf); err != nil {
		t.Fatal(err)
	}
	if len(conf.Plugins) != 2 || conf.Plugins[0]["type"] != "bridge" || conf.Plugins[0]["bridge"] != bridgeName || conf.Plugins[1]["type"] != "portmap" {
		t.Errorf("plugins %+v", conf.Plugins)
	}
}

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	c := testConfig()
	if err := generatePKI(dir, c); err != nil {
		t.Fatal(err)
	}
	load := func(name string) *x509.Certificate {
		b, err := os.ReadFile(filepath.Join(dir, name+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(b)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	roots := x509.NewCertPool()
	roots.AddCert(load("ca"))
	api := load("apiserver")
	for _, host := range []string{"192.0.2.2", "10.96.0.1", "127.0.0.1", "kubernetes.default.svc"} {
		if _, err := api.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("the API server certificate does not serve %s: %v", host, err)
		}
	}
	for name, want := range map[string]string{"admin": "system:masters", "kubelet-client": "system:nodes"} {
		cert := load(name)
		if len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != want {
			t.Errorf("%s organization %v, want %s", name, cert.Subject.Organization, want)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if load("kubelet-client").Subject.CommonName != "system:node:moe-local" {
		t.Error("the kubelet's client certificate does not name the node")
	}
	if info, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("ca.key mode: %v %v", info.Mode(), err)
	}
}
