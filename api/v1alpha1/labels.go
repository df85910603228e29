package v1alpha1

// Labels and annotations the operator puts on the objects it manages.
const (
	// LabelMixtralDeployment selects the engine pods of one MixtralDeployment; its value is
	// the MixtralDeployment's name. status.selector is built from it.
	LabelMixtralDeployment = "serving.moe-operator.io/mixtraldeployment"
	// LabelTemplateHash is a hash of the engine pod template the operator last wrote. A
	// change of the hash replaces the Deployment's template, which rolls the pods.
	LabelTemplateHash = "serving.moe-operator.io/template-hash"
	// AnnotationPlannedReplicas, on a MixtralDeployment, is the replica count the operator
	// last wrote into spec.replicas from the plan. While spec.replicas still equals it, the
	// operator keeps spec.replicas following the plan; a different value was written by
	// someone else (a user, an HPA, KEDA) and is left alone.
	AnnotationPlannedReplicas = "serving.moe-operator.io/planned-replicas"
	// AnnotationServedModelName, on an engine Service, is the model name clients send
	// (spec.model.servedName, else the preset or the object's name). `moe gateway --kubernetes`
	// routes that name to the Service's ready endpoints.
	AnnotationServedModelName = "serving.moe-operator.io/served-model-name"
	// AnnotationHeldRequests, on a MixtralDeployment, is how many requests `moe gateway`
	// holds for it because no replica is ready, and AnnotationHeldAt is when the gateway
	// wrote that count (RFC 3339). The gateway rewrites both while it holds requests; a
	// count older than a minute is stale and ignored (a gateway that died holds nothing).
	// At zero replicas a fresh count above zero wakes the MixtralDeployment.
	AnnotationHeldRequests = "serving.moe-operator.io/held-requests"
	AnnotationHeldAt       = "serving.moe-operator.io/held-at"
)
