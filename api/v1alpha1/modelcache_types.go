package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ModelCacheRetention says what happens to the cache claim when its MixtralDeployment is
// deleted.
// +kubebuilder:validation:Enum=Delete;Retain
type ModelCacheRetention string

// Cache retention policies.
const (
	// CacheDelete gives the claim an owner reference to the MixtralDeployment, so the
	// garbage collector deletes it (and, by the storage class's reclaim policy, usually the
	// volume) with the MixtralDeployment.
	CacheDelete ModelCacheRetention = "Delete"
	// CacheRetain leaves the claim without an owner reference: it outlives the
	// MixtralDeployment, and a MixtralDeployment created again with the same name and
	// namespace takes it over with the model already in it. The operator records who
	// retained it in the annotation AnnotationRetainedBy; a claim without that annotation
	// is never taken over unless model.cache.claimName names it.
	CacheRetain ModelCacheRetention = "Retain"
)

// ModelCacheSpec asks for a PersistentVolumeClaim that holds the downloaded model. A loader
// Job fills it once with `moe pull`; every replica mounts it read-only and opens the model
// from it without the network. Replicas start only once the pull is complete (see the
// ModelCached condition).
//
// +kubebuilder:validation:XValidation:rule="quantity(string(self.size)).isGreaterThan(quantity('0'))",message="model.cache.size must be positive, for example 200Gi: the claim must hold the model's files"
// +kubebuilder:validation:XValidation:rule="self.accessMode != 'ReadOnlyMany'",message="model.cache.accessMode ReadOnlyMany cannot be used: the loader Job writes the model into the claim. Use ReadWriteMany for replicas on several nodes (they still mount it read-only), or ReadWriteOnce for replicas on one node"
// +kubebuilder:validation:XValidation:rule="self.accessMode != 'ReadWriteOncePod'",message="model.cache.accessMode ReadWriteOncePod cannot be used: the loader Job and every replica mount the claim. Use ReadWriteMany for replicas on several nodes, or ReadWriteOnce for replicas on one node"
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="model.cache.storageClassName is fixed once the claim exists: to move the cache to another class, remove model.cache (the claim is deleted unless whenDeleted is Retain) and add it back"
// +kubebuilder:validation:XValidation:rule="self.accessMode == oldSelf.accessMode",message="model.cache.accessMode is fixed once the claim exists: to change it, remove model.cache (the claim is deleted unless whenDeleted is Retain) and add it back"
// +kubebuilder:validation:XValidation:rule="quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0",message="model.cache.size cannot shrink: a claim can only grow, where its storage class allows volume expansion"
// +kubebuilder:validation:XValidation:rule="has(self.claimName) == has(oldSelf.claimName) && (!has(self.claimName) || self.claimName == oldSelf.claimName)",message="model.cache.claimName is fixed once the cache exists: to use another claim, remove model.cache and add it back with the new claimName"
type ModelCacheSpec struct {
	// ClaimName names the PersistentVolumeClaim that holds the cache; it defaults to
	// NAME-model-cache. When no claim of that name exists the operator creates it, as
	// whenDeleted says. When one exists that the operator did not create for this
	// MixtralDeployment (a claim you made or filled yourself, or one another
	// MixtralDeployment retained), naming it here is how you hand it over: the operator
	// then uses it as it is and never deletes, resizes or relabels it. Fixed once set.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ClaimName string `json:"claimName,omitempty"`

	// StorageClassName is the claim's storage class; unset uses the cluster's default class.
	// Fixed once the claim exists.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageClassName *string `json:"storageClassName,omitempty"`

	// Size is the claim's capacity. It must hold the model's files: about 2 bytes per
	// parameter for BF16 safetensors (Mixtral-8x7B: 94 GB), less for a quantized GGUF file.
	// It may grow later (the claim is expanded where its storage class allows it), never
	// shrink.
	Size resource.Quantity `json:"size"`

	// AccessMode is the claim's access mode. ReadWriteOnce, the default, works with every
	// storage class, but the volume attaches to one node at a time, so the operator keeps
	// the replicas on one node (a required pod affinity among them). Replicas spread over
	// several nodes need ReadWriteMany (for example NFS, CephFS, EFS or Filestore). Replicas
	// always mount the claim read-only. Fixed once the claim exists.
	// +optional
	// +kubebuilder:default=ReadWriteOnce
	// +kubebuilder:validation:Enum=ReadWriteOnce;ReadOnlyMany;ReadWriteMany;ReadWriteOncePod
	AccessMode corev1.PersistentVolumeAccessMode `json:"accessMode,omitempty"`

	// WhenDeleted is what happens to the claim when the MixtralDeployment is deleted:
	// Delete (the default) removes it with the MixtralDeployment; Retain keeps it, so that
	// a MixtralDeployment created again under the same name reuses the downloaded model.
	// Removing model.cache from the spec follows the same policy.
	// +optional
	// +kubebuilder:default=Delete
	WhenDeleted ModelCacheRetention `json:"whenDeleted,omitempty"`
}

// ModelCacheStatus reports the model cache: its claim, the loader Job and the pull's
// progress, as `moe pull` last reported it.
type ModelCacheStatus struct {
	// ClaimName is the PersistentVolumeClaim that holds the model.
	// +optional
	ClaimName string `json:"claimName,omitempty"`

	// JobName is the loader Job that fills the claim.
	// +optional
	JobName string `json:"jobName,omitempty"`

	// BytesDone of BytesTotal are in the cache: downloaded by this pull, resumed from an
	// earlier partial download, or already there.
	// +optional
	BytesDone int64 `json:"bytesDone,omitempty"`

	// BytesTotal is the size of the model's files.
	// +optional
	BytesTotal int64 `json:"bytesTotal,omitempty"`

	// Percent is BytesDone of BytesTotal, from 0 to 100.
	// +optional
	Percent int32 `json:"percent,omitempty"`

	// BytesDownloaded is what the pull transferred over the network; it stays 0 when the
	// cache already held the model.
	// +optional
	BytesDownloaded int64 `json:"bytesDownloaded,omitempty"`

	// FilesDone of FilesTotal are complete.
	// +optional
	FilesDone int32 `json:"filesDone,omitempty"`

	// FilesTotal is the number of files the model has.
	// +optional
	FilesTotal int32 `json:"filesTotal,omitempty"`

	// BytesPerSecond is the recent download rate.
	// +optional
	BytesPerSecond int64 `json:"bytesPerSecond,omitempty"`

	// ETASeconds is the estimated time left at that rate; 0 when unknown.
	// +optional
	ETASeconds int64 `json:"etaSeconds,omitempty"`

	// LastUpdateTime is when the loader reported the numbers above.
	// +optional
	LastUpdateTime *metav1.Time `json:"lastUpdateTime,omitempty"`
}

// ConditionModelCached is True when the model is complete in the cache claim
// (spec.model.cache), so replicas can open it. It is absent without spec.model.cache.
const ConditionModelCached = "ModelCached"

// Reasons of the ModelCached condition. Each failure reason names what the user must fix;
// `moe pull`'s exit code (see engine/source) selects it.
const (
	// ReasonCached: the loader Job completed; the model is in the claim.
	ReasonCached = "Cached"
	// ReasonPulling: the loader is downloading the model (see status.modelCache).
	ReasonPulling = "Pulling"
	// ReasonLoaderPending: the loader pod cannot start yet: it is unschedulable, its image
	// cannot be pulled, its token Secret is missing, or the claim is not bound.
	ReasonLoaderPending = "LoaderPending"
	// ReasonCacheClaimMismatch: the claim exists with a storage class or access mode other
	// than spec.model.cache asks for (a retained claim, or one changed by hand).
	ReasonCacheClaimMismatch = "CacheClaimMismatch"
	// ReasonTokenRejected: the source answered 401 or 403 (exit code 3): the token is
	// missing, invalid, or lacks access to a gated repository.
	ReasonTokenRejected = "TokenRejected"
	// ReasonModelNotFound: the repository, revision or file does not exist (exit code 4).
	ReasonModelNotFound = "ModelNotFound"
	// ReasonChecksumMismatch: downloaded bytes did not match the published sha256 (exit
	// code 5); they were refused.
	ReasonChecksumMismatch = "ChecksumMismatch"
	// ReasonSourceUnavailable: server or network failures outlasted every retry, of the
	// pull and of the Job (exit code 6).
	ReasonSourceUnavailable = "SourceUnavailable"
	// ReasonCacheStorageError: the claim is full or not writable (exit code 7).
	ReasonCacheStorageError = "CacheStorageError"
	// ReasonInvalidSource: `moe pull` refused the URI or its arguments (exit code 2).
	ReasonInvalidSource = "InvalidSource"
	// ReasonPullFailed: the loader Job failed for another reason (exit code 1, a deadline,
	// or pods that never reported).
	ReasonPullFailed = "PullFailed"
)

// Reasons other conditions give while the model cache holds the engine back.
const (
	// ReasonModelNotCached (Available, Progressing): no engine runs yet because the model
	// is not in the cache; see ModelCached.
	ReasonModelNotCached = "ModelNotCached"
	// ReasonCachingModel (Progressing): the model is being cached before the engine starts.
	ReasonCachingModel = "CachingModel"
	// ReasonModelCacheFailed (Degraded): the pull failed; ModelCached says why.
	ReasonModelCacheFailed = "ModelCacheFailed"
)

// Event reasons of the model cache.
const (
	// EventModelPullStarted: a loader Job was created.
	EventModelPullStarted = "ModelPullStarted"
	// EventModelCached: the loader Job completed.
	EventModelCached = "ModelCached"
	// EventModelPullFailed: the loader Job failed.
	EventModelPullFailed = "ModelPullFailed"
)

// Labels of the model cache's objects.
const (
	// LabelModelCache, on a cache claim and loader Jobs, is the name of the
	// MixtralDeployment they serve. It selects; it never grants ownership: anyone who can
	// label a claim could set it.
	LabelModelCache = "serving.moe-operator.io/model-cache"

	// AnnotationRetainedBy, on a cache claim, is NAMESPACE/NAME of the MixtralDeployment
	// that kept it with whenDeleted: Retain. Only a MixtralDeployment of that namespace and
	// name takes an unowned claim over by itself; to hand a claim to another, name it in
	// model.cache.claimName.
	AnnotationRetainedBy = "serving.moe-operator.io/retained-by"
)
