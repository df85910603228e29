package controllers

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// scaledThroughSubresource reports whether spec.replicas was last written through the scale
// subresource: by kubectl scale, an HPA, KEDA (through its HPA) or the built-in autoscaler.
// The API server records each write's field manager and subresource in managedFields, and a
// write that changes a field makes its manager the field's only owner. Such a value is never
// taken back by the plan, even when it equals the count the operator once wrote: an HPA
// that scales back to the plan's count still owns it, and a re-plan must not fight it.
func scaledThroughSubresource(obj *servingv1alpha1.MixtralDeployment) bool {
	for _, m := range obj.ManagedFields {
		if m.Subresource == "scale" && ownsSpecReplicas(m) {
			return true
		}
	}
	return false
}

// ownsSpecReplicas reports whether a managedFields entry owns spec.replicas.
func ownsSpecReplicas(m metav1.ManagedFieldsEntry) bool {
	if m.FieldsV1 == nil {
		return false
	}
	var fields struct {
		Spec map[string]json.RawMessage `json:"f:spec"`
	}
	if err := json.Unmarshal(m.FieldsV1.Raw, &fields); err != nil {
		return false
	}
	_, ok := fields.Spec["f:replicas"]
	return ok
}
