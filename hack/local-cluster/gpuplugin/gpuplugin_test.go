package gpuplugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// fakeKubelet is kubelet's Registration service on a socket in a temporary folder.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	requests chan *pluginapi.RegisterRequest
}

func (k *fakeKubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.requests <- r
	return &pluginapi.Empty{}, nil
}

func startKubelet(t *testing.T, dir string) *fakeKubelet {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKubelet{requests: make(chan *pluginapi.RegisterRequest, 4)}
	s := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(s, k)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return k
}

func waitRegister(t *testing.T, k *fakeKubelet) *pluginapi.RegisterRequest {
	t.Helper()
	select {
	case r := <-k.requests:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin did not register")
		return nil
	}
}

func TestPluginRegistersListsAndAllocates(t *testing.T) {
	// Unix socket paths are limited to about 108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "gpuplugin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	kubelet := startKubelet(t, dir)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Count: 3, Dir: dir, CheckInterval: 50 * time.Millisecond, Logf: t.Logf})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	req := waitRegister(t, kubelet)
	if req.Version != pluginapi.Version || req.ResourceName != "nvidia.com/gpu" || req.Endpoint != "moe-fake-gpu.sock" {
		t.Fatalf("register request %+v", req)
	}

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, req.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pluginapi.NewDevicePluginClient(conn)

	stream, err := client.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(list.Devices); got != 3 {
		t.Fatalf("ListAndWatch: %d devices, want 3", got)
	}
	for i, d := range list.Devices {
		if d.ID != DeviceIDs(3)[i] || d.Health != pluginapi.Healthy {
			t.Errorf("device %d: %+v", i, d)
		}
	}

	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"fake-gpu-2", "fake-gpu-0"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.ContainerResponses[0].Envs["NVIDIA_VISIBLE_DEVICES"]; got != "fake-gpu-0,fake-gpu-2" {
		t.Errorf("NVIDIA_VISIBLE_DEVICES = %q", got)
	}
	if _, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"fake-gpu-9"}},
	}}); err == nil {
		t.Error("Allocate of an unknown device succeeded")
	}

	// kubelet restarting removes every plugin socket; the plugin must come back.
	if err := os.Remove(filepath.Join(dir, req.Endpoint)); err != nil {
		t.Fatal(err)
	}
	if again := waitRegister(t, kubelet); again.Endpoint != req.Endpoint {
		t.Errorf("re-registered with endpoint %q", again.Endpoint)
	}
}

func TestConfigRejectsNoDevices(t *testing.T) {
	if err := Run(context.Background(), Config{Count: 0}); err == nil {
		t.Fatal("Run with no devices succeeded")
	}
}
