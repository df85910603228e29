package controllers

import (
	"errors"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

func TestAggregate(t *testing.T) {
	g := NewWithT(t)
	a := &Autoscaler{SyncPeriod: 20 * time.Millisecond}
	key := types.NamespacedName{Namespace: "ns", Name: "m"}
	pod := func(uid string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uid, UID: types.UID(uid)}}
	}
	p1, p2 := pod("a"), pod("b")
	read := func(p *corev1.Pod, running, waiting, kv, tokens float64) podReading {
		return podReading{pod: p, metrics: EngineMetrics{Running: running, Waiting: waiting, KVCacheUsage: kv, GenerationTokens: tokens}}
	}

	l := a.aggregate(key, []podReading{read(p1, 2, 3, 0.5, 100), read(p2, 1, 0, 0.25, 50)})
	g.Expect(l.read).To(Equal(2))
	for _, tt := range []struct {
		metric        servingv1alpha1.AutoscalingMetric
		total         float64
		read, missing int
	}{
		{servingv1alpha1.MetricConcurrency, 6, 2, 0},
		{servingv1alpha1.MetricQueueDepth, 3, 2, 0},
		{servingv1alpha1.MetricKVCacheUsage, 0.75, 2, 0},
		{servingv1alpha1.MetricOutputTokensPerSecond, 0, 0, 2}, // no rate from one reading
	} {
		total, read, missing := l.value(tt.metric)
		g.Expect([]any{total, read, missing}).To(Equal([]any{tt.total, tt.read, tt.missing}), string(tt.metric))
	}

	// A second reading a while later gives rates; p2's engine restarted (its counter went
	// back), so it starts over; p1 failed once in between and keeps its counter.
	time.Sleep(30 * time.Millisecond)
	l = a.aggregate(key, []podReading{{pod: p1, err: errors.New("down")}, read(p2, 0, 0, 0, 10)})
	g.Expect(l.failed).To(Equal(1))
	g.Expect(l.rated).To(BeZero())
	time.Sleep(30 * time.Millisecond)
	l = a.aggregate(key, []podReading{read(p1, 0, 0, 0, 160), read(p2, 0, 0, 0, 40)})
	g.Expect(l.rated).To(Equal(2))
	// p1: 60 tokens over at least 60 ms; p2: 30 tokens over at least 30 ms.
	g.Expect(l.tokensPerSecond).To(And(BeNumerically(">", 0), BeNumerically("<=", 1000+1000+1e-6)))
	total, read2, missing := l.value(servingv1alpha1.MetricOutputTokensPerSecond)
	g.Expect([]any{read2, missing}).To(Equal([]any{2, 0}))
	g.Expect(total).To(Equal(l.tokensPerSecond))

	// Pods that are gone are forgotten; so is the MixtralDeployment.
	a.aggregate(key, []podReading{read(p2, 0, 0, 0, 50)})
	g.Expect(a.counters[key]).To(HaveLen(1))
	a.Forget(key)
	g.Expect(a.counters).NotTo(HaveKey(key))
}

func TestAutoscalingTarget(t *testing.T) {
	plan := servingv1alpha1.Plan{BatchSize: 12, OutputTokensPerSecondPerReplica: 900}
	tests := []struct {
		name    string
		spec    servingv1alpha1.AutoscalingSpec
		want    float64
		wantErr string
	}{
		{name: "an explicit target wins", spec: servingv1alpha1.AutoscalingSpec{Metric: servingv1alpha1.MetricConcurrency, Target: ptr.To(resource.MustParse("750m"))}, want: 0.75},
		{name: "Concurrency defaults to the plan's batch", spec: servingv1alpha1.AutoscalingSpec{Metric: servingv1alpha1.MetricConcurrency}, want: 12},
		{name: "no metric is Concurrency", want: 12},
		{name: "QueueDepth defaults to 1", spec: servingv1alpha1.AutoscalingSpec{Metric: servingv1alpha1.MetricQueueDepth}, want: 1},
		{name: "KVCacheUsage defaults to 0.8", spec: servingv1alpha1.AutoscalingSpec{Metric: servingv1alpha1.MetricKVCacheUsage}, want: 0.8},
		{name: "OutputTokensPerSecond defaults to the plan's prediction", spec: servingv1alpha1.AutoscalingSpec{Metric: servingv1alpha1.MetricOutputTokensPerSecond}, want: 900},
		{name: "a zero target is refused", spec: servingv1alpha1.AutoscalingSpec{Target: ptr.To(resource.MustParse("0"))}, wantErr: "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := autoscalingTarget(&tt.spec, plan)
			if tt.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.wantErr)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(BeNumerically("~", tt.want, 1e-9))
		})
	}
	_, err := autoscalingTarget(&servingv1alpha1.AutoscalingSpec{Metric: servingv1alpha1.MetricOutputTokensPerSecond}, servingv1alpha1.Plan{})
	NewWithT(t).Expect(err).To(MatchError(ContainSubstring("set autoscaling.target")))
}

func TestSplitPods(t *testing.T) {
	g := NewWithT(t)
	pod := func(name string, phase corev1.PodPhase, ready corev1.ConditionStatus, deleting bool) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{Phase: phase}}
		if ready != "" {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
		}
		if deleting {
			p.DeletionTimestamp = ptr.To(metav1.Now())
		}
		return p
	}
	ready, starting := splitPods([]corev1.Pod{
		pod("ready", corev1.PodRunning, corev1.ConditionTrue, false),
		pod("loading", corev1.PodRunning, corev1.ConditionFalse, false),
		pod("pending", corev1.PodPending, "", false),
		pod("terminating", corev1.PodRunning, corev1.ConditionTrue, true),
		pod("failed", corev1.PodFailed, corev1.ConditionFalse, false),
		pod("done", corev1.PodSucceeded, "", false),
	})
	names := func(ps []*corev1.Pod) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	g.Expect(names(ready)).To(Equal([]string{"ready"}))
	g.Expect(names(starting)).To(Equal([]string{"loading", "pending"}))
}
