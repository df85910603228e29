package controllers

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

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
