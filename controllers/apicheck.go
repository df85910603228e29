package controllers

import (
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// DefaultAPIRecheck is how often an optional API that is not served (LeaderWorkerSet,
// InferencePool) is looked for again, and how often an object whose plan needs a
// LeaderWorkerSet is looked at again while the manager does not watch them (it started
// before the LWS CRD was installed).
const DefaultAPIRecheck = time.Minute

func (r *MixtralDeploymentReconciler) apiRecheck() time.Duration {
	if r.APIRecheck > 0 {
		return r.APIRecheck
	}
	return DefaultAPIRecheck
}

// apiCheck remembers whether the API server serves one kind: once it does, for good; that
// it does not, for one recheck interval.
type apiCheck struct {
	mu        sync.Mutex
	installed bool
	checked   time.Time
}

func (c *apiCheck) served(r *MixtralDeploymentReconciler, gk schema.GroupKind, version string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.installed || (!c.checked.IsZero() && time.Since(c.checked) < r.apiRecheck()) {
		return c.installed, nil
	}
	_, err := r.RESTMapper().RESTMapping(gk, version)
	switch {
	case err == nil:
		c.installed = true
	case !meta.IsNoMatchError(err):
		return false, fmt.Errorf("looking up the %s API: %w", gk, err)
	}
	c.checked = time.Now()
	return c.installed, nil
}
