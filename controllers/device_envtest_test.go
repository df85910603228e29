package controllers

import (
	"testing"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/engine/server"
)

// deviceGauges are the moe engine's device metrics as `moe serve` exports them on a GPU.
func deviceGauges(device string, used, budget float64) []prometheus.Collector {
	labels := prometheus.Labels{"model_name": "tiny-mixtral"}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: server.MetricDeviceInfo, Help: "device", ConstLabels: labels}, []string{"device"})
	info.WithLabelValues(device).Set(1)
	gauge := func(name string, v float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: name, ConstLabels: labels}, func() float64 { return v })
	}
	return []prometheus.Collector{info, gauge(server.MetricDeviceMemoryUsed, used), gauge(server.MetricDeviceMemoryBudget, budget)}
}

// A ready engine pod on GPUs is read for status.device; another pod is read when that one
// stops being ready, and the field is cleared while none is. (Autoscaling makes the passes
// periodic, as pods' readiness does through the Deployment in a cluster; the harness's
// clock stands still, so it never scales.)
func TestEnvtestStatusReportsTheDevice(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	mxd := h.createFrom(h100Sample, "device", 2, autoscaling(servingv1alpha1.MetricConcurrency, "8", 1, 16))
	waitPlannedIn(t, h.ns, mxd.Name)
	device := func(g Gomega) *servingv1alpha1.DeviceStatus {
		return get(g, h.ns, mxd.Name, &servingv1alpha1.MixtralDeployment{}).Status.Device
	}

	e1 := newFakeEngine(t, deviceGauges("vulkan:0 NVIDIA H100 80GB HBM3 ×4", 61e9, 76e9)...)
	first := h.addPodAt(mxd.Name, true, e1.srv.Listener.Addr().String())
	e2 := newFakeEngine(t, deviceGauges("vulkan:0 NVIDIA H100 80GB HBM3 ×4", 62e9, 76e9)...)
	second := h.addPodAt(mxd.Name, true, e2.srv.Listener.Addr().String())
	eventually(t, func(g Gomega) {
		g.Expect(device(g)).To(Equal(&servingv1alpha1.DeviceStatus{
			Name: "vulkan:0 NVIDIA H100 80GB HBM3 ×4", Pod: first.Name, MemoryUsedBytes: 61e9, MemoryBudgetBytes: 76e9,
		}), "the first ready pod by name is read")
	})

	h.setReady(first, false)
	eventually(t, func(g Gomega) {
		g.Expect(device(g)).NotTo(BeNil())
		g.Expect(device(g).Pod).To(Equal(second.Name))
		g.Expect(device(g).MemoryUsedBytes).To(Equal(int64(62e9)))
	})
	h.setReady(second, false)
	eventually(t, func(g Gomega) { g.Expect(device(g)).To(BeNil(), "no pod is ready") })

	// An engine that computes on the CPU exports no device: nothing is recorded.
	cpu := newFakeEngine(t)
	h.addPodAt(mxd.Name, true, cpu.srv.Listener.Addr().String())
	eventually(t, func(g Gomega) { g.Expect(cpu.hits.Load()).To(BeNumerically(">", 2)) })
	NewWithT(t).Expect(get(NewWithT(t), h.ns, mxd.Name, &servingv1alpha1.MixtralDeployment{}).Status.Device).To(BeNil())
}
