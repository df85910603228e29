//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/test/e2e/engineclient"
)

// The chart's gateway: release moe-operator in the operator's namespace.
const gatewayService = "moe-operator-gateway"

func operatorNamespace() string {
	if ns := os.Getenv("OPERATOR_NAMESPACE"); ns != "" {
		return ns
	}
	return "moe-system"
}

// testGateway puts a second MixtralDeployment beside mxd and drives both through the one
// gateway Service: the official openai client lists and chats with each, and a force-killed
// engine pod under load costs no request (the gateway retries what failed before its first
// byte, and drops the pod's endpoint as soon as it stops being ready).
func testGateway(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) {
	second := loadSample(t, demoSample)
	second.Name, second.Namespace = "e2e-cpu-b", mxd.Namespace
	second.Spec.Model.ServedName = "mixtral-small-b"
	if err := k8s.Create(ctx, second); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = k8s.Delete(ctx, second) }()
	waitAvailable(t, ctx, second, 5*time.Minute)

	gw, err := engineclient.New(ctx, cfg, operatorNamespace(), gatewayService)
	if err != nil {
		t.Fatal(err)
	}
	if gw.Route != engineclient.RouteClusterIP {
		t.Fatalf("the gateway Service is reached by %s; the openai client needs its cluster IP", gw.Route)
	}
	models := []string{mxd.Spec.Model.ServedName, second.Spec.Model.ServedName}
	// The gateway sees a model once its Service and a ready endpoint are in its cache.
	eventually(t, time.Minute, "the gateway serves both models", func() error {
		for _, m := range models {
			if _, err := gw.Chat(ctx, engineclient.ChatRequest{Model: m, Messages: []engineclient.Message{{Role: "user", Content: "hi"}}, MaxTokens: 1}); err != nil {
				return err
			}
		}
		return nil
	})

	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: %v", err)
	}
	script := filepath.Join("..", "openai", "gateway.test.mjs")
	cmd := exec.CommandContext(ctx, node, "--test", script)
	cmd.Env = append(os.Environ(), "GATEWAY_URL="+gw.Base(), "MODELS="+strings.Join(models, ","))
	out, err := cmd.CombinedOutput()
	t.Logf("the openai client through the gateway:\n%s", out)
	if err != nil {
		t.Fatalf("the openai client's tests failed: %v", err)
	}

	setReplicas(t, ctx, mxd, 2)
	defer setReplicas(t, ctx, mxd, 1)
	l := startLoad(ctx, gw, mxd.Spec.Model.ServedName, 4)
	time.Sleep(3 * time.Second)
	victim := readyPods(t, ctx, mxd)[0]
	if err := clientset.CoreV1().Pods(victim.Namespace).Delete(ctx, victim.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	took := waitReplaced(t, ctx, mxd, victim.Name, 2)
	time.Sleep(3 * time.Second)
	ok, failures := l.stop()
	t.Logf("pod %s force-killed under load through the gateway: replaced in %s; %d requests succeeded, %d failed", victim.Name, took.Round(time.Second), ok, len(failures))
	if len(failures) > 0 {
		t.Errorf("requests failed through the gateway: %v", failures)
	}
	if ok == 0 {
		t.Error("no request succeeded")
	}
}
