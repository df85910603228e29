package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	inferencev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	lwsv1 "sigs.k8s.io/lws/api/leaderworkerset/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/planner"
)

// The envtest suite runs the reconciler in a manager against a real kube-apiserver and etcd
// (no kubelet or controller-manager: pods never run and Deployment status changes only when
// a test writes it). `make test` builds the binaries and sets KUBEBUILDER_ASSETS; without it
// these tests skip, unless MOE_REQUIRE_ENVTEST=1 makes that a failure.

var (
	testEnv    *envtest.Environment
	restConfig *rest.Config
	// k8sClient reads and writes the API server directly, never through a cache.
	k8sClient  client.Client
	testScheme = runtime.NewScheme()
	envErr     error

	// solveCalls counts planner calls per accelerator, to show that infeasible specs are
	// not retried in a hot loop.
	solveCalls sync.Map // accelerator name -> *atomic.Int64
)

const (
	envtestImage    = "example.com/moe-engine:envtest"
	envtestGPUImage = "example.com/moe-engine:envtest-vulkan"
)

func TestMain(m *testing.M) {
	utilruntime.Must(clientgoscheme.AddToScheme(testScheme))
	utilruntime.Must(servingv1alpha1.AddToScheme(testScheme))
	utilruntime.Must(lwsv1.AddToScheme(testScheme))
	utilruntime.Must(inferencev1.Install(testScheme))
	level := zapcore.ErrorLevel
	if os.Getenv("MOE_TEST_DEBUG") != "" {
		level = zapcore.DebugLevel
	}
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(level)))

	var stop func()
	if os.Getenv("KUBEBUILDER_ASSETS") != "" {
		stop, envErr = startEnvironment()
	} else {
		envErr = errNoAssets
	}
	code := m.Run()
	if stop != nil {
		stop()
	}
	os.Exit(code)
}

var errNoAssets = fmt.Errorf("KUBEBUILDER_ASSETS is not set; run `make test` (it builds kube-apiserver and etcd with hack/setup-envtest.sh)")

// startEnvironment starts the control plane, installs the CRDs from config/ and runs the
// manager with the reconciler. It returns a function that stops both.
func startEnvironment() (func(), error) {
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := testEnv.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest: %w", err)
	}
	restConfig = cfg
	k8sClient, err = client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		_ = testEnv.Stop()
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testScheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// The autoscaler tests run managers of their own (autoscaler_harness_test.go).
		Cache: suiteCacheOptions(),
	})
	if err != nil {
		_ = testEnv.Stop()
		return nil, err
	}
	r := &MixtralDeploymentReconciler{
		Client:         mgr.GetClient(),
		Recorder:       mgr.GetEventRecorder("moe-operator"),
		EngineImage:    envtestImage,
		EngineGPUImage: envtestGPUImage,
		Solve:          countingSolve,
		// Loader pods never run in envtest: tests write their status and feed the lines
		// `moe pull` would print (modelcache_envtest_test.go).
		Progress:         fedPullOutput,
		PodReader:        mgr.GetAPIReader(),
		PullPollInterval: 200 * time.Millisecond,
		APIRecheck:       500 * time.Millisecond,
		InferencePools:   true,
		EndpointPicker:   &EndpointPicker{Name: "{name}-epp", Port: 9002},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		_ = testEnv.Stop()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() {
		cancel()
		<-done
		_ = testEnv.Stop()
	}, nil
}

func countingSolve(req planner.Request) (planner.Result, error) {
	n, _ := solveCalls.LoadOrStore(req.Accelerator.Name, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	return planner.Solve(req)
}

func solveCount(accelerator string) int64 {
	n, ok := solveCalls.Load(accelerator)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// requireEnvtest skips (or, with MOE_REQUIRE_ENVTEST=1, fails) a test when the control
// plane is not available.
func requireEnvtest(t *testing.T) {
	t.Helper()
	if envErr == nil {
		return
	}
	if os.Getenv("MOE_REQUIRE_ENVTEST") != "" || envErr != errNoAssets {
		t.Fatalf("envtest: %v", envErr)
	}
	t.Skipf("envtest: %v", envErr)
}

// newNamespace creates a namespace for one test, so tests never see each other's objects.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "mxd-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	return ns.Name
}

// eventually polls f until it passes, for changes the manager makes asynchronously.
func eventually(t *testing.T, f func(g Gomega)) {
	t.Helper()
	NewWithT(t).Eventually(f).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// recordedEvents lists the events recorded on the MixtralDeployment named name.
func recordedEvents(g Gomega, ns, name string) []eventsv1.Event {
	list := &eventsv1.EventList{}
	g.Expect(k8sClient.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == "MixtralDeployment" && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}
