package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// The annotations the gateway writes on a MixtralDeployment whose model has requests
// held: their count, and when it was written (RFC 3339). They are api/v1alpha1's
// AnnotationHeldRequests and AnnotationHeldAt, by value (a test in controllers holds them
// equal); the operator's autoscaler scales a MixtralDeployment at zero replicas up when
// the count is above zero and less than a minute old.
const (
	AnnotationHeldRequests = "serving.moe-operator.io/held-requests"
	AnnotationHeldAt       = "serving.moe-operator.io/held-at"
	// labelMixtralDeployment, on an engine Service, names its MixtralDeployment.
	labelMixtralDeployment = "serving.moe-operator.io/mixtraldeployment"
)

// mixtralDeployments is the MixtralDeployment resource, written through the dynamic client
// so that the gateway imports nothing of the operator.
var mixtralDeployments = schema.GroupVersionResource{Group: "serving.moe-operator.io", Version: "v1alpha1", Resource: "mixtraldeployments"}

// Cluster is the gateway's view of the cluster beyond its replicas: it tells the operator
// about held requests.
//
// An annotation, not a status field, carries the signal: status belongs to the operator
// (its reconciler rewrites status from what it observes, and two writers of one status
// would overwrite each other), while an annotation is the gateway's own field, and needs
// only the patch verb on mixtraldeployments. The operator watches it; a change of the
// count starts a reconcile at once, so a model at zero does not wait for the autoscaler's
// next pass.
type Cluster struct {
	services corelisters.ServiceLister
	dyn      dynamic.Interface
}

// Wake writes held and the time onto every MixtralDeployment whose engine Service serves
// model. It implements gateway.Waker.
func (c *Cluster) Wake(ctx context.Context, model string, held int) error {
	svcs, err := c.services.List(labels.Everything())
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		AnnotationHeldRequests: strconv.Itoa(held),
		AnnotationHeldAt:       time.Now().UTC().Format(time.RFC3339),
	}}})
	if err != nil {
		return err
	}
	var errs []error
	found := false
	for _, s := range svcs {
		if s.Annotations[AnnotationServedModelName] != model {
			continue
		}
		found = true
		name := s.Labels[labelMixtralDeployment]
		if name == "" {
			name = s.Name // the operator names the Service after its MixtralDeployment
		}
		if _, err := c.dyn.Resource(mixtralDeployments).Namespace(s.Namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "moe-gateway"}); err != nil {
			errs = append(errs, fmt.Errorf("MixtralDeployment %s/%s: %w", s.Namespace, name, err))
		}
	}
	if !found {
		return fmt.Errorf("no engine Service serves %s", model)
	}
	return errors.Join(errs...)
}
