package controllers

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	lwsv1 "sigs.k8s.io/lws/api/leaderworkerset/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

const (
	vllmSample      = "serving_v1alpha1_mixtraldeployment_vllm_h100.yaml"
	multiNodeSample = "serving_v1alpha1_mixtraldeployment_vllm_multinode_l4.yaml"
)

func TestEnvtestVLLMDeploymentRunsTheOpenAIServerWithThePlansArguments(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g := NewWithT(t)
	obj := loadSample(t, vllmSample, ns)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	obj = waitPlanned(t, ns, obj.Name)
	plan := obj.Status.Plan
	g.Expect(plan.Quantization).To(BeElementOf("BF16", "FP8"), "vLLM quantizes full-precision weights only to FP8")

	d := get(g, ns, obj.Name, &appsv1.Deployment{})
	c := engineContainer(d)
	g.Expect(c.Image).To(Equal(DefaultVLLMImage))
	g.Expect(c.Command).To(Equal([]string{"python3", "-m", "vllm.entrypoints.openai.api_server"}))
	g.Expect(c.Args).To(Equal(wantMixtral8x7BVLLMArgs(*plan)))
	g.Expect(c.LivenessProbe.HTTPGet.Path).To(Equal("/health"))
	g.Expect(c.Env).To(ContainElement(HaveField("Name", "HF_TOKEN")))
	gpus := c.Resources.Limits["nvidia.com/gpu"]
	g.Expect(gpus.Value()).To(Equal(int64(plan.GPUsPerReplica)))

	// The same object on the moe runtime plans with its own profile and runs `moe serve`.
	eventually(t, func(g Gomega) {
		cur := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		cur.Spec.Engine.Runtime = servingv1alpha1.RuntimeMoE
		g.Expect(k8sClient.Update(ctx, cur)).To(Succeed())
	})
	eventually(t, func(g Gomega) {
		c := engineContainer(get(g, ns, obj.Name, &appsv1.Deployment{}))
		g.Expect(c.Command).To(BeEmpty())
		g.Expect(c.Args[0]).To(Equal("serve"))
		g.Expect(c.Image).To(Equal(envtestGPUImage))
	})
}

func TestEnvtestVLLMRefusesWhatItCannotServe(t *testing.T) {
	requireEnvtest(t)
	ns := newNamespace(t)
	for _, tt := range []struct {
		name   string
		mutate func(*servingv1alpha1.MixtralDeployment)
		want   string
	}{
		{"cpu", func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Accelerator.Type = servingv1alpha1.AcceleratorCPU
		}, "engine.runtime vllm runs on GPUs"},
		{"https without a cache", func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Model = servingv1alpha1.ModelSpec{URI: "https://example.com/m.gguf", Shape: &servingv1alpha1.ModelShape{Preset: servingv1alpha1.PresetMixtral8x7B}}
		}, "an https:// model needs model.cache"},
		{"one file of a repository", func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Model = servingv1alpha1.ModelSpec{URI: "hf://org/repo/m.Q4_K_M.gguf", Shape: &servingv1alpha1.ModelShape{Preset: servingv1alpha1.PresetMixtral8x7B}}
		}, "not one file of one"},
		{"a flag the plan sets", func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.ExtraArgs = []string{"--tensor-parallel-size=4"}
		}, "with runtime vllm the operator sets them from the plan"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			obj := loadSample(t, vllmSample, ns)
			tt.mutate(obj)
			err := k8sClient.Create(context.Background(), obj)
			if err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("create: %v, want Invalid saying %q", err, tt.want)
			}
		})
	}
}

// lwsCRDs is the directory of the LeaderWorkerSet CRDs in the sigs.k8s.io/lws module
// this project builds against.
func lwsCRDs(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/lws").Output()
	if err != nil {
		t.Fatalf("locating the sigs.k8s.io/lws module: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "bases")
}

// TestEnvtestMultiNodeRunsAsLeaderWorkerSet runs in order: without the LWS CRD the
// object says what is missing; once the real CRD (from the module) is installed, the
// operator creates the LeaderWorkerSet, replaces a single-node Deployment with it, and
// scale and status work through it.
func TestEnvtestMultiNodeRunsAsLeaderWorkerSet(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g := NewWithT(t)
	obj := loadSample(t, multiNodeSample, ns)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())

	eventually(t, func(g Gomega) {
		cur := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(cur.Status.Plan).NotTo(BeNil())
		g.Expect(cur.Status.Plan.NodesPerReplica).To(Equal(int32(2)))
		g.Expect(cur.Status.Plan.GPUsPerReplica).To(Equal(int32(16)))
		degraded := condition(g, cur, servingv1alpha1.ConditionDegraded)
		g.Expect(degraded.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(degraded.Reason).To(Equal(servingv1alpha1.ReasonLeaderWorkerSetMissing))
		g.Expect(degraded.Message).To(ContainSubstring("needs the LeaderWorkerSet API (leaderworkerset.x-k8s.io/v1)"))
		g.Expect(condition(g, cur, servingv1alpha1.ConditionAvailable).Reason).To(Equal(servingv1alpha1.ReasonLeaderWorkerSetMissing))
	})
	err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), &appsv1.Deployment{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "a multi-node plan never runs as a Deployment: %v", err)

	// A single-node plan of the same model (FP8 fits 8 L4s) runs as a Deployment.
	eventually(t, func(g Gomega) {
		cur := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		cur.Spec.Quantization = servingv1alpha1.QuantizationFP8
		g.Expect(k8sClient.Update(ctx, cur)).To(Succeed())
	})
	waitPlanned(t, ns, obj.Name)

	_, err = envtest.InstallCRDs(restConfig, envtest.CRDInstallOptions{Paths: []string{lwsCRDs(t)}, ErrorIfPathMissing: true})
	g.Expect(err).NotTo(HaveOccurred())

	// Back to BF16: the operator creates the LeaderWorkerSet and removes the Deployment.
	eventually(t, func(g Gomega) {
		cur := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		cur.Spec.Quantization = servingv1alpha1.QuantizationBF16
		g.Expect(k8sClient.Update(ctx, cur)).To(Succeed())
	})
	var l *lwsv1.LeaderWorkerSet
	eventually(t, func(g Gomega) {
		l = get(g, ns, obj.Name, &lwsv1.LeaderWorkerSet{})
		g.Expect(l.Spec.LeaderWorkerTemplate.Size).To(Equal(ptr.To(int32(2))))
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), &appsv1.Deployment{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the single-node Deployment is gone: %v", err)
	})
	g.Expect(metav1.IsControlledBy(l, get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{}))).To(BeTrue())
	leader := l.Spec.LeaderWorkerTemplate.LeaderTemplate.Spec.Containers[0]
	g.Expect(flagValue(leader.Args, "--pipeline-parallel-size")).To(Equal("2"))
	g.Expect(flagValue(leader.Args, "--tensor-parallel-size")).To(Equal("8"))
	g.Expect(flagValue(leader.Args, "--distributed-executor-backend")).To(Equal("ray"))
	gpus := leader.Resources.Limits["nvidia.com/gpu"]
	g.Expect(gpus.Value()).To(Equal(int64(8)))
	svc := get(g, ns, obj.Name, &corev1.Service{})
	g.Expect(svc.Spec.Selector).To(HaveKeyWithValue(lwsv1.WorkerIndexLabelKey, "0"), "only leaders serve")

	// Scale: kubectl scale reaches the groups; the selector names the leaders.
	scaleTo(t, ns, obj.Name, 2, "kubectl")
	eventually(t, func(g Gomega) {
		g.Expect(get(g, ns, obj.Name, &lwsv1.LeaderWorkerSet{}).Spec.Replicas).To(Equal(ptr.To(int32(2))))
		scale := &autoscalingv1.Scale{}
		g.Expect(k8sClient.SubResource("scale").Get(ctx, obj, scale)).To(Succeed())
		g.Expect(scale.Status.Selector).To(ContainSubstring(lwsv1.WorkerIndexLabelKey + "=0"))
	})

	// Status follows the LeaderWorkerSet's groups (no LWS controller runs here: the
	// test writes what it would).
	eventually(t, func(g Gomega) {
		cur := get(g, ns, obj.Name, &lwsv1.LeaderWorkerSet{})
		cur.Status.Replicas, cur.Status.ReadyReplicas, cur.Status.UpdatedReplicas = 2, 1, 2
		g.Expect(k8sClient.Status().Update(ctx, cur)).To(Succeed())
	})
	eventually(t, func(g Gomega) {
		cur := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(cur.Status.Replicas).To(Equal(int32(2)))
		g.Expect(cur.Status.ReadyReplicas).To(Equal(int32(1)))
		g.Expect(cur.Status.GPUs).To(Equal(int32(32)))
		g.Expect(condition(g, cur, servingv1alpha1.ConditionAvailable).Status).To(Equal(metav1.ConditionTrue))
	})

	// A spec the planner refuses keeps the running groups, and status still reads them.
	eventually(t, func(g Gomega) {
		cur := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		cur.Spec.Targets.InterTokenLatency = &metav1.Duration{Duration: time.Millisecond}
		g.Expect(k8sClient.Update(ctx, cur)).To(Succeed())
	})
	eventually(t, func(g Gomega) {
		cur := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
		g.Expect(condition(g, cur, servingv1alpha1.ConditionPlanned).Status).To(Equal(metav1.ConditionFalse))
		g.Expect(cur.Status.ReadyReplicas).To(Equal(int32(1)))
		g.Expect(condition(g, cur, servingv1alpha1.ConditionAvailable).Status).To(Equal(metav1.ConditionTrue))
	})
}

// TestAutoscalerReadsOnlyTheLeadersOfMultiNodeReplicas: a multi-node replica's load is on
// its leader, the one pod that serves; its workers have no API and are never scraped.
func TestAutoscalerReadsOnlyTheLeadersOfMultiNodeReplicas(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "groups"
	h.createFrom(multiNodeSample, name, 1, autoscaling(servingv1alpha1.MetricConcurrency, "4", 1, 8))
	leader := newFakeEngine(t)
	leader.set(6, 2) // 8 requests on the one replica, twice the target
	h.addPodAt(name, true, leader.srv.Listener.Addr().String(), map[string]string{lwsv1.WorkerIndexLabelKey: "0"})
	// A worker answers nothing: scraping it would fail the reading and hold.
	h.addPodAt(name, true, "127.0.0.1:1", map[string]string{lwsv1.WorkerIndexLabelKey: "1"})

	obj := h.tick(name, time.Second)
	g.Expect(obj.Status.Plan.NodesPerReplica).To(Equal(int32(2)))
	g.Expect(obj.Status.Selector).To(ContainSubstring(lwsv1.WorkerIndexLabelKey + "=0"))
	as := obj.Status.Autoscaling
	g.Expect(as.ScrapedReplicas).To(Equal(int32(1)))
	g.Expect(as.ObservedValue.String()).To(Equal("8"))
	g.Expect(as.RecommendedReplicas).To(Equal(int32(2)))
	g.Expect(condition(g, obj, servingv1alpha1.ConditionScalingActive).Status).To(Equal(metav1.ConditionTrue))
}
