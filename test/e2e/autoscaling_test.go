//go:build e2e

package e2e

import (
	"context"
	"testing"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// testAutoscaling is the end-to-end hook of the autoscaling work (issue 7), run between the
// chat and rollout steps on the same MixtralDeployment (one ready replica of the small model,
// its Service reachable through newClient). To fill it in:
//  1. patch mxd's spec.autoscaling (enabled, minReplicas 1, maxReplicas 2, a Concurrency or
//     QueueDepth target the load below exceeds, a short scale-down window);
//  2. drive sustained load through the Service: startLoad(ctx, ec, model, clients), with
//     enough clients and max_tokens to keep vllm:num_requests_waiting above the target;
//  3. eventually(...) the Deployment's spec.replicas and then its ready replicas reach 2, and
//     report the reaction time (t.Logf); check status.autoscaling and ScalingActive;
//  4. stop the load; eventually the replicas return to 1 after the scale-down window;
//  5. disable autoscaling again and restore spec.replicas, so the rollout step that follows
//     starts from one replica.
//
// The node has 2 CPUs: keep engine CPU requests at 250m so that a second replica schedules.
func testAutoscaling(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) {
	t.Skip("autoscaling end-to-end: filled in by the autoscaling work (issue 7); see the comment above")
}
