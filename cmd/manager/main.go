// Command manager runs the moe-operator controller manager: the MixtralDeployment
// reconciler, its metrics endpoint, health probes and leader election.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	inferencev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	lwsv1 "sigs.k8s.io/lws/api/leaderworkerset/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/controllers"
)

// defaultEngineImage is the engine image for MixtralDeployments that name none. Release
// builds stamp it with -ldflags "-X main.defaultEngineImage=...".
var defaultEngineImage = "ghcr.io/moe-operator/moe-engine:dev"

// defaultEngineGPUImage is the engine image with the Vulkan backend, for GPU accelerators;
// release builds stamp it like defaultEngineImage.
var defaultEngineGPUImage = "ghcr.io/moe-operator/moe-engine:dev-vulkan"

// leaderElectionID names the Lease the manager replicas compete for.
const leaderElectionID = "moe-operator.serving.moe-operator.io"

// options are the manager's command-line settings.
type options struct {
	metricsAddr string
	// metricsSecure serves /metrics over HTTPS to callers the API server authenticates
	// (TokenReview) and authorizes (SubjectAccessReview: get on the /metrics URL).
	metricsSecure  bool
	probeAddr      string
	leaderElect    bool
	leaderElectNS  string
	logLevel       zapcore.Level
	logFormat      string
	engineImage    string
	engineGPUImage string
	vllmImage      string
	// inferencePools and endpointPicker render an InferencePool per MixtralDeployment.
	inferencePools bool
	endpointPicker *controllers.EndpointPicker
	// autoscalerSyncPeriod is how often autoscaled MixtralDeployments' engines are read.
	autoscalerSyncPeriod time.Duration
}

// parseFlags reads the command line; it returns flag.ErrHelp for -h.
func parseFlags(args []string, output io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443",
		"Address the Prometheus metrics endpoint binds to (host:port); \"0\" disables it.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS, only to callers whose bearer token the API server authenticates and who may get the /metrics URL "+
			"(the metrics-reader ClusterRole); false serves plain HTTP to anyone who reaches the port.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081",
		"Address the /healthz and /readyz endpoints bind to.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"Elect a leader through a Lease so only one manager replica reconciles at a time.")
	fs.StringVar(&o.leaderElectNS, "leader-election-namespace", "",
		"Namespace of the leader-election Lease; defaults to the manager's own namespace.")
	level := fs.String("log-level", "info", "Log level: debug, info, warn or error.")
	fs.StringVar(&o.logFormat, "log-format", "json", "Log format: json or console.")
	fs.StringVar(&o.engineImage, "engine-image", defaultEngineImage,
		"Engine image for MixtralDeployments on the cpu accelerator whose spec.engine.image is empty (static, no Vulkan backend).")
	fs.StringVar(&o.engineGPUImage, "engine-gpu-image", defaultEngineGPUImage,
		"Engine image for MixtralDeployments on GPU accelerators whose spec.engine.image is empty: the engine with its Vulkan backend and the Vulkan loader.")
	fs.StringVar(&o.vllmImage, "vllm-image", controllers.DefaultVLLMImage,
		"vLLM image for MixtralDeployments with spec.engine.runtime vllm whose spec.engine.image is empty.")
	fs.BoolVar(&o.inferencePools, "inference-pools", false,
		"Render an InferencePool (Gateway API Inference Extension, inference.networking.k8s.io/v1) per MixtralDeployment, when that API is served.")
	picker := fs.String("inference-pool-endpoint-picker", "",
		"Each InferencePool's endpoint picker Service as NAME:PORT, NAME may use {name} (the MixtralDeployment's), e.g. {name}-epp:9002; empty: none.")
	fs.DurationVar(&o.autoscalerSyncPeriod, "autoscaler-sync-period", controllers.DefaultAutoscalerSyncPeriod,
		"How often the built-in autoscaler reads the engine pods' metrics of each MixtralDeployment with autoscaling enabled.")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil || o.logLevel > zapcore.ErrorLevel {
		return o, fmt.Errorf("-log-level %q: want debug, info, warn or error", *level)
	}
	if o.logFormat != "json" && o.logFormat != "console" {
		return o, fmt.Errorf("-log-format %q: want json or console", o.logFormat)
	}
	if o.engineImage == "" {
		return o, errors.New("-engine-image must not be empty")
	}
	if o.engineGPUImage == "" {
		return o, errors.New("-engine-gpu-image must not be empty")
	}
	var err error
	if o.endpointPicker, err = controllers.ParseEndpointPicker(*picker); err != nil {
		return o, fmt.Errorf("-inference-pool-endpoint-picker: %w", err)
	}
	if o.vllmImage == "" {
		return o, errors.New("-vllm-image must not be empty")
	}
	if o.autoscalerSyncPeriod < time.Second {
		return o, fmt.Errorf("-autoscaler-sync-period %s: want at least 1s", o.autoscalerSyncPeriod)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		ctrl.Log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

func run(o options) error {
	encoder := zap.JSONEncoder()
	if o.logFormat == "console" {
		encoder = zap.ConsoleEncoder()
	}
	ctrl.SetLogger(zap.New(zap.Level(o.logLevel), encoder))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(servingv1alpha1.AddToScheme(scheme))
	utilruntime.Must(lwsv1.AddToScheme(scheme))
	utilruntime.Must(inferencev1.Install(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOptions(o),
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionNamespace:       o.leaderElectNS,
		LeaderElectionReleaseOnCancel: true,
		// Engine pods are cached for the autoscaler, and only they.
		Cache: controllers.CacheOptions(),
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes clientset: %w", err)
	}
	r := &controllers.MixtralDeploymentReconciler{
		Client:         mgr.GetClient(),
		Recorder:       mgr.GetEventRecorder("moe-operator"),
		EngineImage:    o.engineImage,
		EngineGPUImage: o.engineGPUImage,
		VLLMImage:      o.vllmImage,
		// InferencePools for Gateway API Inference Extension users.
		InferencePools: o.inferencePools,
		EndpointPicker: o.endpointPicker,
		// Model loader pods: listed uncached, their progress read from pods/log.
		PodReader: mgr.GetAPIReader(),
		Progress:  controllers.PodLogs{Pods: clientset.CoreV1()},
		// Engine pods' metrics are read at their IPs on the engine port.
		Autoscaler: &controllers.Autoscaler{SyncPeriod: o.autoscalerSyncPeriod},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the MixtralDeployment controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}
	log.Info("starting manager", "engineImage", o.engineImage, "engineGPUImage", o.engineGPUImage, "vllmImage", o.vllmImage, "leaderElection", o.leaderElect,
		"metrics", o.metricsAddr, "metricsSecure", o.metricsSecure, "probes", o.probeAddr)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// metricsOptions serves the manager's metrics as kubebuilder v4 scaffolds do: over HTTPS
// (a self-signed certificate controller-runtime generates, since the scrapers are
// authenticated by their tokens rather than by the certificate) behind the authentication
// and authorization filter, or plain HTTP with --metrics-secure=false.
func metricsOptions(o options) metricsserver.Options {
	m := metricsserver.Options{BindAddress: o.metricsAddr}
	if o.metricsSecure {
		m.SecureServing = true
		m.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return m
}
