// Command local-cluster runs a real single-node Kubernetes cluster on this host without
// Docker or kind: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
// and kube-proxy built from the Go module proxy, containerd and runc from Debian, a CNI
// bridge, and emulated GPUs advertised by a device plugin. The `up` and `down` scripts
// beside it build what it needs and call it; docs/local-cluster.md explains the design.
//
//	local-cluster up --bin-dir DIR --pause-image TAR [--gpus N] [--gpu-product LABEL] ...
//	local-cluster down       stop everything and restore the host; fails if anything is left
//	local-cluster status     daemons and nodes
//	local-cluster gpu-plugin --count N   the device plugin (up starts it)
//
// Everything runs as root. The API server listens on the node IP, kubelet on the node IP
// (healthz on loopback), etcd and every other endpoint on loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/moe-operator/moe-operator/hack/local-cluster/gpuplugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "local-cluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: local-cluster up|down|status|gpu-plugin [flags]")
	}
	fs := flag.NewFlagSet("local-cluster "+args[0], flag.ContinueOnError)
	switch args[0] {
	case "up":
		var o upOptions
		fs.StringVar(&o.binDir, "bin-dir", "", "folder with kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl and etcd")
		fs.StringVar(&o.pauseImage, "pause-image", "", "docker-archive of the pause image (go run ./hack/image build pause)")
		fs.StringVar(&o.nodeName, "node-name", "moe-local", "node name")
		fs.StringVar(&o.nodeIP, "node-ip", "", "node IP (default: the default route's source address)")
		fs.StringVar(&o.podCIDR, "pod-cidr", "10.244.0.0/24", "pod addresses (the CNI bridge's range)")
		fs.StringVar(&o.serviceCIDR, "service-cidr", "10.96.0.0/16", "Service cluster IPs")
		fs.IntVar(&o.gpus, "gpus", 4, "emulated nvidia.com/gpu devices (0: none)")
		fs.StringVar(&o.gpuProduct, "gpu-product", "NVIDIA-L4", "nvidia.com/gpu.product label of the emulated GPUs")
		fs.IntVar(&o.gpuMemoryMiB, "gpu-memory-mib", 23034, "nvidia.com/gpu.memory label of the emulated GPUs")
		fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long to wait for the node")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.pauseImage == "" {
			return errors.New("--pause-image is required")
		}
		return up(ctx, o)
	case "down":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return down(context.Background()) // finish tearing down even when interrupted
	case "status":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return status(ctx)
	case "gpu-plugin":
		cfg := gpuplugin.Config{Logf: func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }}
		fs.IntVar(&cfg.Count, "count", 4, "devices to advertise")
		fs.StringVar(&cfg.ResourceName, "resource", "nvidia.com/gpu", "extended resource name")
		fs.StringVar(&cfg.Dir, "dir", "", "kubelet's device-plugin folder (default /var/lib/kubelet/device-plugins)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return gpuplugin.Run(ctx, cfg)
	}
	return fmt.Errorf("unknown command %q", args[0])
}
