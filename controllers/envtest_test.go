package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/yaml"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/planner"
)

// loadSample reads one of config/samples into namespace ns.
func loadSample(t *testing.T, file, ns string) *servingv1alpha1.MixtralDeployment {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "config", "samples", file))
	if err != nil {
		t.Fatal(err)
	}
	obj := &servingv1alpha1.MixtralDeployment{}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		t.Fatalf("decoding %s: %v", file, err)
	}
	obj.Namespace = ns
	return obj
}

const (
	h100Sample = "serving_v1alpha1_mixtraldeployment_h100.yaml"
	cpuSample  = "serving_v1alpha1_mixtraldeployment_tiny_cpu.yaml"
)

// expectedPlan is what the planner answers for the object as stored (defaults applied).
func expectedPlan(g Gomega, obj *servingv1alpha1.MixtralDeployment) *servingv1alpha1.Plan {
	req, err := planRequest(obj.Spec)
	g.Expect(err).NotTo(HaveOccurred())
	res, err := planner.Solve(req)
	g.Expect(err).NotTo(HaveOccurred())
	return statusPlan(res.Plan)
}

func get[T client.Object](g Gomega, ns, name string, obj T) T {
	g.Expect(k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, obj)).To(Succeed())
	return obj
}

func condition(g Gomega, obj *servingv1alpha1.MixtralDeployment, t string) metav1.Condition {
	c := meta.FindStatusCondition(obj.Status.Conditions, t)
	g.Expect(c).NotTo(BeNil(), "condition %s", t)
	return *c
}

// waitPlanned waits until the reconciler has planned the current generation and created the
// Deployment, and returns the object as stored.
func waitPlanned(t *testing.T, ns, name string) *servingv1alpha1.MixtralDeployment {
	t.Helper()
	var obj *servingv1alpha1.MixtralDeployment
	eventually(t, func(g Gomega) {
		obj = get(g, ns, name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(obj.Status.ObservedGeneration).To(Equal(obj.Generation))
		g.Expect(condition(g, obj, servingv1alpha1.ConditionPlanned).Status).To(Equal(metav1.ConditionTrue))
		d := get(g, ns, name, &appsv1.Deployment{})
		g.Expect(d.Spec.Template.Labels[servingv1alpha1.LabelTemplateHash]).NotTo(BeEmpty())
	})
	return obj
}

func engineContainer(d *appsv1.Deployment) corev1.Container {
	return d.Spec.Template.Spec.Containers[0]
}

func TestEnvtestCreateGPUDeployment(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	obj := loadSample(t, h100Sample, ns)
	g := NewWithT(t)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())

	obj = waitPlanned(t, ns, obj.Name)
	plan := expectedPlan(g, obj)
	g.Expect(obj.Status.Plan).To(Equal(plan), "status.plan is the planner's answer for this spec")
	g.Expect(obj.Spec.Quantization).To(Equal(servingv1alpha1.QuantizationAuto), "defaults were applied")
	g.Expect(obj.Spec.Engine.Port).To(Equal(int32(8000)))
	g.Expect(obj.Spec.Replicas).To(Equal(ptr.To(plan.Replicas)), "spec.replicas was filled in from the plan")
	g.Expect(obj.Annotations).To(HaveKeyWithValue(servingv1alpha1.AnnotationPlannedReplicas, strconv.Itoa(int(plan.Replicas))))

	d := get(g, ns, obj.Name, &appsv1.Deployment{})
	c := engineContainer(d)
	gpus := int64(plan.GPUsPerReplica)
	g.Expect(gpus).To(BeNumerically(">", 0))
	g.Expect(ptr.To(c.Resources.Limits["nvidia.com/gpu"]).Value()).To(Equal(gpus))
	g.Expect(ptr.To(c.Resources.Requests["nvidia.com/gpu"]).Value()).To(Equal(gpus))
	g.Expect(c.Resources.Limits.Cpu().IsZero()).To(BeFalse())
	g.Expect(c.Resources.Limits.Memory().IsZero()).To(BeFalse())
	g.Expect(*d.Spec.Replicas).To(Equal(plan.Replicas))
	g.Expect(c.Image).To(Equal(envtestGPUImage), "GPU accelerators run the Vulkan engine image")
	g.Expect(c.Args).To(Equal([]string{
		"serve",
		"--model", "hf://mistralai/Mixtral-8x7B-Instruct-v0.1",
		"--quantization", strings.ToLower(plan.Quantization),
		"--tensor-parallel", strconv.Itoa(int(plan.TensorParallelism)),
		"--port", "8000",
		"--served-model-name", "mixtral-8x7b-instruct",
		"--ctx-size", "32768",
		"--max-num-seqs", strconv.Itoa(int(plan.BatchSize)),
		"--kv-cache-tokens", strconv.Itoa(int(max(plan.BatchSize*(1000+250), 32768))),
		"--device", "vulkan",
	}))
	g.Expect(c.Env).To(ContainElement(HaveField("Name", "HF_TOKEN")))
	g.Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "NVIDIA_DRIVER_CAPABILITIES", Value: "compute,utility,graphics"}))

	pod := d.Spec.Template.Spec
	g.Expect(pod.NodeSelector).To(Equal(map[string]string{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}))
	g.Expect(pod.Tolerations).To(ContainElement(corev1.Toleration{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}))

	g.Expect(c.StartupProbe.HTTPGet.Path).To(Equal("/ready"))
	g.Expect(c.StartupProbe.FailureThreshold*c.StartupProbe.PeriodSeconds).To(BeNumerically(">=", 15*60), "Mixtral-8x7B gets minutes to load")
	g.Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/ready"))
	g.Expect(c.LivenessProbe.HTTPGet.Path).To(Equal("/health"))
	g.Expect(c.Ports).To(ConsistOf(HaveField("Name", "http")))

	g.Expect(*pod.SecurityContext.RunAsNonRoot).To(BeTrue())
	g.Expect(pod.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
	g.Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
	g.Expect(*c.SecurityContext.AllowPrivilegeEscalation).To(BeFalse())
	g.Expect(c.SecurityContext.Capabilities.Drop).To(ConsistOf(corev1.Capability("ALL")))
	g.Expect(pod.Volumes).To(ContainElement(And(HaveField("Name", "dshm"), HaveField("EmptyDir.Medium", corev1.StorageMediumMemory))))
	g.Expect(pod.Volumes).To(ContainElement(HaveField("Name", "model-cache")))

	svc := get(g, ns, obj.Name, &corev1.Service{})
	g.Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP))
	g.Expect(svc.Spec.Ports).To(HaveLen(1))
	g.Expect(svc.Spec.Ports[0].Name).To(Equal("http"))
	g.Expect(svc.Spec.Ports[0].Port).To(Equal(int32(8000)))
	g.Expect(svc.Spec.Selector).To(Equal(d.Spec.Selector.MatchLabels))

	pdb := get(g, ns, obj.Name, &policyv1.PodDisruptionBudget{})
	g.Expect(pdb.Spec.MaxUnavailable.IntValue()).To(Equal(1))
	g.Expect(pdb.Spec.Selector.MatchLabels).To(Equal(d.Spec.Selector.MatchLabels))

	// Status and events.
	g.Expect(obj.Status.Model).To(Equal("mixtral-8x7b-instruct"))
	g.Expect(obj.Status.Selector).To(Equal(servingv1alpha1.LabelMixtralDeployment + "=" + obj.Name))
	g.Expect(obj.Status.Endpoint).To(Equal("http://" + obj.Name + "." + ns + ".svc:8000/v1"))
	g.Expect(obj.Status.GPUs).To(Equal(plan.GPUsPerReplica * plan.Replicas))
	g.Expect(condition(g, obj, servingv1alpha1.ConditionPlanned).Reason).To(Equal(servingv1alpha1.ReasonPlanFound))
	g.Expect(condition(g, obj, servingv1alpha1.ConditionAvailable).Reason).To(Equal(servingv1alpha1.ReasonNoReplicasReady))
	g.Expect(condition(g, obj, servingv1alpha1.ConditionProgressing).Status).To(Equal(metav1.ConditionTrue))
	g.Expect(condition(g, obj, servingv1alpha1.ConditionDegraded).Status).To(Equal(metav1.ConditionFalse))
	eventually(t, func(g Gomega) {
		evs := recordedEvents(g, ns, obj.Name)
		g.Expect(evs).To(ContainElement(And(
			HaveField("Type", corev1.EventTypeNormal),
			HaveField("Reason", servingv1alpha1.EventPlanChanged),
			HaveField("Note", ContainSubstring(plan.Quantization+" TP"+strconv.Itoa(int(plan.TensorParallelism)))),
		)))
	})
}

func TestEnvtestCreateCPUDeployment(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	obj := loadSample(t, cpuSample, ns)
	g := NewWithT(t)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	obj = waitPlanned(t, ns, obj.Name)
	plan := expectedPlan(g, obj)
	g.Expect(obj.Status.Plan).To(Equal(plan))
	g.Expect(obj.Status.GPUs).To(BeZero())

	d := get(g, ns, obj.Name, &appsv1.Deployment{})
	c := engineContainer(d)
	for name := range c.Resources.Limits {
		g.Expect(string(name)).NotTo(ContainSubstring("gpu"), "the cpu accelerator requests no GPU")
	}
	for name := range c.Resources.Requests {
		g.Expect(string(name)).NotTo(ContainSubstring("gpu"))
	}
	g.Expect(c.Resources.Requests.Cpu().String()).To(Equal("1"), "the sample's CPU request wins")
	g.Expect(d.Spec.Template.Spec.NodeSelector).To(BeEmpty())
	g.Expect(d.Spec.Template.Spec.Tolerations).To(BeEmpty())
	g.Expect(*d.Spec.Replicas).To(Equal(int32(1)))
	g.Expect(flagValue(c.Args, "--model")).To(Equal("pvc://moe-models/tiny-mixtral.gguf"))
	g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "model", MountPath: "/models/pvc/moe-models", ReadOnly: true}))
	g.Expect(d.Spec.Template.Spec.Volumes).To(ContainElement(And(
		HaveField("Name", "model"),
		HaveField("PersistentVolumeClaim", Equal(&corev1.PersistentVolumeClaimVolumeSource{ClaimName: "moe-models", ReadOnly: true})),
	)))
}

func TestEnvtestUpdateReplansAndRolls(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	obj := loadSample(t, h100Sample, ns)
	g := NewWithT(t)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	obj = waitPlanned(t, ns, obj.Name)
	before := *obj.Status.Plan
	hashBefore := get(g, ns, obj.Name, &appsv1.Deployment{}).Spec.Template.Labels[servingv1alpha1.LabelTemplateHash]

	// Find a tighter inter-token latency for which the planner picks a different per-replica
	// configuration (batch size, precision or tensor parallelism), so the pods must roll.
	var itl time.Duration
	for ms := 40; ms >= 5; ms -= 5 {
		next := obj.DeepCopy()
		next.Spec.Targets.InterTokenLatency = &metav1.Duration{Duration: time.Duration(ms) * time.Millisecond}
		next.Spec.Targets.OutputTokensPerSecond = ptr.To[int64](20000)
		p := expectedPlan(g, next)
		if p.BatchSize != before.BatchSize || p.Quantization != before.Quantization || p.TensorParallelism != before.TensorParallelism {
			itl = next.Spec.Targets.InterTokenLatency.Duration
			break
		}
	}
	g.Expect(itl).NotTo(BeZero(), "some tighter ITL changes the plan")

	patch := client.MergeFrom(obj.DeepCopy())
	obj.Spec.Targets.InterTokenLatency = &metav1.Duration{Duration: itl}
	obj.Spec.Targets.OutputTokensPerSecond = ptr.To[int64](20000)
	g.Expect(k8sClient.Patch(ctx, obj, patch)).To(Succeed())

	obj = waitPlanned(t, ns, obj.Name)
	after := expectedPlan(g, obj)
	g.Expect(obj.Status.Plan).To(Equal(after))
	g.Expect(*obj.Status.Plan).NotTo(Equal(before))
	d := get(g, ns, obj.Name, &appsv1.Deployment{})
	g.Expect(d.Spec.Template.Labels[servingv1alpha1.LabelTemplateHash]).NotTo(Equal(hashBefore), "the pod template rolls")
	g.Expect(*d.Spec.Replicas).To(Equal(after.Replicas))
	g.Expect(flagValue(engineContainer(d).Args, "--max-num-seqs")).To(Equal(strconv.Itoa(int(after.BatchSize))))
	g.Expect(flagValue(engineContainer(d).Args, "--quantization")).To(Equal(strings.ToLower(after.Quantization)))
	eventually(t, func(g Gomega) {
		g.Expect(recordedEvents(g, ns, obj.Name)).To(ContainElement(And(
			HaveField("Reason", servingv1alpha1.EventPlanChanged),
			HaveField("Note", HavePrefix("Re-planned from "+before.Quantization)),
		)))
	})
}

func TestEnvtestInfeasibleTargets(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	tests := []struct {
		name       string
		mutate     func(o *servingv1alpha1.MixtralDeployment)
		wantReason string
		wantText   string
	}{
		{
			name: "a model that cannot fit",
			mutate: func(o *servingv1alpha1.MixtralDeployment) {
				o.Spec.Model.Preset = servingv1alpha1.PresetMixtral8x22B
				o.Spec.Accelerator.Type = servingv1alpha1.AcceleratorL4
				o.Spec.Quantization = servingv1alpha1.QuantizationBF16
				o.Spec.TensorParallelism = 1
				o.Spec.Targets = servingv1alpha1.TargetsSpec{}
			},
			wantReason: servingv1alpha1.ReasonTargetsInfeasible,
			wantText:   "usable",
		},
		{
			name: "a latency no configuration reaches",
			mutate: func(o *servingv1alpha1.MixtralDeployment) {
				o.Spec.Accelerator.Type = servingv1alpha1.AcceleratorA100_40GB
				o.Spec.Targets.InterTokenLatency = &metav1.Duration{Duration: time.Millisecond}
			},
			wantReason: servingv1alpha1.ReasonTargetsInfeasible,
			wantText:   "ITL",
		},
		{
			name: "a context longer than the model's",
			mutate: func(o *servingv1alpha1.MixtralDeployment) {
				o.Spec.Accelerator.Type = servingv1alpha1.AcceleratorH200
				o.Spec.Targets.MaxContextLength = 65536
			},
			wantReason: servingv1alpha1.ReasonInvalidSpec,
			wantText:   "exceeds the model's 32768 tokens",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			obj := loadSample(t, h100Sample, ns)
			obj.Name = "infeasible-" + strconv.Itoa(i)
			tt.mutate(obj)
			g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
			var cond metav1.Condition
			eventually(t, func(g Gomega) {
				got := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
				g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
				cond = condition(g, got, servingv1alpha1.ConditionPlanned)
				g.Expect(cond.Status).To(Equal(metav1.ConditionFalse))
				g.Expect(condition(g, got, servingv1alpha1.ConditionAvailable).Reason).To(Equal(servingv1alpha1.ReasonNotPlanned))
				g.Expect(got.Status.Plan).To(BeNil())
			})
			g.Expect(cond.Reason).To(Equal(tt.wantReason))
			g.Expect(cond.Message).To(ContainSubstring(tt.wantText))
			err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: obj.Name}, &appsv1.Deployment{})
			g.Expect(client.IgnoreNotFound(err)).To(Succeed())
			g.Expect(err).To(HaveOccurred(), "no workload runs without a plan")
			eventually(t, func(g Gomega) {
				g.Expect(recordedEvents(g, ns, obj.Name)).To(ContainElement(And(
					HaveField("Type", corev1.EventTypeWarning),
					HaveField("Reason", servingv1alpha1.EventPlanInfeasible),
					HaveField("Note", cond.Message),
				)))
			})
		})
	}

	// No hot requeue: an infeasible spec is planned once per change, not retried.
	t.Run("is not retried", func(t *testing.T) {
		g := NewWithT(t)
		calls := solveCount("l4")
		g.Expect(calls).To(BeNumerically(">=", 1))
		g.Consistently(func() int64 { return solveCount("l4") }).
			WithTimeout(3 * time.Second).WithPolling(250 * time.Millisecond).Should(Equal(calls))
	})
}

func TestEnvtestFeasibleToInfeasibleKeepsTheWorkload(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	obj := loadSample(t, h100Sample, ns)
	g := NewWithT(t)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	obj = waitPlanned(t, ns, obj.Name)
	plan := *obj.Status.Plan
	rv := get(g, ns, obj.Name, &appsv1.Deployment{}).ResourceVersion

	patch := client.MergeFrom(obj.DeepCopy())
	obj.Spec.Targets.InterTokenLatency = &metav1.Duration{Duration: time.Millisecond}
	g.Expect(k8sClient.Patch(ctx, obj, patch)).To(Succeed())
	eventually(t, func(g Gomega) {
		got := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		cond := condition(g, got, servingv1alpha1.ConditionPlanned)
		g.Expect(cond.Reason).To(Equal(servingv1alpha1.ReasonTargetsInfeasible))
		g.Expect(cond.Message).To(ContainSubstring("keeps its previous plan"))
		g.Expect(*got.Status.Plan).To(Equal(plan))
	})
	g.Expect(get(g, ns, obj.Name, &appsv1.Deployment{}).ResourceVersion).To(Equal(rv), "the running Deployment is left alone")
}

func TestEnvtestScaleSubresource(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	obj := loadSample(t, h100Sample, ns)
	g := NewWithT(t)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	obj = waitPlanned(t, ns, obj.Name)

	scale := &autoscalingv1.Scale{}
	g.Expect(k8sClient.SubResource("scale").Get(ctx, obj, scale)).To(Succeed())
	g.Expect(scale.Status.Selector).To(Equal(servingv1alpha1.LabelMixtralDeployment + "=" + obj.Name))

	g.Expect(scale.Spec.Replicas).To(Equal(obj.Status.Plan.Replicas))

	// kubectl scale and the HPA write spec.replicas through the scale subresource
	// (retrying when the operator's status writes made the read stale, as they do).
	scaleTo(t, ns, obj.Name, 3, "kubectl")
	eventually(t, func(g Gomega) {
		g.Expect(*get(g, ns, obj.Name, &appsv1.Deployment{}).Spec.Replicas).To(Equal(int32(3)))
	})
	got := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
	g.Expect(*got.Spec.Replicas).To(Equal(int32(3)))

	// The Deployment controller would report the pods; envtest has none, so do it here.
	d := get(g, ns, obj.Name, &appsv1.Deployment{})
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 3, UpdatedReplicas: 3, ReadyReplicas: 2, AvailableReplicas: 2}
	g.Expect(k8sClient.Status().Update(ctx, d)).To(Succeed())
	eventually(t, func(g Gomega) {
		s := &autoscalingv1.Scale{}
		g.Expect(k8sClient.SubResource("scale").Get(ctx, obj, s)).To(Succeed())
		g.Expect(s.Spec.Replicas).To(Equal(int32(3)))
		g.Expect(s.Status.Replicas).To(Equal(int32(3)))
		got := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(got.Status.ReadyReplicas).To(Equal(int32(2)))
		g.Expect(got.Status.GPUs).To(Equal(3 * got.Status.Plan.GPUsPerReplica))
		planned := condition(g, got, servingv1alpha1.ConditionPlanned)
		if got.Status.Plan.Replicas != 3 {
			g.Expect(planned.Message).To(ContainSubstring("spec.replicas (3) overrides"))
		}
	})

	// A re-plan does not fight the scaler: spec.replicas stays where it was scaled to.
	got = get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.Targets.OutputTokensPerSecond = ptr.To[int64](40000)
	g.Expect(k8sClient.Patch(ctx, got, patch)).To(Succeed())
	eventually(t, func(g Gomega) {
		got := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		g.Expect(got.Status.Plan).To(Equal(expectedPlan(g, got)))
		g.Expect(got.Status.Plan.Replicas).NotTo(Equal(int32(3)))
		g.Expect(*got.Spec.Replicas).To(Equal(int32(3)))
	})
	g.Expect(*get(g, ns, obj.Name, &appsv1.Deployment{}).Spec.Replicas).To(Equal(int32(3)))
}

func TestEnvtestStatusFollowsTheDeployment(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	obj := loadSample(t, h100Sample, ns)
	g := NewWithT(t)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	obj = waitPlanned(t, ns, obj.Name)
	n := obj.Status.Plan.Replicas

	d := get(g, ns, obj.Name, &appsv1.Deployment{})
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
		Conditions: []appsv1.DeploymentCondition{{
			Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable",
			LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now(),
		}},
	}
	g.Expect(k8sClient.Status().Update(ctx, d)).To(Succeed())
	eventually(t, func(g Gomega) {
		got := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(got.Status.ReadyReplicas).To(Equal(n))
		g.Expect(condition(g, got, servingv1alpha1.ConditionAvailable).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(condition(g, got, servingv1alpha1.ConditionProgressing).Reason).To(Equal(servingv1alpha1.ReasonRolloutComplete))
		g.Expect(condition(g, got, servingv1alpha1.ConditionDegraded).Status).To(Equal(metav1.ConditionFalse))
	})

	d = get(g, ns, obj.Name, &appsv1.Deployment{})
	d.Status.ReadyReplicas, d.Status.AvailableReplicas, d.Status.UpdatedReplicas = 0, 0, 0
	d.Status.Conditions = []appsv1.DeploymentCondition{{
		Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded",
		Message: `ReplicaSet "x" has timed out progressing.`, LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now(),
	}}
	g.Expect(k8sClient.Status().Update(ctx, d)).To(Succeed())
	eventually(t, func(g Gomega) {
		got := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		degraded := condition(g, got, servingv1alpha1.ConditionDegraded)
		g.Expect(degraded.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(degraded.Reason).To(Equal(servingv1alpha1.ReasonRolloutStalled))
		g.Expect(condition(g, got, servingv1alpha1.ConditionAvailable).Reason).To(Equal(servingv1alpha1.ReasonNoReplicasReady))
	})
}

func TestEnvtestOwnershipAndIdempotence(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	obj := loadSample(t, h100Sample, ns)
	g := NewWithT(t)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	obj = waitPlanned(t, ns, obj.Name)

	children := []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &policyv1.PodDisruptionBudget{}}
	for _, child := range children {
		get(g, ns, obj.Name, child)
		owner := metav1.GetControllerOf(child)
		g.Expect(owner).NotTo(BeNil(), "%T has a controller", child)
		g.Expect(owner.Kind).To(Equal("MixtralDeployment"))
		g.Expect(owner.UID).To(Equal(obj.UID))
		g.Expect(*owner.BlockOwnerDeletion).To(BeTrue())
	}

	// Once the manager has settled, a further reconcile writes nothing: every
	// resourceVersion stays as it was. This reconciler reads the API server directly, so
	// no cache lag can hide a write.
	versions := func(g Gomega) []string {
		out := []string{get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{}).ResourceVersion}
		for _, child := range children {
			out = append(out, get(g, ns, obj.Name, child).GetResourceVersion())
		}
		return out
	}
	var settled []string
	eventually(t, func(g Gomega) {
		first := versions(g)
		g.Consistently(func(g Gomega) { g.Expect(versions(g)).To(Equal(first)) }).
			WithTimeout(time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		settled = first
	})
	// The API server drops no-op updates without a new resourceVersion, so the writes are
	// also counted at the client: a second pass must not even send one.
	counting, writes := writeRecordingClient(g)
	direct := &MixtralDeploymentReconciler{Client: counting, EngineImage: envtestImage, EngineGPUImage: envtestGPUImage}
	for range 2 {
		res, err := direct.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: obj.Name}})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(res).To(Equal(ctrl.Result{}))
		g.Expect(*writes).To(BeEmpty(), "a pass over a settled object sends no write")
		g.Expect(versions(g)).To(Equal(settled))
	}
}

func TestEnvtestForeignChildIsNotAdopted(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g := NewWithT(t)
	foreign := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "mixtral-8x7b-instruct", Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "web", Port: 80}}},
	}
	g.Expect(k8sClient.Create(ctx, foreign)).To(Succeed())
	obj := loadSample(t, h100Sample, ns)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	eventually(t, func(g Gomega) {
		got := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		degraded := condition(g, got, servingv1alpha1.ConditionDegraded)
		g.Expect(degraded.Reason).To(Equal(servingv1alpha1.ReasonChildConflict))
		g.Expect(degraded.Message).To(ContainSubstring(`Service named "mixtral-8x7b-instruct"`))
	})
	svc := get(g, ns, foreign.Name, &corev1.Service{})
	g.Expect(svc.OwnerReferences).To(BeEmpty())
	g.Expect(svc.Spec.Ports[0].Name).To(Equal("web"))
}

func TestEnvtestSamplesAreValid(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	entries, err := os.ReadDir(filepath.Join("..", "config", "samples"))
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, e := range entries {
		if e.Name() == "kustomization.yaml" || filepath.Ext(e.Name()) != ".yaml" {
			continue
		}
		seen++
		t.Run(e.Name(), func(t *testing.T) {
			obj := loadSample(t, e.Name(), ns)
			err := k8sClient.Create(ctx, obj, client.DryRunAll, client.FieldValidation("Strict"))
			NewWithT(t).Expect(err).NotTo(HaveOccurred())
		})
	}
	NewWithT(t).Expect(seen).To(BeNumerically(">=", 2))
}

// TestEnvtestConfigManifestsAreValid submits the install manifests under config/rbac and
// config/manager to the API server (dry run, strict field validation), so a typo in a field
// name or a schema violation fails here rather than at install time. Objects in the
// kustomize placeholder namespace "system" go to a test namespace.
func TestEnvtestConfigManifestsAreValid(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	files, err := filepath.Glob(filepath.Join("..", "config", "rbac", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join("..", "config", "manager", "manager.yaml"))
	count := 0
	for _, file := range files {
		if filepath.Base(file) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(data), "\n---\n") {
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
				t.Fatalf("%s document %d: %v", file, i, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			count++
			t.Run(filepath.Base(file)+"/"+obj.GetKind()+"/"+obj.GetName(), func(t *testing.T) {
				if obj.GetNamespace() == "system" {
					obj.SetNamespace(ns)
				}
				if obj.GetKind() == "Namespace" {
					obj.SetName(ns + "-install")
				}
				err := k8sClient.Create(ctx, obj, client.DryRunAll, client.FieldValidation("Strict"))
				NewWithT(t).Expect(err).NotTo(HaveOccurred())
			})
		}
	}
	NewWithT(t).Expect(count).To(BeNumerically(">=", 10))
}

// writeRecordingClient is a direct (uncached) client that records every write it sends:
// creates, updates, patches and deletes, of objects and of their subresources.
func writeRecordingClient(g Gomega) (client.WithWatch, *[]string) {
	writes := new([]string)
	record := func(verb string, obj client.Object) {
		*writes = append(*writes, fmt.Sprintf("%s %T %s", verb, obj, obj.GetName()))
	}
	direct, err := client.NewWithWatch(restConfig, client.Options{Scheme: testScheme})
	g.Expect(err).NotTo(HaveOccurred())
	return interceptor.NewClient(direct, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			record("create", obj)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			record("update", obj)
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			record("patch", obj)
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			record("delete", obj)
			return c.Delete(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			record("update/"+sub, obj)
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			record("patch/"+sub, obj)
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}), writes
}
