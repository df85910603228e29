//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// testChaos breaks things under load on two replicas and checks that the system comes back
// with nothing lost: an engine pod deleted, one force-killed, evictions against the
// PodDisruptionBudget, bad objects beside a good one, and the manager deleted mid-rollout.
// It leaves the MixtralDeployment at one replica again.
func testChaos(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) {
	setReplicas(t, ctx, mxd, 2)
	defer setReplicas(t, ctx, mxd, 1)
	model := mxd.Spec.Model.ServedName

	t.Run("an engine pod deleted under load loses no request", func(t *testing.T) {
		ec := newClient(t, ctx, mxd)
		l := startLoad(ctx, ec, model, 3)
		time.Sleep(3 * time.Second)
		victim := readyPods(t, ctx, mxd)[0]
		if err := k8s.Delete(ctx, &victim); err != nil {
			t.Fatal(err)
		}
		toReady := waitReplaced(t, ctx, mxd, victim.Name, 2)
		time.Sleep(3 * time.Second)
		ok, failures := l.stop()
		t.Logf("pod %s deleted: replacement Ready after %s; %d requests succeeded meanwhile, %d failed",
			victim.Name, toReady.Round(time.Second), ok, len(failures))
		if ok < 10 {
			t.Errorf("only %d requests succeeded: the load did not run", ok)
		}
		if len(failures) > 0 {
			t.Errorf("%d requests failed while a pod drained, first: %v", len(failures), failures[:min(len(failures), 5)])
		}
	})

	t.Run("a force-killed engine pod is replaced and the service recovers", func(t *testing.T) {
		ec := newClient(t, ctx, mxd)
		l := startLoad(ctx, ec, model, 3)
		time.Sleep(3 * time.Second)
		victim := readyPods(t, ctx, mxd)[0]
		if err := k8s.Delete(ctx, &victim, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		toReady := waitReplaced(t, ctx, mxd, victim.Name, 2)
		waitAvailable(t, ctx, mxd, 2*time.Minute)
		ok, failures := l.stop()
		// The requests in flight on the killed pod fail: with no gateway to retry them, a
		// client sees its connection end. That is the clean error; a hang would stop l.stop.
		t.Logf("pod %s killed: replacement Ready after %s; %d requests succeeded, %d failed (in flight on the killed pod or sent before its endpoint went): %v",
			victim.Name, toReady.Round(time.Second), ok, len(failures), failures[:min(len(failures), 3)])
		// Afterwards nothing fails.
		l = startLoad(ctx, ec, model, 3)
		time.Sleep(5 * time.Second)
		ok, failures = l.stop()
		if ok < 5 || len(failures) > 0 {
			t.Errorf("after recovery: %d requests succeeded, %d failed: %v", ok, len(failures), failures[:min(len(failures), 5)])
		}
	})

	// A drain evicts through the Eviction API, which the PodDisruptionBudget (one pod
	// unavailable at most) guards. On one node a real `kubectl drain` would cordon the only
	// node, so the evicted pod's replacement could never schedule and the drain would wait
	// forever at the second pod: what the budget promises, but nothing moves. So this
	// evicts without cordoning: the second eviction is refused while the first pod's
	// replacement is not Ready, and allowed once it is.
	t.Run("evictions respect the PodDisruptionBudget", func(t *testing.T) {
		pods := readyPods(t, ctx, mxd)
		evict := func(name string) error {
			return clientset.PolicyV1().Evictions(mxd.Namespace).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: mxd.Namespace}})
		}
		if err := evict(pods[0].Name); err != nil {
			t.Fatalf("the first eviction: %v", err)
		}
		if err := evict(pods[1].Name); !apierrors.IsTooManyRequests(err) {
			t.Fatalf("a second eviction while one pod is down: %v, want 429 from the disruption budget", err)
		}
		waitReplaced(t, ctx, mxd, pods[0].Name, 2)
		start := time.Now()
		eventually(t, 2*time.Minute, "the second eviction is allowed", func() error { return evict(pods[1].Name) })
		t.Logf("the second eviction was allowed %s after the first pod's replacement was Ready", time.Since(start).Round(time.Second))
		waitReplaced(t, ctx, mxd, pods[1].Name, 2)
	})

	t.Run("invalid and unsatisfiable objects leave a valid one reconciling", func(t *testing.T) {
		bad := loadSample(t, demoSample)
		bad.Namespace = mxd.Namespace
		bad.Name = "e2e-invalid"
		bad.Spec.Engine.ExtraArgs = []string{"--api-key", "visible-to-all"}
		err := k8s.Create(ctx, bad)
		if !apierrors.IsInvalid(err) {
			t.Fatalf("a MixtralDeployment with --api-key in extraArgs: %v, want it refused as invalid", err)
		}
		t.Logf("refused: %v", err)

		unsat := loadSample(t, demoSample)
		unsat.Namespace = mxd.Namespace
		unsat.Name = "e2e-unsatisfiable"
		unsat.Spec.Targets.InterTokenLatency = &metav1.Duration{Duration: time.Microsecond} // no CPU reaches it
		if err := k8s.Create(ctx, unsat); err != nil {
			t.Fatal(err)
		}
		defer k8s.Delete(ctx, unsat)
		eventually(t, time.Minute, "the unsatisfiable object says why", func() error {
			got := getMXD(t, ctx, client.ObjectKeyFromObject(unsat))
			c := meta.FindStatusCondition(got.Status.Conditions, servingv1alpha1.ConditionPlanned)
			if c == nil || c.Status != metav1.ConditionFalse {
				return fmt.Errorf("planned: %+v", c)
			}
			t.Logf("%s: %s: %s", unsat.Name, c.Reason, c.Message)
			return nil
		})
		var d appsv1.Deployment
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(unsat), &d); !apierrors.IsNotFound(err) {
			t.Errorf("the unsatisfiable object got a Deployment (%v)", err)
		}
		rollEnv(t, ctx, mxd, "E2E_CHAOS_VALID")
	})

	t.Run("a new manager finishes the rollout the old one started", func(t *testing.T) {
		managers, err := clientset.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=moe-operator,app.kubernetes.io/component=manager"})
		if err != nil || len(managers.Items) == 0 {
			t.Fatalf("no manager pod: %v", err)
		}
		gen := rollEnvNoWait(t, ctx, mxd, "E2E_CHAOS_MANAGER")
		for _, p := range managers.Items {
			if err := clientset.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		waitRolledOut(t, ctx, mxd, gen, "E2E_CHAOS_MANAGER")
		t.Logf("the manager was deleted right after the spec change; the rollout completed %s later", time.Since(start).Round(time.Second))
		// No duplicates and no orphans: one of each child, owned by the MixtralDeployment.
		sel := client.MatchingLabels{servingv1alpha1.LabelMixtralDeployment: mxd.Name}
		uid := getMXD(t, ctx, client.ObjectKeyFromObject(mxd)).UID
		owned := func(r metav1.OwnerReference) bool { return r.UID == uid }
		for _, l := range []client.ObjectList{&appsv1.DeploymentList{}, &corev1.ServiceList{}, &policyv1.PodDisruptionBudgetList{}} {
			if err := k8s.List(ctx, l, client.InNamespace(mxd.Namespace), sel); err != nil {
				t.Fatal(err)
			}
			items, _ := meta.ExtractList(l)
			if len(items) != 1 {
				t.Errorf("%T: %d objects for %s, want 1", l, len(items), mxd.Name)
				continue
			}
			if o, _ := meta.Accessor(items[0]); !slices.ContainsFunc(o.GetOwnerReferences(), owned) {
				t.Errorf("%T %s is not owned by the MixtralDeployment", l, o.GetName())
			}
		}
		requireOperator(t, ctx)
	})
}

// setReplicas sets spec.replicas and waits for that many ready pods and Available.
func setReplicas(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment, n int32) {
	t.Helper()
	cur := getMXD(t, ctx, client.ObjectKeyFromObject(mxd))
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Spec.Replicas = &n
	if err := k8s.Patch(ctx, cur, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, fmt.Sprintf("%d ready engine pods", n), func() error {
		if got := len(readyPods(t, ctx, mxd)); got != int(n) {
			return fmt.Errorf("%d ready; pods: %s", got, describePods(t, ctx, mxd))
		}
		return nil
	})
	waitAvailable(t, ctx, mxd, 2*time.Minute)
}

// readyPods are the engine pods that are Ready and not terminating.
func readyPods(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) []corev1.Pod {
	t.Helper()
	var out []corev1.Pod
	for _, p := range enginePods(t, ctx, mxd) {
		if p.DeletionTimestamp == nil && slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
			return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
		}) {
			out = append(out, p)
		}
	}
	return out
}

// waitReplaced waits until the pod is gone and n other pods are Ready, and returns how long
// that took.
func waitReplaced(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment, gone string, n int) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, 3*time.Minute, gone+" replaced", func() error {
		pods := readyPods(t, ctx, mxd)
		if slices.ContainsFunc(enginePods(t, ctx, mxd), func(p corev1.Pod) bool { return p.Name == gone }) {
			return fmt.Errorf("%s still exists", gone)
		}
		if len(pods) != n {
			return fmt.Errorf("%d of %d ready: %s", len(pods), n, describePods(t, ctx, mxd))
		}
		return nil
	})
	return time.Since(start)
}

// rollEnv changes an environment variable of the engine and waits for the rollout.
func rollEnv(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment, name string) {
	t.Helper()
	waitRolledOut(t, ctx, mxd, rollEnvNoWait(t, ctx, mxd, name), name)
}

// rollEnvNoWait sets the engine environment variable name to the time and returns the
// object's new generation.
func rollEnvNoWait(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment, name string) int64 {
	t.Helper()
	cur := getMXD(t, ctx, client.ObjectKeyFromObject(mxd))
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Spec.Engine.Env = append(slices.DeleteFunc(cur.Spec.Engine.Env, func(e corev1.EnvVar) bool { return e.Name == name }),
		corev1.EnvVar{Name: name, Value: time.Now().Format(time.RFC3339Nano)})
	if err := k8s.Patch(ctx, cur, patch); err != nil {
		t.Fatal(err)
	}
	return cur.Generation
}

// waitRolledOut waits until the status has seen generation gen, the rollout is complete,
// and every engine pod carries the variable name.
func waitRolledOut(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment, gen int64, name string) {
	t.Helper()
	eventually(t, 5*time.Minute, "the rollout of "+name, func() error {
		got := getMXD(t, ctx, client.ObjectKeyFromObject(mxd))
		if got.Status.ObservedGeneration < gen {
			return fmt.Errorf("observedGeneration %d < %d", got.Status.ObservedGeneration, gen)
		}
		for _, ct := range []string{servingv1alpha1.ConditionPlanned, servingv1alpha1.ConditionAvailable} {
			if c := meta.FindStatusCondition(got.Status.Conditions, ct); c == nil || c.Status != metav1.ConditionTrue {
				return fmt.Errorf("%s: %+v", ct, c)
			}
		}
		if c := meta.FindStatusCondition(got.Status.Conditions, servingv1alpha1.ConditionProgressing); c == nil || c.Reason != servingv1alpha1.ReasonRolloutComplete {
			return fmt.Errorf("progressing: %+v", c)
		}
		pods := enginePods(t, ctx, mxd)
		if len(pods) != int(*got.Spec.Replicas) {
			return fmt.Errorf("%d pods for %d replicas: %s", len(pods), *got.Spec.Replicas, describePods(t, ctx, mxd))
		}
		for _, p := range pods {
			if p.DeletionTimestamp != nil || !slices.ContainsFunc(p.Spec.Containers[0].Env, func(e corev1.EnvVar) bool { return e.Name == name }) {
				return fmt.Errorf("pod %s is old or terminating", p.Name)
			}
		}
		return nil
	})
}

// testTruncatedModel serves a model file cut in half from the model claim: the engine pod
// crash-loops, the MixtralDeployment says why (Degraded EngineFailing with the engine's
// error, and a Warning event), and once the file is whole again it becomes Available by
// itself. It writes the file straight into the claim's directory, which only the local
// cluster's hostPath volume allows.
func testTruncatedModel(t *testing.T, ctx context.Context) {
	if hasDefaultStorageClass(t, ctx) {
		t.Skip("the model claim is provisioned by a StorageClass here, so the test cannot write a truncated file into it; the local cluster (CI) runs this step")
	}
	dir := filepath.Join(localVolumes, modelClaim+"-"+ns)
	good, err := os.ReadFile(filepath.Join(dir, "mixtral-small.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "truncated.gguf")
	write := func(data []byte) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(tmp, 65532, 65532); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(good[:len(good)/2])
	defer os.Remove(path)

	obj := loadSample(t, demoSample)
	obj.Namespace, obj.Name = ns, "e2e-truncated"
	obj.Spec.Model.URI = "pvc://" + modelClaim + "/truncated.gguf"
	obj.Spec.Model.ServedName = obj.Name
	if err := k8s.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	defer k8s.Delete(ctx, obj)
	key := client.ObjectKeyFromObject(obj)
	eventually(t, 3*time.Minute, "Degraded names the file's error", func() error {
		got := getMXD(t, ctx, key)
		c := meta.FindStatusCondition(got.Status.Conditions, servingv1alpha1.ConditionDegraded)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != servingv1alpha1.ReasonEngineFailing || !strings.Contains(c.Message, "truncated") {
			return fmt.Errorf("degraded: %+v; pods: %s", c, describePods(t, ctx, obj))
		}
		t.Logf("Degraded: %s", c.Message)
		return nil
	})
	var events eventsv1.EventList
	if err := k8s.List(ctx, &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(events.Items, func(e eventsv1.Event) bool {
		return e.Regarding.Name == obj.Name && e.Reason == servingv1alpha1.ReasonEngineFailing && strings.Contains(e.Note, "truncated")
	}) {
		t.Error("no EngineFailing event names the truncated file")
	}

	write(good)
	fixed := time.Now()
	waitAvailable(t, ctx, obj, 5*time.Minute)
	eventually(t, time.Minute, "Degraded clears", func() error {
		c := meta.FindStatusCondition(getMXD(t, ctx, key).Status.Conditions, servingv1alpha1.ConditionDegraded)
		if c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("degraded: %+v", c)
		}
		return nil
	})
	t.Logf("the file was fixed; %s was Available %s later (the kubelet's restart back-off)", obj.Name, time.Since(fixed).Round(time.Second))
}
