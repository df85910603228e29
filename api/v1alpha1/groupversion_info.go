// Package v1alpha1 holds the MixtralDeployment API of the serving.moe-operator.io group.
//
// A MixtralDeployment declares a Mixtral-architecture model, the accelerator it runs on and
// the throughput and latency the user needs. The operator sizes the deployment with the
// planner (quantization, tensor parallelism, GPUs per replica, replicas), records the plan in
// status and runs the engine (`moe serve`) as a Deployment behind a Service.
//
// +kubebuilder:object:generate=true
// +groupName=serving.moe-operator.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "serving.moe-operator.io", Version: "v1alpha1"}

	// SchemeBuilder registers the API's types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the API's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
