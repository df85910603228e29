package controllers

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/engine/server"
)

// docYAML returns the documents of every ```yaml block of a page under docs/.
func docYAML(t *testing.T, page string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "docs", page))
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(data), -1) {
		for _, doc := range strings.Split(m[1], "\n---\n") {
			if strings.TrimSpace(doc) != "" {
				docs = append(docs, doc)
			}
		}
	}
	return docs
}

// scaledObject is the part of KEDA's ScaledObject the docs use, by KEDA's documented field
// names; decoding strictly into it catches a misspelt or misplaced field.
type scaledObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// adapterRule is one prometheus-adapter discovery rule.
type adapterRule struct {
	SeriesQuery string `json:"seriesQuery"`
	Resources   struct {
		Overrides map[string]struct {
			Resource string `json:"resource"`
		} `json:"overrides"`
	} `json:"resources"`
	Name struct {
		Matches string `json:"matches"`
		As      string `json:"as"`
	} `json:"name"`
	MetricsQuery string `json:"metricsQuery"`
}

// documentedMetrics are the engine metric names the docs may scale on.
var documentedMetrics = []string{server.MetricRequestsWaiting, server.MetricRequestsRunning, server.MetricKVCacheUsage, server.MetricGenerationTokens}

func TestAutoscalingDocExamples(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g := NewWithT(t)
	dryRun := func(obj client.Object) {
		t.Helper()
		obj.SetNamespace(ns)
		g.Expect(k8sClient.Create(ctx, obj, client.DryRunAll, client.FieldValidation("Strict"))).To(Succeed(), "%T %s", obj, obj.GetName())
	}

	var (
		external *servingv1alpha1.MixtralDeployment
		hpa      *autoscalingv2.HorizontalPodAutoscaler
		keda     *scaledObject
		rules    []adapterRule
		statuses int
	)
	for _, doc := range docYAML(t, "autoscaling.md") {
		head := &unstructured.Unstructured{}
		g.Expect(yaml.Unmarshal([]byte(doc), &head.Object)).To(Succeed(), doc)
		switch head.GetKind() {
		case "":
			// The status example.
			var st struct {
				Status servingv1alpha1.MixtralDeploymentStatus `json:"status"`
			}
			g.Expect(yaml.UnmarshalStrict([]byte(doc), &st)).To(Succeed())
			g.Expect(st.Status.Autoscaling).NotTo(BeNil())
			statuses++
		case "MixtralDeployment":
			obj := &servingv1alpha1.MixtralDeployment{}
			g.Expect(yaml.UnmarshalStrict([]byte(doc), obj)).To(Succeed())
			dryRun(obj.DeepCopy())
			if obj.Spec.Autoscaling == nil || !obj.Spec.Autoscaling.Enabled {
				external = obj
			}
		case "ConfigMap":
			cm := &corev1.ConfigMap{}
			g.Expect(yaml.UnmarshalStrict([]byte(doc), cm)).To(Succeed())
			dryRun(cm.DeepCopy())
			var cfg struct {
				Rules []adapterRule `json:"rules"`
			}
			g.Expect(yaml.UnmarshalStrict([]byte(cm.Data["config.yaml"]), &cfg)).To(Succeed())
			rules = append(rules, cfg.Rules...)
		case "HorizontalPodAutoscaler":
			hpa = &autoscalingv2.HorizontalPodAutoscaler{}
			g.Expect(yaml.UnmarshalStrict([]byte(doc), hpa)).To(Succeed())
			dryRun(hpa.DeepCopy())
		case "ScaledObject":
			keda = &scaledObject{}
			g.Expect(yaml.UnmarshalStrict([]byte(doc), keda)).To(Succeed())
		default:
			t.Errorf("an example of kind %s is not checked", head.GetKind())
		}
	}
	g.Expect(statuses).To(Equal(1))
	g.Expect(external).NotTo(BeNil(), "an external-mode MixtralDeployment")
	g.Expect(hpa).NotTo(BeNil())
	g.Expect(keda).NotTo(BeNil())

	t.Run("the prometheus-adapter rule serves the HPA's metric", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(rules).To(HaveLen(1))
		rule := rules[0]
		g.Expect(rule.SeriesQuery).To(HavePrefix(server.MetricRequestsWaiting + "{"))
		g.Expect(rule.Resources.Overrides).To(HaveKeyWithValue("pod", HaveField("Resource", "pod")))
		g.Expect(rule.Resources.Overrides).To(HaveKeyWithValue("namespace", HaveField("Resource", "namespace")))
		// prometheus-adapter names the metric by replacing `matches` with `as` (${1} the group).
		re := regexp.MustCompile(rule.Name.Matches)
		g.Expect(re.MatchString(server.MetricRequestsWaiting)).To(BeTrue())
		exposed := re.ReplaceAllString(server.MetricRequestsWaiting, rule.Name.As)
		g.Expect(hpa.Spec.Metrics).To(HaveLen(1))
		g.Expect(hpa.Spec.Metrics[0].Pods).NotTo(BeNil())
		g.Expect(hpa.Spec.Metrics[0].Pods.Metric.Name).To(Equal(exposed))
		g.Expect(rule.MetricsQuery).To(ContainSubstring("<<.Series>>"))
	})

	t.Run("the HPA's target answers the scale subresource as the HPA controller uses it", func(t *testing.T) {
		g := NewWithT(t)
		ref := hpa.Spec.ScaleTargetRef
		gv, err := schema.ParseGroupVersion(ref.APIVersion)
		g.Expect(err).NotTo(HaveOccurred())
		mapping, err := k8sClient.RESTMapper().RESTMapping(schema.GroupKind{Group: gv.Group, Kind: ref.Kind}, gv.Version)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(mapping.Resource.Resource).To(Equal("mixtraldeployments"))
		g.Expect(ref.Name).To(Equal(external.Name))

		obj := external.DeepCopy()
		obj.Namespace = ns
		g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		obj = waitPlanned(t, ns, obj.Name)
		scale := &autoscalingv1.Scale{}
		g.Expect(k8sClient.SubResource("scale").Get(ctx, obj, scale)).To(Succeed())
		selector, err := metav1.ParseToLabelSelector(scale.Status.Selector)
		g.Expect(err).NotTo(HaveOccurred())
		d := get(g, ns, obj.Name, &appsv1.Deployment{})
		g.Expect(selector.MatchLabels).To(Equal(d.Spec.Selector.MatchLabels), "the HPA finds the engine pods by the scale selector")
		for k, v := range selector.MatchLabels {
			g.Expect(d.Spec.Template.Labels).To(HaveKeyWithValue(k, v))
		}

		// The HPA controller scales to maxReplicas; the operator follows and never takes it back.
		scaleTo(t, ns, obj.Name, hpa.Spec.MaxReplicas, "kube-controller-manager")
		eventually(t, func(g Gomega) {
			g.Expect(*get(g, ns, obj.Name, &appsv1.Deployment{}).Spec.Replicas).To(Equal(hpa.Spec.MaxReplicas))
		})
		g.Consistently(func(g Gomega) {
			g.Expect(*get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{}).Spec.Replicas).To(Equal(hpa.Spec.MaxReplicas))
		}).WithTimeout(time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	})

	t.Run("the ScaledObject targets the MixtralDeployment and its HPA is valid", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(keda.APIVersion).To(Equal("keda.sh/v1alpha1"))
		ref := keda.Spec.ScaleTargetRef
		g.Expect(ref.APIVersion).To(Equal(servingv1alpha1.GroupVersion.String()))
		g.Expect(ref.Kind).To(Equal("MixtralDeployment"))
		g.Expect(ref.Name).To(Equal(external.Name))
		g.Expect(*keda.Spec.MinReplicaCount).To(BeNumerically(">=", 1), "no scale to zero without a request-holding proxy")
		g.Expect(keda.Spec.Triggers).To(HaveLen(1))
		trigger := keda.Spec.Triggers[0]
		g.Expect(trigger.Type).To(Equal("prometheus"))
		g.Expect(trigger.Metadata).To(HaveKey("serverAddress"))
		g.Expect(trigger.Metadata["query"]).To(ContainSubstring(server.MetricRequestsWaiting + "{"))
		g.Expect(trigger.Metadata["query"]).To(ContainSubstring(`model_name="` + servedModelName(external) + `"`))
		threshold, err := resource.ParseQuantity(trigger.Metadata["threshold"])
		g.Expect(err).NotTo(HaveOccurred())

		// The HPA KEDA creates for it: the same target, bounds and behavior, and an external
		// metric per trigger with the threshold as the average value.
		kedaHPA := &autoscalingv2.HorizontalPodAutoscaler{
			ObjectMeta: metav1.ObjectMeta{Name: "keda-hpa-" + keda.Metadata.Name},
			Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
				ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: ref.APIVersion, Kind: ref.Kind, Name: ref.Name},
				MinReplicas:    keda.Spec.MinReplicaCount,
				MaxReplicas:    *keda.Spec.MaxReplicaCount,
				Metrics: []autoscalingv2.MetricSpec{{
					Type: autoscalingv2.ExternalMetricSourceType,
					External: &autoscalingv2.ExternalMetricSource{
						Metric: autoscalingv2.MetricIdentifier{Name: "s0-prometheus", Selector: &metav1.LabelSelector{
							MatchLabels: map[string]string{"scaledobject.keda.sh/name": keda.Metadata.Name}}},
						Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: ptr.To(threshold)},
					},
				}},
				Behavior: keda.Spec.Advanced.HorizontalPodAutoscalerConfig.Behavior,
			},
		}
		dryRun(kedaHPA)
	})

	t.Run("the pages name only documented metrics", func(t *testing.T) {
		page, err := os.ReadFile(filepath.Join("..", "docs", "autoscaling.md"))
		if err != nil {
			t.Fatal(err)
		}
		metricsPage, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range regexp.MustCompile(`vllm:[a-z_]+`).FindAllString(string(page), -1) {
			NewWithT(t).Expect(string(metricsPage)).To(ContainSubstring("`"+name+"`"), name)
		}
		for _, name := range documentedMetrics {
			NewWithT(t).Expect(string(metricsPage)).To(ContainSubstring("`"+name+"`"), name)
		}
	})
}
