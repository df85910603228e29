package controllers

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

func withCache(c servingv1alpha1.ModelCacheSpec) func(o *servingv1alpha1.MixtralDeployment) {
	return func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Model.Cache = &c }
}

// The model cache's admission rules join the shared table (TestEnvtestCELRulesRejectAtAdmission
// and TestCELCasesCoverEveryRule run them).
func init() {
	celCases = append(celCases,
		celCase{
			name:    "a cache of zero bytes",
			mutate:  withCache(servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("0")}),
			message: "model.cache.size must be positive, for example 200Gi: the claim must hold the model's files",
		},
		celCase{
			name:    "a read-only-many cache the loader cannot write",
			mutate:  withCache(servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("100Gi"), AccessMode: corev1.ReadOnlyMany}),
			message: "model.cache.accessMode ReadOnlyMany cannot be used: the loader Job writes the model into the claim. Use ReadWriteMany for replicas on several nodes (they still mount it read-only), or ReadWriteOnce for replicas on one node",
		},
		celCase{
			name:    "a read-write-once-pod cache that only one pod may mount",
			mutate:  withCache(servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("100Gi"), AccessMode: corev1.ReadWriteOncePod}),
			message: "model.cache.accessMode ReadWriteOncePod cannot be used: the loader Job and every replica mount the claim. Use ReadWriteMany for replicas on several nodes, or ReadWriteOnce for replicas on one node",
		},
		celCase{
			name: "a cache for a model read from a claim",
			mutate: func(o *servingv1alpha1.MixtralDeployment) {
				withURI("pvc://models/mixtral.gguf")(o)
				o.Spec.Model.Cache = &servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("100Gi")}
			},
			message: "model.cache holds downloaded models (a preset, an hf:// or an https:// URI): a pvc:// or file:// model is read where it is, so remove model.cache",
		},
	)
}

// celTransitionCase is an update that a CEL transition rule must reject: from, applied to
// a valid cached object, is created; to is then applied as an update.
type celTransitionCase struct {
	name     string
	from, to func(c *servingv1alpha1.ModelCacheSpec)
	message  string
}

var celTransitionCases = []celTransitionCase{
	{
		name:    "a storage class changed",
		from:    func(c *servingv1alpha1.ModelCacheSpec) { c.StorageClassName = ptr.To("fast") },
		to:      func(c *servingv1alpha1.ModelCacheSpec) { c.StorageClassName = ptr.To("slow") },
		message: "model.cache.storageClassName is fixed once the claim exists: to move the cache to another class, remove model.cache (the claim is deleted unless whenDeleted is Retain) and add it back",
	},
	{
		name:    "a storage class set after the claim took the default",
		from:    func(c *servingv1alpha1.ModelCacheSpec) {},
		to:      func(c *servingv1alpha1.ModelCacheSpec) { c.StorageClassName = ptr.To("fast") },
		message: "model.cache.storageClassName is fixed once the claim exists: to move the cache to another class, remove model.cache (the claim is deleted unless whenDeleted is Retain) and add it back",
	},
	{
		name:    "an access mode changed",
		from:    func(c *servingv1alpha1.ModelCacheSpec) {},
		to:      func(c *servingv1alpha1.ModelCacheSpec) { c.AccessMode = corev1.ReadWriteMany },
		message: "model.cache.accessMode is fixed once the claim exists: to change it, remove model.cache (the claim is deleted unless whenDeleted is Retain) and add it back",
	},
	{
		name:    "a cache shrunk",
		from:    func(c *servingv1alpha1.ModelCacheSpec) { c.Size = resource.MustParse("200Gi") },
		to:      func(c *servingv1alpha1.ModelCacheSpec) { c.Size = resource.MustParse("100G") },
		message: "model.cache.size cannot shrink: a claim can only grow, where its storage class allows volume expansion",
	},
	{
		name:    "a claim name set after the cache exists",
		from:    func(c *servingv1alpha1.ModelCacheSpec) {},
		to:      func(c *servingv1alpha1.ModelCacheSpec) { c.ClaimName = "shared-models" },
		message: "model.cache.claimName is fixed once the cache exists: to use another claim, remove model.cache and add it back with the new claimName",
	},
	{
		name:    "a claim name changed",
		from:    func(c *servingv1alpha1.ModelCacheSpec) { c.ClaimName = "shared-models" },
		to:      func(c *servingv1alpha1.ModelCacheSpec) { c.ClaimName = "other-models" },
		message: "model.cache.claimName is fixed once the cache exists: to use another claim, remove model.cache and add it back with the new claimName",
	},
}

// TestEnvtestModelCacheTransitionRules updates a stored object (dry run) against the real
// API server and expects each transition rule's message; growing the cache is allowed.
func TestEnvtestModelCacheTransitionRules(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	for i, tc := range celTransitionCases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			obj := loadSample(t, h100Sample, ns)
			obj.Name = "transition-" + string(rune('a'+i))
			obj.Spec.Model.Cache = &servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("150Gi")}
			tc.from(obj.Spec.Model.Cache)
			g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
			err := updateLatest(ctx, obj, func(o *servingv1alpha1.MixtralDeployment) { tc.to(o.Spec.Model.Cache) })
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tc.message))
		})
	}
	t.Run("a cache grown", func(t *testing.T) {
		g := NewWithT(t)
		obj := loadSample(t, h100Sample, ns)
		obj.Name = "transition-grow"
		obj.Spec.Model.Cache = &servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("100Gi")}
		g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		g.Expect(obj.Spec.Model.Cache.AccessMode).To(Equal(corev1.ReadWriteOnce), "the access mode defaults to ReadWriteOnce")
		g.Expect(obj.Spec.Model.Cache.WhenDeleted).To(Equal(servingv1alpha1.CacheDelete), "the claim is deleted with the object by default")
		g.Expect(updateLatest(ctx, obj, func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Model.Cache.Size = resource.MustParse("200Gi")
		})).To(Succeed())
	})
}

// updateLatest applies edit to the latest version of obj and submits it as
// a dry run, retrying when the operator's own writes (it reconciles the
// object meanwhile) make the resourceVersion stale. Validation errors are
// returned as they are.
func updateLatest(ctx context.Context, obj *servingv1alpha1.MixtralDeployment, edit func(*servingv1alpha1.MixtralDeployment)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest := &servingv1alpha1.MixtralDeployment{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), latest); err != nil {
			return err
		}
		edit(latest)
		return k8sClient.Update(ctx, latest, client.DryRunAll)
	})
}
