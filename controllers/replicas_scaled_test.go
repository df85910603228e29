package controllers

import (
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

func TestScaledThroughSubresource(t *testing.T) {
	entry := func(manager, subresource, fields string) metav1.ManagedFieldsEntry {
		return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate,
			Subresource: subresource, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(fields)}}
	}
	tests := []struct {
		name    string
		entries []metav1.ManagedFieldsEntry
		want    bool
	}{
		{name: "the operator's own write", entries: []metav1.ManagedFieldsEntry{
			entry("manager", "", `{"f:metadata":{"f:annotations":{}},"f:spec":{"f:replicas":{}}}`)}},
		{name: "an HPA's write through the scale subresource", want: true, entries: []metav1.ManagedFieldsEntry{
			entry("manager", "", `{"f:metadata":{"f:annotations":{}}}`),
			entry("kube-controller-manager", "scale", `{"f:spec":{"f:replicas":{}}}`)}},
		{name: "a scale entry that no longer owns spec.replicas", entries: []metav1.ManagedFieldsEntry{
			entry("kube-controller-manager", "scale", `{"f:spec":{}}`),
			entry("manager", "", `{"f:spec":{"f:replicas":{}}}`)}},
		{name: "status writes do not count", entries: []metav1.ManagedFieldsEntry{
			entry("manager", "status", `{"f:status":{"f:replicas":{}}}`)}},
		{name: "malformed fields are ignored", entries: []metav1.ManagedFieldsEntry{
			entry("x", "scale", `not json`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := &servingv1alpha1.MixtralDeployment{ObjectMeta: metav1.ObjectMeta{ManagedFields: tt.entries}}
			NewWithT(t).Expect(scaledThroughSubresource(obj)).To(Equal(tt.want))
		})
	}
}
