package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/planner"
)

var crdPath = filepath.Join("..", "config", "crd", "bases", "serving.moe-operator.io_mixtraldeployments.yaml")

func loadCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	data, err := os.ReadFile(crdPath)
	if err != nil {
		t.Fatalf("reading the CRD: %v", err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(data, crd); err != nil {
		t.Fatalf("decoding the CRD: %v", err)
	}
	return crd
}

func enumOf(t *testing.T, props apiextensionsv1.JSONSchemaProps) []string {
	t.Helper()
	var out []string
	for _, v := range props.Enum {
		var s string
		if err := json.Unmarshal(v.Raw, &s); err != nil {
			t.Fatalf("enum value %s: %v", v.Raw, err)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// TestCRDEnumsMatchThePlanner holds the API's enums to the planner's catalogs, so a
// catalog entry can never be unreachable or an accepted value unplannable.
func TestCRDEnumsMatchThePlanner(t *testing.T) {
	g := NewWithT(t)
	spec := loadCRD(t).Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]

	accelerators := slices.Sorted(slices.Values(planner.AcceleratorNames()))
	g.Expect(enumOf(t, spec.Properties["accelerator"].Properties["type"])).To(Equal(accelerators))

	models := slices.Sorted(slices.Values(planner.ModelNames()))
	g.Expect(enumOf(t, spec.Properties["model"].Properties["preset"])).To(Equal(models))
	g.Expect(enumOf(t, spec.Properties["model"].Properties["shape"].Properties["preset"])).To(Equal(models))
	for _, name := range models {
		g.Expect(presetSources).To(HaveKey(BeEquivalentTo(name)), "every preset has a source")
	}

	quants := slices.Sorted(slices.Values(planner.QuantizationNames()))
	g.Expect(enumOf(t, spec.Properties["quantization"])).To(Equal(quants))
}

func toJSONMap(t *testing.T, v any) map[string]any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Messages of the extraArgs rules that keep the API key, the listen address and the
// shutdown grace with the operator (celCases holds the rejected specs).
const (
	apiKeyArgMessage        = "engine.extraArgs must not set --api-key or --api-key-file: a key on the command line is visible to everyone who can read the pod. Put the key in a Secret and set engine.apiKeySecretRef (the operator mounts it as a file)"
	hostArgMessage          = "engine.extraArgs must not set --host: the operator owns the listen address (all interfaces, so that the probes, the Service and the autoscaler reach the engine)"
	shutdownGraceArgMessage = "engine.extraArgs --shutdown-grace must be a duration of at most 40s, for example 30s: the pod's termination grace period is 45s and the preStop sleep before SIGTERM takes 5s, so a longer grace would be cut off by SIGKILL"
)

// TestShutdownGraceRuleMatchesThePod holds the CRD's --shutdown-grace bound to the pod the
// builder makes: the termination grace period less the preStop sleep.
func TestShutdownGraceRuleMatchesThePod(t *testing.T) {
	g := NewWithT(t)
	limit := time.Duration(engineStopGrace-endpointDrainSeconds) * time.Second
	g.Expect(limit).To(Equal(40 * time.Second))
	var rules []apiextensionsv1.ValidationRule
	crdRules(*loadCRD(t).Spec.Versions[0].Schema.OpenAPIV3Schema, &rules)
	found := false
	for _, r := range rules {
		if r.Message == shutdownGraceArgMessage {
			found = true
			g.Expect(r.Rule).To(ContainSubstring("duration('" + limit.String() + "')"))
		}
	}
	g.Expect(found).To(BeTrue(), "no --shutdown-grace rule in the CRD")
	g.Expect(shutdownGraceArgMessage).To(ContainSubstring(fmt.Sprintf("termination grace period is %ds", engineStopGrace)))
	g.Expect(shutdownGraceArgMessage).To(ContainSubstring(fmt.Sprintf("takes %ds", endpointDrainSeconds)))
}

// TestEnvtestEngineArgsTheRulesAdmit: the extraArgs rules refuse only what they name, so a
// grace within the pod's, flags that merely start like a refused one, and an API key
// through its Secret reference (whose key defaults to api-key) are admitted.
func TestEnvtestEngineArgsTheRulesAdmit(t *testing.T) {
	requireEnvtest(t)
	ns := newNamespace(t)
	for name, args := range map[string][]string{
		"a shutdown grace at the limit":            {"--shutdown-grace=40s"},
		"a shutdown grace as two arguments":        {"--shutdown-grace", "30s"},
		"a zero shutdown grace":                    {"--shutdown-grace", "0"},
		"a fractional shutdown grace":              {"--shutdown-grace=1.5s"},
		"a grace in microseconds, as Go writes it": {"--shutdown-grace=1500000µs"},
		"flags that only start like a refused one": {"--hostname-label=x", "--api-keys-are-great"},
		"the maximum queue and the batched tokens": {"--max-queue", "64", "--max-batched-tokens=1024"},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			obj := loadSample(t, h100Sample, ns)
			obj.Spec.Engine.ExtraArgs = args
			g.Expect(k8sClient.Create(context.Background(), obj, client.DryRunAll)).To(Succeed())
		})
	}

	// metav1.Duration writes time.Duration.String(), which spells microseconds "µs": a Go
	// client's value must pass the duration patterns (the e2e's chaos suite met this).
	t.Run("durations in microseconds", func(t *testing.T) {
		g := NewWithT(t)
		obj := loadSample(t, h100Sample, ns)
		obj.Spec.Targets.InterTokenLatency = &metav1.Duration{Duration: 1500 * time.Microsecond}
		g.Expect(obj.Spec.Targets.InterTokenLatency.Duration.String()).To(Equal("1.5ms"))
		obj.Spec.Targets.TimeToFirstToken = &metav1.Duration{Duration: 7 * time.Microsecond}
		g.Expect(obj.Spec.Targets.TimeToFirstToken.Duration.String()).To(Equal("7µs"))
		g.Expect(k8sClient.Create(context.Background(), obj, client.DryRunAll)).To(Succeed())
	})

	t.Run("an API key Secret reference", func(t *testing.T) {
		g := NewWithT(t)
		obj := loadSample(t, h100Sample, ns)
		obj.Spec.Engine.APIKeySecretRef = &servingv1alpha1.APIKeySecretReference{Name: "engine-key"}
		g.Expect(k8sClient.Create(context.Background(), obj, client.DryRunAll)).To(Succeed())
		g.Expect(obj.Spec.Engine.APIKeySecretRef.Key).To(Equal("api-key"), "the key defaults to api-key")
	})
	t.Run("an API key Secret reference with a bad name", func(t *testing.T) {
		g := NewWithT(t)
		obj := loadSample(t, h100Sample, ns)
		obj.Spec.Engine.APIKeySecretRef = &servingv1alpha1.APIKeySecretReference{Name: "Engine_Key"}
		err := k8sClient.Create(context.Background(), obj, client.DryRunAll)
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
		g.Expect(err.Error()).To(ContainSubstring("spec.engine.apiKeySecretRef.name"))
	})
}

// TestCRDFitsClientSideApply: `kubectl apply` without --server-side stores the whole object
// in the kubectl.kubernetes.io/last-applied-configuration annotation, and the API server
// refuses annotations over 256 KiB in total. The CRD's JSON stays well under that.
func TestCRDFitsClientSideApply(t *testing.T) {
	data, err := json.Marshal(loadCRD(t))
	if err != nil {
		t.Fatal(err)
	}
	const limit = 256 << 10
	t.Logf("the CRD is %d bytes of JSON, %.0f%% of the annotation limit", len(data), 100*float64(len(data))/limit)
	if len(data) > limit*3/4 {
		t.Errorf("the CRD is %d bytes of JSON: above 3/4 of the %d-byte annotation limit that client-side apply must fit in", len(data), limit)
	}
}
