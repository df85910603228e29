//go:build e2e

// Package e2e tests the user's story against a real cluster: the one $KUBECONFIG names, with
// the operator installed from the chart and the images loaded (`make test-e2e` does both on
// the local cluster; `make test-e2e-kind` on kind). A MixtralDeployment is applied, planned,
// and served by real engine pods; requests go through its Service; a spec change rolls out
// under load without a failed request; GPUs (emulated on the local cluster and kind) are
// requested and scheduled; deletion cleans up.
//
// Settings: ENGINE_IMG (the engine image the operator runs, for the image assertion),
// ENGINE_LAVAPIPE_IMG (the Vulkan engine on lavapipe, which the GPU test runs),
// E2E_KEEP=1 (keep the test namespace for inspection), E2E_NAMESPACE (use this namespace).
package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/test/e2e/engineclient"
)

const (
	samplesDir = "../../config/samples"
	demoSample = "serving_v1alpha1_mixtraldeployment_demo_cpu.yaml"
	// localVolumes is where the local cluster's hostPath volumes live (hack/local-cluster).
	localVolumes = "/var/lib/moe-local-cluster/volumes"
	modelClaim   = "moe-models"
)

var (
	cfg       *rest.Config
	k8s       client.Client
	clientset *kubernetes.Clientset
	ns        string
)

func TestMain(m *testing.M) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(servingv1alpha1.AddToScheme(scheme))
	var err error
	cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	if err == nil {
		k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	}
	if err == nil {
		clientset, err = kubernetes.NewForConfig(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: no cluster (set KUBECONFIG; `make test-e2e` brings up the local cluster):", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// TestE2E is the story in order; each step needs the ones before it.
func TestE2E(t *testing.T) {
	ctx := context.Background()
	requireOperator(t, ctx)
	ns = os.Getenv("E2E_NAMESPACE")
	if ns == "" {
		ns = fmt.Sprintf("moe-e2e-%04x", rand.IntN(1<<16))
	}
	createNamespace(t, ctx, ns)
	start := time.Now()
	ensureModelVolume(t, ctx, ns)
	t.Logf("model volume ready in %s", time.Since(start).Round(time.Second))

	mxd := loadSample(t, demoSample)
	mxd.Name = "e2e-cpu"
	mxd.Namespace = ns
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}
	step("apply: the plan appears in status", func(t *testing.T) { testPlan(t, ctx, mxd) })
	step("the pods really run the engine", func(t *testing.T) { testEnginePods(t, ctx, mxd) })
	step("chat completion through the Service", func(t *testing.T) { testChat(t, ctx, mxd) })
	step("gateway: one endpoint for two models, an engine killed under load", func(t *testing.T) { testGateway(t, ctx, mxd) })
	step("autoscaling under sustained load", func(t *testing.T) { testAutoscaling(t, ctx, mxd) })
	step("a spec change rolls out with no failed requests", func(t *testing.T) { testRollout(t, ctx, mxd) })
	step("chaos: pods and the manager killed, evictions, bad objects", func(t *testing.T) { testChaos(t, ctx, mxd) })
	step("chaos: a truncated model file is reported and recovers once fixed", func(t *testing.T) { testTruncatedModel(t, ctx) })
	step("GPU requests schedule on emulated GPUs", func(t *testing.T) { testGPU(t, ctx) })
	step("delete cleans up", func(t *testing.T) { testDelete(t, ctx, mxd) })
}

// requireOperator fails unless the CRD is served and the manager is available.
func requireOperator(t *testing.T, ctx context.Context) {
	t.Helper()
	var list servingv1alpha1.MixtralDeploymentList
	if err := k8s.List(ctx, &list, client.Limit(1)); err != nil {
		t.Fatalf("the MixtralDeployment API is not served (install the chart: make deploy): %v", err)
	}
	deps, err := clientset.AppsV1().Deployments("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=moe-operator,app.kubernetes.io/component=manager"})
	if err != nil || len(deps.Items) == 0 {
		t.Fatalf("no moe-operator manager Deployment (install the chart: make deploy): %v", err)
	}
	for _, d := range deps.Items {
		if d.Status.AvailableReplicas == 0 {
			t.Fatalf("the manager Deployment %s/%s has no available replica", d.Namespace, d.Name)
		}
	}
}

func createNamespace(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		// The engine pods and the model Job must pass Pod Security "restricted".
		"pod-security.kubernetes.io/enforce": "restricted",
	}}}
	if err := k8s.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("E2E_KEEP") == "1" || t.Failed() {
			t.Logf("keeping namespace %s for inspection", name)
			return
		}
		_ = k8s.Delete(context.Background(), obj)
		pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: modelClaim + "-" + name}}
		_ = k8s.Delete(context.Background(), pv)
		_ = os.RemoveAll(filepath.Join(localVolumes, pv.Name))
	})
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func loadSample(t *testing.T, file string) *servingv1alpha1.MixtralDeployment {
	t.Helper()
	var obj servingv1alpha1.MixtralDeployment
	readYAML(t, filepath.Join(samplesDir, file), &obj)
	return &obj
}

// ensureModelVolume makes the moe-models claim the samples read and fills it with the Job
// in config/samples/model-volume, as `make demo` does. A cluster without a default
// StorageClass gets a hostPath PersistentVolume, which only works on the local cluster
// (the test runs on its node).
func ensureModelVolume(t *testing.T, ctx context.Context, ns string) {
	t.Helper()
	var pvc corev1.PersistentVolumeClaim
	readYAML(t, filepath.Join(samplesDir, "model-volume", "pvc.yaml"), &pvc)
	pvc.Namespace = ns
	if !hasDefaultStorageClass(t, ctx) {
		if _, err := os.Stat(filepath.Dir(localVolumes)); err != nil {
			t.Fatal("the cluster has no default StorageClass and is not the local cluster: give it one for the model volume")
		}
		pvName := modelClaim + "-" + ns
		dir := filepath.Join(localVolumes, pvName)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, 65532, 65532); err != nil {
			t.Fatal(err)
		}
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: pvName},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              "",
				ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: modelClaim},
				PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
					Path: dir, Type: ptr(corev1.HostPathDirectory),
				}},
			},
		}
		if err := k8s.Create(ctx, pv); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		pvc.Spec.StorageClassName = ptr("")
		pvc.Spec.VolumeName = pvName
	}
	if err := k8s.Create(ctx, &pvc); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	var job batchv1.Job
	readYAML(t, filepath.Join(samplesDir, "model-volume", "fill-job.yaml"), &job)
	job.Namespace = ns
	job.Spec.Template.Spec.Containers[0].Image = engineImage()
	if err := k8s.Create(ctx, &job); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	eventually(t, 5*time.Minute, "the model Job completes", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(&job), &job); err != nil {
			return err
		}
		for _, c := range job.Status.Conditions {
			if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
				return nil
			}
			if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
				return stop(fmt.Errorf("the model Job failed: %s", c.Message))
			}
		}
		return fmt.Errorf("job: %d active, %d failed", job.Status.Active, job.Status.Failed)
	})
}

func hasDefaultStorageClass(t *testing.T, ctx context.Context) bool {
	t.Helper()
	list, err := clientset.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range list.Items {
		if sc.Annotations["storageclass.kubernetes.io/is-default-class"] == "true" {
			return true
		}
	}
	return false
}

func engineImage() string {
	if img := os.Getenv("ENGINE_IMG"); img != "" {
		return img
	}
	return "ghcr.io/moe-operator/moe-engine:dev"
}

// testPlan applies the sample and waits for the plan: Planned=True with the planner's
// choice in status, and the Deployment, Service and PDB it implies.
func testPlan(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) {
	if err := k8s.Create(ctx, mxd.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	got := &servingv1alpha1.MixtralDeployment{}
	eventually(t, time.Minute, "Planned=True", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(mxd), got); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(got.Status.Conditions, servingv1alpha1.ConditionPlanned) {
			return fmt.Errorf("conditions %+v", got.Status.Conditions)
		}
		return nil
	})
	p := got.Status.Plan
	if p == nil {
		t.Fatal("Planned=True without status.plan")
	}
	t.Logf("plan: %s TP%d, %d replica(s), batch %d, predicted %.0f tok/s per replica (%s)",
		p.Quantization, p.TensorParallelism, p.Replicas, p.BatchSize, p.OutputTokensPerSecondPerReplica, p.Reason)
	if p.Quantization != "Int8" || p.TensorParallelism != 1 || p.Replicas < 1 || p.BatchSize < 1 || p.OutputTokensPerSecondPerReplica <= 0 || p.Reason == "" {
		t.Errorf("plan %+v is not the Int8 TP1 plan the sample asks for", p)
	}
	if got.Spec.Replicas == nil || *got.Spec.Replicas != p.Replicas {
		t.Errorf("spec.replicas %v, want the plan's %d", got.Spec.Replicas, p.Replicas)
	}
	if got.Status.Endpoint == "" || got.Status.Selector == "" {
		t.Errorf("status endpoint %q, selector %q", got.Status.Endpoint, got.Status.Selector)
	}
	eventually(t, 30*time.Second, "the Deployment, Service and PodDisruptionBudget exist", func() error {
		key := client.ObjectKeyFromObject(mxd)
		var d appsv1.Deployment
		if err := k8s.Get(ctx, key, &d); err != nil {
			return err
		}
		args := strings.Join(d.Spec.Template.Spec.Containers[0].Args, " ")
		want := fmt.Sprintf("--quantization int8 --tensor-parallel 1 --port 8000 --served-model-name %s", mxd.Spec.Model.ServedName)
		if !strings.Contains(args, want) || !strings.Contains(args, fmt.Sprintf("--max-num-seqs %d", p.BatchSize)) {
			return stop(fmt.Errorf("engine args %q do not carry the plan (%q, batch %d)", args, want, p.BatchSize))
		}
		if err := k8s.Get(ctx, key, &corev1.Service{}); err != nil {
			return err
		}
		return k8s.Get(ctx, key, &policyv1.PodDisruptionBudget{})
	})
}

// testEnginePods waits for Available and checks that the pods are the engine: the engine
// image, running `moe serve` with the model from the claim, logging that it loaded it, and
// exporting the vLLM-named metrics.
func testEnginePods(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) {
	waitAvailable(t, ctx, mxd, 5*time.Minute)
	pods := enginePods(t, ctx, mxd)
	if len(pods) == 0 {
		t.Fatal("no engine pods")
	}
	for _, pod := range pods {
		c := pod.Spec.Containers[0]
		if c.Image != engineImage() || len(c.Args) == 0 || c.Args[0] != "serve" {
			t.Errorf("pod %s runs %s %v, want %s serve ...", pod.Name, c.Image, c.Args, engineImage())
		}
		var status *corev1.ContainerStatus
		for i := range pod.Status.ContainerStatuses {
			status = &pod.Status.ContainerStatuses[i]
		}
		if status == nil || status.State.Running == nil || !status.Ready {
			t.Errorf("pod %s container status %+v", pod.Name, status)
		} else {
			t.Logf("pod %s on node %s: image %s (%s)", pod.Name, pod.Spec.NodeName, status.Image, status.ImageID)
		}
		logs, err := clientset.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
		if err != nil {
			t.Fatalf("logs of %s: %v", pod.Name, err)
		}
		if !strings.Contains(string(logs), "msg=ready model="+mxd.Spec.Model.ServedName) {
			t.Errorf("pod %s never logged that it loaded the model:\n%s", pod.Name, logs)
		}
	}
	ec := newClient(t, ctx, mxd)
	models, err := ec.Do(ctx, "GET", "/v1/models", nil)
	if err != nil || !strings.Contains(string(models), `"id":"`+mxd.Spec.Model.ServedName+`"`) {
		t.Errorf("/v1/models: %s, %v", models, err)
	}
	metrics, err := ec.Do(ctx, "GET", "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:generation_tokens_total"} {
		if !strings.Contains(string(metrics), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// testChat sends chat completions through the Service: the answer has the requested length,
// and greedy decoding of the same prompt gives the same text twice.
func testChat(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) {
	ec := newClient(t, ctx, mxd)
	t.Logf("requests go through the %s", ec.Route)
	req := engineclient.ChatRequest{
		Model:       mxd.Spec.Model.ServedName,
		Messages:    []engineclient.Message{{Role: "user", Content: "What is a mixture of experts?"}},
		MaxTokens:   16,
		Temperature: ptr(0.0),
	}
	first, err := ec.Chat(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	answer := first.Choices[0].Message.Content
	t.Logf("answer: %q", answer)
	if first.Model != mxd.Spec.Model.ServedName || first.Choices[0].Message.Role != "assistant" || answer == "" {
		t.Errorf("answer %+v", first)
	}
	if first.Usage.CompletionTokens != 16 || first.Choices[0].FinishReason != "length" || first.Usage.PromptTokens < 5 {
		t.Errorf("usage %+v, finish %q: want 16 completion tokens and finish_reason length", first.Usage, first.Choices[0].FinishReason)
	}
	second, err := ec.Chat(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if second.Choices[0].Message.Content != answer {
		t.Errorf("greedy decoding differs between two requests: %q, then %q", answer, second.Choices[0].Message.Content)
	}
	if _, err := ec.Chat(ctx, engineclient.ChatRequest{Model: "no-such-model", Messages: req.Messages}); err == nil {
		t.Error("a request for an unknown model succeeded")
	}
}

// testRollout changes the spec (an engine environment variable, which changes the pod
// template) while clients send requests through the Service without pause, and requires
// that every request succeeds and that the pods are replaced.
func testRollout(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) {
	before := podNames(enginePods(t, ctx, mxd))
	ec := newClient(t, ctx, mxd)
	l := startLoad(ctx, ec, mxd.Spec.Model.ServedName, 3)

	time.Sleep(3 * time.Second) // load before the change, too
	var cur servingv1alpha1.MixtralDeployment
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(mxd), &cur); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Spec.Engine.Env = append(cur.Spec.Engine.Env, corev1.EnvVar{Name: "E2E_ROLLOUT", Value: time.Now().Format(time.RFC3339)})
	if err := k8s.Patch(ctx, &cur, patch); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	eventually(t, 5*time.Minute, "the rollout completes", func() error {
		var got servingv1alpha1.MixtralDeployment
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(mxd), &got); err != nil {
			return err
		}
		if got.Status.ObservedGeneration < cur.Generation {
			return fmt.Errorf("observedGeneration %d < %d", got.Status.ObservedGeneration, cur.Generation)
		}
		c := meta.FindStatusCondition(got.Status.Conditions, servingv1alpha1.ConditionProgressing)
		if c == nil || c.Reason != servingv1alpha1.ReasonRolloutComplete {
			return fmt.Errorf("progressing: %+v", c)
		}
		pods := enginePods(t, ctx, mxd)
		for _, p := range pods {
			if slices.Contains(before, p.Name) {
				return fmt.Errorf("old pod %s still exists", p.Name)
			}
			if p.DeletionTimestamp != nil {
				return fmt.Errorf("pod %s is terminating", p.Name)
			}
		}
		if len(pods) == 0 {
			return errors.New("no pods")
		}
		return nil
	})
	rolled := time.Since(changed)
	time.Sleep(3 * time.Second) // and after it
	ok, failures := l.stop()
	t.Logf("rollout took %s; %d requests succeeded during it, %d failed", rolled.Round(time.Second), ok, len(failures))
	if ok < 10 {
		t.Errorf("only %d requests succeeded: the load did not run", ok)
	}
	if len(failures) > 0 {
		t.Errorf("%d requests failed during the rollout, first: %v", len(failures), failures[:min(len(failures), 5)])
	}
	var d appsv1.Deployment
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(mxd), &d); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(d.Spec.Template.Spec.Containers[0].Env, func(e corev1.EnvVar) bool { return e.Name == "E2E_ROLLOUT" }) {
		t.Error("the Deployment's template lacks the new environment variable")
	}
}

// testGPU runs a second MixtralDeployment on the l4 accelerator: its pods request
// nvidia.com/gpu, land on a node that advertises it (emulated by the local cluster's device
// plugin, or by patched capacity on kind) and carry the GPU product selector, and serve.
func testGPU(t *testing.T, ctx context.Context) {
	nodes, err := clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var product string
	for _, n := range nodes.Items {
		if q := n.Status.Allocatable["nvidia.com/gpu"]; !q.IsZero() {
			product = n.Labels["nvidia.com/gpu.product"]
		}
	}
	if product != "NVIDIA-L4" {
		t.Skipf("no node advertises nvidia.com/gpu with product NVIDIA-L4 (have %q): nothing to schedule on", product)
	}
	mxd := loadSample(t, demoSample)
	mxd.Name = "e2e-gpu"
	mxd.Namespace = ns
	mxd.Spec.Accelerator.Type = servingv1alpha1.AcceleratorL4
	// The engine with its Vulkan backend on Mesa's lavapipe: the emulated GPU has no driver,
	// so lavapipe stands in for it, and the GPU code path (device buffers, SPIR-V shaders,
	// the device KV cache) runs in the pod the operator made.
	mxd.Spec.Engine.Image = lavapipeImage()
	mxd.Spec.Engine.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("2Gi")
	mxd.Spec.Engine.Resources.Limits[corev1.ResourceMemory] = resource.MustParse("2Gi")
	if err := k8s.Create(ctx, mxd); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = k8s.Delete(ctx, mxd) }()
	waitAvailable(t, ctx, mxd, 5*time.Minute)
	for _, pod := range enginePods(t, ctx, mxd) {
		c := pod.Spec.Containers[0]
		gpus := c.Resources.Limits["nvidia.com/gpu"]
		if gpus.Value() != 1 {
			t.Errorf("pod %s limits %v, want 1 nvidia.com/gpu", pod.Name, c.Resources.Limits)
		}
		if pod.Spec.NodeSelector["nvidia.com/gpu.product"] != "NVIDIA-L4" {
			t.Errorf("pod %s node selector %v", pod.Name, pod.Spec.NodeSelector)
		}
		if !slices.ContainsFunc(pod.Spec.Tolerations, func(tol corev1.Toleration) bool { return tol.Key == "nvidia.com/gpu" }) {
			t.Errorf("pod %s does not tolerate the GPU taint: %v", pod.Name, pod.Spec.Tolerations)
		}
		if i := slices.Index(c.Args, "--device"); i < 0 || i+1 >= len(c.Args) || c.Args[i+1] != "vulkan" {
			t.Errorf("pod %s runs %v, want --device vulkan", pod.Name, c.Args)
		}
		if !slices.Contains(c.Env, corev1.EnvVar{Name: "NVIDIA_DRIVER_CAPABILITIES", Value: "compute,utility,graphics"}) {
			t.Errorf("pod %s env %v lacks the graphics capability", pod.Name, c.Env)
		}
		if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "NVIDIA_VISIBLE_DEVICES" }) {
			t.Errorf("pod %s sets NVIDIA_VISIBLE_DEVICES, which is the device plugin's: %v", pod.Name, c.Env)
		}
		logs, err := clientset.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(logs), `device="vulkan:0 llvmpipe`) {
			t.Errorf("pod %s did not get ready on the Vulkan device:\n%s", pod.Name, logs)
		}
		t.Logf("pod %s holds 1 emulated GPU on node %s and computes on lavapipe", pod.Name, pod.Spec.NodeName)
	}
	ec := newClient(t, ctx, mxd)
	resp, err := ec.Chat(ctx, engineclient.ChatRequest{
		Model: mxd.Spec.Model.ServedName, Messages: []engineclient.Message{{Role: "user", Content: "Hi"}}, MaxTokens: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := resp.Usage.CompletionTokens; n < 1 || n > 4 || len(resp.Choices) != 1 {
		t.Errorf("the answer has %d tokens, want 1 to 4: %+v", n, resp)
	}
	// The answer came from the device: its memory holds the weights and the KV cache, and
	// the KV cache the request used is the device's.
	metrics, err := ec.Do(ctx, "GET", "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`moe_engine_device_info{device="vulkan:0 llvmpipe`, "moe_engine_device_memory_used_bytes", "vllm:kv_cache_usage_perc", "vllm:generation_tokens_total"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The operator read the device from a ready pod into status.
	eventually(t, time.Minute, "status.device", func() error {
		var got servingv1alpha1.MixtralDeployment
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(mxd), &got); err != nil {
			return err
		}
		d := got.Status.Device
		if d == nil || !strings.HasPrefix(d.Name, "vulkan:0 llvmpipe") || d.MemoryUsedBytes <= 0 || d.MemoryBudgetBytes < d.MemoryUsedBytes {
			return fmt.Errorf("status.device is %+v", d)
		}
		t.Logf("status.device: %s on %s, %d of %d bytes", d.Name, d.Pod, d.MemoryUsedBytes, d.MemoryBudgetBytes)
		return nil
	})

	// Tensor parallelism 2: the new pod is granted two emulated GPUs and runs a device
	// group, lavapipe opened twice standing in for them.
	var cur servingv1alpha1.MixtralDeployment
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(mxd), &cur); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Spec.TensorParallelism = 2
	if err := k8s.Patch(ctx, &cur, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Minute, "a two-GPU pod serving from a device group", func() error {
		var got servingv1alpha1.MixtralDeployment
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(mxd), &got); err != nil {
			return err
		}
		if p := got.Status.Plan; p == nil || p.TensorParallelism != 2 {
			return fmt.Errorf("plan %+v", p)
		}
		pods := enginePods(t, ctx, mxd)
		if len(pods) != 1 {
			return fmt.Errorf("%d engine pods", len(pods))
		}
		c := pods[0].Spec.Containers[0]
		if g := c.Resources.Limits["nvidia.com/gpu"]; g.Value() != 2 {
			return fmt.Errorf("pod %s limits %v", pods[0].Name, c.Resources.Limits)
		}
		if d := got.Status.Device; d == nil || d.Pod != pods[0].Name || !strings.HasSuffix(d.Name, "×2") {
			return fmt.Errorf("status.device is %+v", d)
		}
		return nil
	})
	if _, err := newClient(t, ctx, mxd).Chat(ctx, engineclient.ChatRequest{
		Model: mxd.Spec.Model.ServedName, Messages: []engineclient.Message{{Role: "user", Content: "Hi"}}, MaxTokens: 4,
	}); err != nil {
		t.Fatal(err)
	}
	t.Log("a two-rank device group answered")
}

// lavapipeImage is the engine image with the Vulkan backend and Mesa's lavapipe.
func lavapipeImage() string {
	if img := os.Getenv("ENGINE_LAVAPIPE_IMG"); img != "" {
		return img
	}
	return "localhost/moe-operator/moe-engine:lavapipe"
}

// testDelete deletes the MixtralDeployment: the garbage collector removes its Deployment,
// Service, PodDisruptionBudget and pods through their owner references.
func testDelete(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) {
	if err := k8s.Delete(ctx, mxd.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(mxd)
	eventually(t, 3*time.Minute, "every child is gone", func() error {
		for _, obj := range []client.Object{&servingv1alpha1.MixtralDeployment{}, &appsv1.Deployment{}, &corev1.Service{}, &policyv1.PodDisruptionBudget{}} {
			if err := k8s.Get(ctx, key, obj); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%T %s still exists (%v)", obj, key, err)
			}
		}
		if pods := enginePods(t, ctx, mxd); len(pods) > 0 {
			return fmt.Errorf("%d engine pods remain", len(pods))
		}
		return nil
	})
}

func waitAvailable(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	eventually(t, timeout, mxd.Name+" Available", func() error {
		var got servingv1alpha1.MixtralDeployment
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(mxd), &got); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(got.Status.Conditions, servingv1alpha1.ConditionAvailable); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("available: %+v; pods: %s", c, describePods(t, ctx, mxd))
		}
		return nil
	})
	t.Logf("%s Available after %s", mxd.Name, time.Since(start).Round(time.Second))
}

func enginePods(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(mxd.Namespace), client.MatchingLabels{servingv1alpha1.LabelMixtralDeployment: mxd.Name}); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func describePods(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) string {
	var parts []string
	for _, p := range enginePods(t, ctx, mxd) {
		s := fmt.Sprintf("%s %s", p.Name, p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil {
				s += fmt.Sprintf(" (%s: %s)", w.Reason, w.Message)
			}
			s += fmt.Sprintf(" restarts=%d", cs.RestartCount)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func podNames(pods []corev1.Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	return names
}

func newClient(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) *engineclient.Client {
	t.Helper()
	ec, err := engineclient.New(ctx, cfg, mxd.Namespace, mxd.Name)
	if err != nil {
		t.Fatal(err)
	}
	return ec
}

// load is clients sending chat requests back to back until stopped.
type load struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ok       atomic.Int64
	mu       sync.Mutex
	failures []string
}

func startLoad(ctx context.Context, ec *engineclient.Client, model string, clients int) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel}
	for i := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				_, err := ec.Chat(ctx, engineclient.ChatRequest{
					Model:     model,
					Messages:  []engineclient.Message{{Role: "user", Content: fmt.Sprintf("client %d, request %d", i, n)}},
					MaxTokens: 8,
				})
				switch {
				case err == nil:
					l.ok.Add(1)
				case ctx.Err() != nil:
				default:
					l.mu.Lock()
					l.failures = append(l.failures, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
					l.mu.Unlock()
				}
			}
		}()
	}
	return l
}

func (l *load) stop() (int64, []string) {
	l.cancel()
	l.wg.Wait()
	return l.ok.Load(), l.failures
}

// stopError ends eventually at once.
type stopError struct{ error }

func stop(err error) error { return stopError{err} }

// eventually polls f every second until it returns nil, returns a stop error, or timeout
// passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		var s stopError
		if errors.As(err, &s) {
			t.Fatalf("%s: %v", what, s.error)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(time.Second)
	}
}

func ptr[T any](v T) *T { return &v }
