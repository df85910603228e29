package v1alpha1

// Labels and annotations the operator puts on the objects it manages.
const (
	// LabelMixtralDeployment selects the engine pods of one MixtralDeployment; its value is
	// the MixtralDeployment's name. status.selector is built from it.
	LabelMixtralDeployment = "serving.moe-operator.io/mixtraldeployment"
	// LabelTemplateHash is a hash of the engine pod template the operator last wrote. A
	// change of the hash replaces the Deployment's template, which rolls the pods.
	LabelTemplateHash = "serving.moe-operator.io/template-hash"
)
