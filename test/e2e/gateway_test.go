//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

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

	testScaleFromZero(t, ctx, gw, second)
}

// testScaleFromZero lets mxd idle to zero replicas, then sends it a request through the
// gateway: the gateway holds it, writes the held count onto the MixtralDeployment, the
// autoscaler scales it up, and the request is answered once the pod is ready. The time
// that takes is the cold start.
func testScaleFromZero(t *testing.T, ctx context.Context, gw *engineclient.Client, mxd *servingv1alpha1.MixtralDeployment) {
	key := client.ObjectKeyFromObject(mxd)
	cur := getMXD(t, ctx, key)
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Spec.Autoscaling = &servingv1alpha1.AutoscalingSpec{Enabled: true, MinReplicas: ptr(int32(0)), MaxReplicas: ptr(int32(1)),
		ScaleToZeroAfter: &metav1.Duration{Duration: 20 * time.Second}}
	if err := k8s.Patch(ctx, cur, patch); err != nil {
		t.Fatal(err)
	}
	idle := time.Now()
	eventually(t, 3*time.Minute, mxd.Name+" at zero replicas", func() error {
		got := getMXD(t, ctx, key)
		if got.Spec.Replicas == nil || *got.Spec.Replicas != 0 {
			return fmt.Errorf("spec.replicas %v; autoscaling %+v", got.Spec.Replicas, got.Status.Autoscaling)
		}
		if pods := enginePods(t, ctx, mxd); len(pods) > 0 {
			return fmt.Errorf("%d engine pods left: %s", len(pods), describePods(t, ctx, mxd))
		}
		return nil
	})
	t.Logf("%s went to zero replicas %s after its autoscaler (scaleToZeroAfter 20s) was enabled", mxd.Name, time.Since(idle).Round(time.Second))

	start := time.Now()
	res, err := gw.Chat(ctx, engineclient.ChatRequest{Model: mxd.Spec.Model.ServedName,
		Messages: []engineclient.Message{{Role: "user", Content: "hello again"}}, MaxTokens: 4})
	coldStart := time.Since(start)
	if err != nil {
		t.Fatalf("the request to the model at zero replicas failed after %s: %v; pods: %s", coldStart, err, describePods(t, ctx, mxd))
	}
	if len(res.Choices) == 0 {
		t.Fatalf("no choice in %+v", res)
	}
	got := getMXD(t, ctx, key)
	t.Logf("cold start through the gateway: the held request was answered %s after it was sent (spec.replicas now %d)",
		coldStart.Round(100*time.Millisecond), *got.Spec.Replicas)
	if *got.Spec.Replicas != 1 {
		t.Errorf("spec.replicas %d after the wake, want 1", *got.Spec.Replicas)
	}
}
