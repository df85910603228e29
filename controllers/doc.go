// Package controllers holds the MixtralDeployment reconciler.
//
// A reconcile pass fetches the object, runs small phases in order and writes status once:
//
//	plan      the planner sizes the deployment from the spec; infeasible targets are
//	          reported in the Planned condition, not retried
//	replicas  spec.replicas is filled in from the plan when unset (the scale subresource
//	          needs it) and follows the plan only while it holds the operator's value and
//	          was not written through the scale subresource
//	autoscale with spec.autoscaling.enabled, the ready engines' metrics are read and
//	          spec.replicas written through the scale subresource (autoscaler.go,
//	          docs/autoscaling.md)
//	workload  the engine Deployment (`moe serve`), built by desiredDeployment
//	service   the ClusterIP Service, port "http"
//	pdb       a PodDisruptionBudget allowing one voluntary disruption at a time
//	status    every owned condition recomputed, events on plan changes
//
// The desired-object builders are pure functions of a workload value and are table-tested;
// applying them compares only the fields the operator owns, so a second pass over an
// unchanged object writes nothing.
package controllers

// The manager serves its metrics behind controller-runtime's authentication and
// authorization filter (cmd/manager --metrics-secure), which asks the API server to review
// each scraper's token and its access to the /metrics URL.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
