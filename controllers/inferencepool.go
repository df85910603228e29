package controllers

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	inferencev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
)

// InferencePools: for users who run a Gateway with the Gateway API Inference Extension
// instead of moe gateway, the operator renders an InferencePool per MixtralDeployment
// (inference.networking.k8s.io/v1, from sigs.k8s.io/gateway-api-inference-extension v1.6.2):
// its serving pods on the engine port, and optionally the pool's endpoint picker.

// +kubebuilder:rbac:groups=inference.networking.k8s.io,resources=inferencepools,verbs=get;list;watch;create;update;patch;delete

var inferencePoolGroupKind = schema.GroupKind{Group: inferencev1.GroupVersion.Group, Kind: "InferencePool"}

// EndpointPicker names each InferencePool's endpoint picker (the extension's EPP Service):
// Name is a pattern in which {name} is the MixtralDeployment's name, Port its gRPC port.
type EndpointPicker struct {
	Name string
	Port int32
}

// ParseEndpointPicker reads NAME-PATTERN:PORT, such as {name}-epp:9002; "" is none.
func ParseEndpointPicker(s string) (*EndpointPicker, error) {
	if s == "" {
		return nil, nil
	}
	name, port, ok := strings.Cut(s, ":")
	p, err := strconv.Atoi(port)
	if !ok || name == "" || err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("endpoint picker %q: want NAME:PORT, where NAME may use {name} (the MixtralDeployment's), for example {name}-epp:9002", s)
	}
	return &EndpointPicker{Name: name, Port: int32(p)}, nil
}

// desiredInferencePool selects the pods that serve w's API (the leaders of multi-node
// replicas) on the engine port.
func desiredInferencePool(w workload, picker *EndpointPicker) *inferencev1.InferencePool {
	labels := map[inferencev1.LabelKey]inferencev1.LabelValue{}
	for k, v := range servingLabels(w.obj) {
		labels[inferencev1.LabelKey(k)] = inferencev1.LabelValue(v)
	}
	pool := &inferencev1.InferencePool{
		ObjectMeta: metav1.ObjectMeta{Name: w.obj.Name, Namespace: w.obj.Namespace, Labels: commonLabels(w.obj.Name)},
		Spec: inferencev1.InferencePoolSpec{
			Selector:    inferencev1.LabelSelector{MatchLabels: labels},
			TargetPorts: []inferencev1.Port{{Number: inferencev1.PortNumber(w.port())}},
			AppProtocol: inferencev1.AppProtocolHTTP,
		},
	}
	if picker != nil {
		pool.Spec.EndpointPickerRef = &inferencev1.EndpointPickerRef{
			Kind: "Service",
			Name: inferencev1.ObjectName(strings.ReplaceAll(picker.Name, "{name}", w.obj.Name)),
			Port: &inferencev1.Port{Number: inferencev1.PortNumber(picker.Port)},
		}
	}
	return pool
}

// syncInferencePool owns the whole spec.
func syncInferencePool(existing, desired *inferencev1.InferencePool) bool {
	// The API server defaults endpointPickerRef's group, kind and failure mode: compare
	// what the operator sets.
	e, d := existing.Spec, desired.Spec
	same := equality.Semantic.DeepEqual(e.Selector, d.Selector) && equality.Semantic.DeepEqual(e.TargetPorts, d.TargetPorts) &&
		(e.EndpointPickerRef == nil) == (d.EndpointPickerRef == nil) &&
		(d.EndpointPickerRef == nil || (e.EndpointPickerRef.Name == d.EndpointPickerRef.Name &&
			equality.Semantic.DeepEqual(e.EndpointPickerRef.Port, d.EndpointPickerRef.Port)))
	if same {
		return false
	}
	existing.Spec = desired.Spec
	return true
}

// reconcileInferencePool renders the InferencePool when the operator runs with
// InferencePools on and the API is served; otherwise it does nothing.
func (r *MixtralDeploymentReconciler) reconcileInferencePool(ctx context.Context, s *scope) error {
	if !r.InferencePools || s.workload == nil {
		return nil
	}
	served, err := r.inferencePoolAPI.served(r, inferencePoolGroupKind, inferencev1.GroupVersion.Version)
	if err != nil || !served {
		return err
	}
	_, err = applyChild(ctx, r.Client, s.obj, "InferencePool", desiredInferencePool(*s.workload, r.EndpointPicker),
		&inferencev1.InferencePool{}, syncInferencePool)
	return err
}
