// Package gpuplugin is a kubelet device plugin that advertises emulated GPUs, so that a
// node without any schedules pods that request nvidia.com/gpu the way a GPU node does.
//
// It speaks the real device-plugin API (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1):
// it serves DevicePlugin on a socket in kubelet's device-plugin folder, registers it with
// kubelet's Registration service, lists N healthy devices, and on Allocate hands the
// container the environment NVIDIA's plugin would (NVIDIA_VISIBLE_DEVICES), naming the
// fake devices. No device node is mounted: the container sees no GPU and runs on CPU.
//
// kubelet deletes every plugin socket when it restarts; Run notices that its socket is gone
// and serves and registers again.
package gpuplugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Config says what to advertise and where kubelet is.
type Config struct {
	// ResourceName is the extended resource, nvidia.com/gpu by default.
	ResourceName string
	// Count is the number of devices; at least 1.
	Count int
	// Dir is kubelet's device-plugin folder (pluginapi.DevicePluginPath by default).
	Dir string
	// SocketName is this plugin's socket file in Dir.
	SocketName string
	// CheckInterval is how often Run checks that its socket still exists.
	CheckInterval time.Duration
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

func (c *Config) defaults() error {
	if c.ResourceName == "" {
		c.ResourceName = "nvidia.com/gpu"
	}
	if c.Count < 1 {
		return fmt.Errorf("gpuplugin: count must be at least 1, have %d", c.Count)
	}
	if c.Dir == "" {
		c.Dir = pluginapi.DevicePluginPath
	}
	if c.SocketName == "" {
		c.SocketName = "moe-fake-gpu.sock"
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = 2 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return nil
}

// DeviceIDs are the IDs of the emulated devices: fake-gpu-0 ... fake-gpu-(count-1).
func DeviceIDs(count int) []string {
	ids := make([]string, count)
	for i := range ids {
		ids[i] = fmt.Sprintf("fake-gpu-%d", i)
	}
	return ids
}

// server implements pluginapi.DevicePluginServer.
type server struct {
	pluginapi.UnimplementedDevicePluginServer
	ids  []string
	stop <-chan struct{}
}

func (s *server) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the device list once (it never changes) and holds the stream open
// until the plugin stops or kubelet hangs up.
func (s *server) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	devices := make([]*pluginapi.Device, len(s.ids))
	for i, id := range s.ids {
		devices[i] = &pluginapi.Device{ID: id, Health: pluginapi.Healthy}
	}
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devices}); err != nil {
		return err
	}
	select {
	case <-stream.Context().Done():
	case <-s.stop:
	}
	return nil
}

// Allocate answers each container's request with the environment the NVIDIA device plugin
// sets, naming the fake devices it was given.
func (s *server) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	known := make(map[string]bool, len(s.ids))
	for _, id := range s.ids {
		known[id] = true
	}
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.GetContainerRequests() {
		ids := append([]string(nil), c.GetDevicesIds()...)
		for _, id := range ids {
			if !known[id] {
				return nil, fmt.Errorf("gpuplugin: unknown device %q", id)
			}
		}
		sort.Strings(ids)
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{
				"NVIDIA_VISIBLE_DEVICES": strings.Join(ids, ","),
				"MOE_EMULATED_GPUS":      "true",
			},
		})
	}
	return resp, nil
}

func (s *server) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// Run serves and registers the plugin until ctx ends, serving and registering again each
// time kubelet removes the socket (a kubelet restart).
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	for {
		err := serveOnce(ctx, cfg)
		if ctx.Err() != nil {
			return nil
		}
		cfg.Logf("plugin stopped (%v); starting again", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(cfg.CheckInterval):
		}
	}
}

// serveOnce serves on a fresh socket, registers, and returns when the socket disappears,
// registration fails, or ctx ends.
func serveOnce(ctx context.Context, cfg Config) error {
	sock := filepath.Join(cfg.Dir, cfg.SocketName)
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", sock, err)
	}
	stop := make(chan struct{})
	grpcServer := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(grpcServer, &server{ids: DeviceIDs(cfg.Count), stop: stop})
	served := make(chan error, 1)
	go func() { served <- grpcServer.Serve(lis) }()
	defer func() {
		close(stop)
		grpcServer.Stop()
		_ = os.Remove(sock)
	}()

	if err := register(ctx, cfg); err != nil {
		return err
	}
	cfg.Logf("registered %d × %s with kubelet (socket %s)", cfg.Count, cfg.ResourceName, sock)

	tick := time.NewTicker(cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-served:
			return fmt.Errorf("grpc server: %w", err)
		case <-tick.C:
			if _, err := os.Stat(sock); err != nil {
				return fmt.Errorf("socket %s is gone (kubelet restarted?)", sock)
			}
		}
	}
}

// register calls kubelet's Registration service, retrying while kubelet is not up yet.
func register(ctx context.Context, cfg Config) error {
	kubelet := filepath.Join(cfg.Dir, filepath.Base(pluginapi.KubeletSocket))
	var last error
	for {
		last = registerOnce(ctx, kubelet, cfg)
		if last == nil {
			return nil
		}
		cfg.Logf("registering with kubelet at %s: %v (retrying)", kubelet, last)
		select {
		case <-ctx.Done():
			return fmt.Errorf("registering with kubelet: %w", last)
		case <-time.After(cfg.CheckInterval):
		}
	}
}

func registerOnce(ctx context.Context, kubeletSocket string, cfg Config) error {
	conn, err := grpc.NewClient("unix://"+kubeletSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     cfg.SocketName,
		ResourceName: cfg.ResourceName,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	return err
}
