//go:build e2e && vllm

// The vLLM runtime end to end: `make test-e2e-vllm` (hack/test-e2e-vllm.sh). It needs what
// the CI machines lack: NVIDIA GPUs in the cluster, the vllm/vllm-openai image, and a
// Hugging Face token that may read the model. It has not run on this project's machines.
//
// Settings (environment):
//
//	HF_TOKEN               a token that may read the model (required)
//	VLLM_E2E_PRESET        the model preset (default mixtral-8x7b-instruct)
//	VLLM_E2E_ACCELERATOR   the accelerator type of the GPU nodes (default h100-80gb)
//	VLLM_E2E_QUANTIZATION  pin the quantization (default Auto)
//	VLLM_E2E_IMAGE         spec.engine.image (default: the operator's --vllm-image)
//	VLLM_E2E_TIMEOUT       how long the model may take to download and load (default 60m)
package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/test/e2e/engineclient"
)

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func TestVLLM(t *testing.T) {
	ctx := context.Background()
	requireOperator(t, ctx)
	token := os.Getenv("HF_TOKEN")
	if token == "" {
		t.Fatal("HF_TOKEN is not set: vLLM downloads the model from Hugging Face with it")
	}
	timeout, err := time.ParseDuration(envOr("VLLM_E2E_TIMEOUT", "60m"))
	if err != nil {
		t.Fatalf("VLLM_E2E_TIMEOUT: %v", err)
	}
	ns := fmt.Sprintf("moe-e2e-vllm-%04x", rand.IntN(1<<16))
	createNamespace(t, ctx, ns)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hf-token", Namespace: ns}, StringData: map[string]string{"token": token}}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}

	mxd := &servingv1alpha1.MixtralDeployment{
		ObjectMeta: metav1.ObjectMeta{Name: "vllm", Namespace: ns},
		Spec: servingv1alpha1.MixtralDeploymentSpec{
			Model: servingv1alpha1.ModelSpec{
				Preset:         servingv1alpha1.ModelPreset(envOr("VLLM_E2E_PRESET", "mixtral-8x7b-instruct")),
				ServedName:     "mixtral",
				TokenSecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hf-token"}, Key: "token"},
			},
			Accelerator:  servingv1alpha1.AcceleratorSpec{Type: servingv1alpha1.AcceleratorType(envOr("VLLM_E2E_ACCELERATOR", "h100-80gb"))},
			Quantization: servingv1alpha1.Quantization(envOr("VLLM_E2E_QUANTIZATION", "Auto")),
			Targets:      servingv1alpha1.TargetsSpec{MaxContextLength: 8192},
			Engine: servingv1alpha1.EngineSpec{
				Runtime:        servingv1alpha1.RuntimeVLLM,
				Image:          os.Getenv("VLLM_E2E_IMAGE"),
				StartupTimeout: &metav1.Duration{Duration: timeout},
			},
		},
	}
	if err := k8s.Create(ctx, mxd); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitAvailable(t, ctx, mxd, timeout)
	t.Logf("vLLM ready in %s", time.Since(start).Round(time.Second))

	cur := getMXD(t, ctx, client.ObjectKeyFromObject(mxd))
	plan := cur.Status.Plan
	t.Logf("plan: %s TP%d PP%d on %d node(s)", plan.Quantization, plan.TensorParallelism, plan.PipelineParallelism, plan.NodesPerReplica)
	if plan.NodesPerReplica <= 1 {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(mxd), d); err != nil {
			t.Fatal(err)
		}
		if args := strings.Join(d.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, fmt.Sprintf("--tensor-parallel-size %d", plan.TensorParallelism)) {
			t.Errorf("engine arguments %q do not carry the plan's tensor parallelism", args)
		}
	}

	ec := newClient(t, ctx, mxd)
	req := engineclient.ChatRequest{
		Model:       "mixtral",
		Messages:    []engineclient.Message{{Role: "user", Content: "What is a mixture of experts?"}},
		MaxTokens:   16,
		Temperature: ptr(0.0),
	}
	res, err := ec.Chat(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "mixtral" || res.Choices[0].Message.Content == "" || res.Usage.CompletionTokens != 16 {
		t.Errorf("answer %+v", res)
	}
	t.Logf("answer: %q", res.Choices[0].Message.Content)

	// The autoscaler reads vLLM's own /metrics: the scrape succeeds on the ready replicas.
	cur.Spec.Autoscaling = &servingv1alpha1.AutoscalingSpec{Enabled: true, MaxReplicas: ptr(int32(1))}
	if err := k8s.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the autoscaler reads vLLM's metrics", func() error {
		o := getMXD(t, ctx, client.ObjectKeyFromObject(mxd))
		if o.Status.Autoscaling == nil || o.Status.Autoscaling.ScrapedReplicas < 1 {
			return fmt.Errorf("status.autoscaling %+v", o.Status.Autoscaling)
		}
		return nil
	})
	testDelete(t, ctx, mxd)
}
