package v1alpha1

// Condition types a MixtralDeployment reports. The reconciler sets Planned, Available,
// Progressing and Degraded on every pass.
const (
	// ConditionPlanned is True when the planner found a configuration that meets the targets.
	ConditionPlanned = "Planned"
	// ConditionAvailable is True when at least one engine replica is ready to serve.
	ConditionAvailable = "Available"
	// ConditionProgressing is True while the engine Deployment rolls out a change.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when the deployment cannot reach or keep its desired state.
	ConditionDegraded = "Degraded"

	// ConditionScalingActive is owned by the built-in autoscaler: True when it can compute
	// a replica count from the engines' metrics.
	ConditionScalingActive = "ScalingActive"
	// ConditionScalingLimited is owned by the built-in autoscaler: True when the desired
	// replica count was clamped to minReplicas or maxReplicas.
	ConditionScalingLimited = "ScalingLimited"
)

// Reasons of the Planned condition.
const (
	// ReasonPlanFound: the planner chose a configuration (see status.plan.reason).
	ReasonPlanFound = "PlanFound"
	// ReasonTargetsInfeasible: no configuration on this accelerator meets the targets
	// within the overrides; the message says what would be needed.
	ReasonTargetsInfeasible = "TargetsInfeasible"
	// ReasonInvalidSpec: the planner refused the request itself, for example a
	// maxContextLength beyond the model's context length.
	ReasonInvalidSpec = "InvalidSpec"
)

// Reasons of the Available condition.
const (
	// ReasonReplicasReady: at least one replica is ready.
	ReasonReplicasReady = "ReplicasReady"
	// ReasonNoReplicasReady: replicas exist or are wanted but none is ready yet.
	ReasonNoReplicasReady = "NoReplicasReady"
	// ReasonScaledToZero: spec.replicas is 0.
	ReasonScaledToZero = "ScaledToZero"
	// ReasonNotPlanned: there is no plan, so no workload runs.
	ReasonNotPlanned = "NotPlanned"
)

// Reasons of the Progressing condition.
const (
	// ReasonRollingOut: the Deployment is creating or replacing pods.
	ReasonRollingOut = "RollingOut"
	// ReasonRolloutComplete: every replica runs the current template and is ready.
	ReasonRolloutComplete = "RolloutComplete"
)

// Reasons of the Degraded condition.
const (
	// ReasonAsExpected: nothing is wrong.
	ReasonAsExpected = "AsExpected"
	// ReasonRolloutStalled: the Deployment exceeded its progress deadline.
	ReasonRolloutStalled = "RolloutStalled"
	// ReasonReplicaFailure: the Deployment could not create pods (quota, admission, ...).
	ReasonReplicaFailure = "ReplicaFailure"
	// ReasonReplicasUnavailable: the rollout finished but fewer replicas are ready than wanted.
	ReasonReplicasUnavailable = "ReplicasUnavailable"
	// ReasonReconcileError: the operator failed to apply a child object; it retries.
	ReasonReconcileError = "ReconcileError"
	// ReasonChildConflict: a child object with the operator's name exists but belongs to
	// something else; the operator leaves it alone.
	ReasonChildConflict = "ChildConflict"
	// ReasonAPIKeyUnavailable: an engine pod exited because it could not read its API key:
	// the Secret or the key that spec.engine.apiKeySecretRef names is missing or empty.
	ReasonAPIKeyUnavailable = "APIKeyUnavailable"
	// ReasonEngineFailing: an engine container is down after exiting with an error (a
	// model file it refuses, an out-of-memory kill); the message has its last words. The
	// same reason is a Warning event.
	ReasonEngineFailing = "EngineFailing"
	// ReasonLeaderWorkerSetMissing (Degraded, Available and Progressing): the plan runs each
	// replica across nodes, which needs the LeaderWorkerSet API, and the cluster does not
	// serve it.
	ReasonLeaderWorkerSetMissing = "LeaderWorkerSetMissing"
)

// Event reasons the reconciler records on a MixtralDeployment.
const (
	// EventPlanChanged: a new or different plan was chosen.
	EventPlanChanged = "PlanChanged"
	// EventPlanInfeasible: the targets cannot be met.
	EventPlanInfeasible = "PlanInfeasible"
	// EventReplicasFromPlan: the operator set spec.replicas to the plan's count.
	EventReplicasFromPlan = "ReplicasFromPlan"
)
