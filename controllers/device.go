package controllers

import (
	"cmp"
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// deviceRetry is how soon a failed device reading is tried again.
const deviceRetry = 15 * time.Second

// reconcileDevice records in status.device what a ready moe engine pod on GPUs reports on
// its /metrics: the device it computes on and the memory it holds. An engine allocates its
// weights, working memory and KV cache before it is ready, so one reading per pod is
// enough: a pod is read when the recorded one is no longer ready. A failed read is not an
// error: the pass goes on and another comes within deviceRetry. While no pod is ready the
// field is cleared.
func (r *MixtralDeploymentReconciler) reconcileDevice(ctx context.Context, s *scope) error {
	st := &s.obj.Status
	w := s.workload
	if w == nil || w.isVLLM() || w.gpus() == 0 {
		st.Device = nil
		return nil
	}
	pods, err := r.enginePods(ctx, s.obj)
	if err != nil {
		return err
	}
	ready, _ := splitPods(pods)
	if len(ready) == 0 {
		st.Device = nil
		return nil
	}
	if st.Device != nil && slices.ContainsFunc(ready, func(p *corev1.Pod) bool { return p.Name == st.Device.Pod }) {
		return nil
	}
	pod := slices.MinFunc(ready, func(a, b *corev1.Pod) int { return cmp.Compare(a.Name, b.Name) })
	m, err := r.autoscaler().metrics().Scrape(ctx, pod, w.port())
	switch {
	case err != nil:
		logf.FromContext(ctx).V(1).Info("no device reading", "pod", pod.Name, "reason", err.Error())
		if s.requeueAfter == 0 || s.requeueAfter > deviceRetry {
			s.requeueAfter = deviceRetry
		}
		return nil
	case m.Device == "":
		// The engine computes on the CPU: its image has no Vulkan backend, or --device cpu.
		st.Device = nil
		return nil
	}
	st.Device = &servingv1alpha1.DeviceStatus{Name: m.Device, Pod: pod.Name,
		MemoryUsedBytes: int64(m.DeviceMemoryUsed), MemoryBudgetBytes: int64(m.DeviceMemoryBudget)}
	return nil
}
