package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/moe-operator/moe-operator/gateway"
	kubegw "github.com/moe-operator/moe-operator/gateway/kube"
)

func init() { rootCmd.AddCommand(newGatewayCmd()) }

// newGatewayCmd builds `moe gateway`, one OpenAI endpoint in front of many engines.
func newGatewayCmd() *cobra.Command {
	var (
		host, keyFile, backendKeyFile string
		port                          int
		backends                      []string
		opts                          gateway.Options
		grace                         time.Duration
		epsilon                       float64
		routing                       string
		kube                          bool
		namespace                     string
	)
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Serve one OpenAI endpoint that routes by model to engine replicas, by load and prompt prefix",
		Long: `Gateway serves GET /v1/models (every model it has replicas of), and POST
/v1/chat/completions and /v1/completions, which it routes by the request's
"model". It picks a replica by consistent hashing of the prompt's first
--prefix-bytes with bounded load, so requests that share a system prompt land
where its KV blocks already are, while no replica takes more than
(1 + --load-epsilon) times the mean load. The load is the requests the gateway
has open on each replica plus the queue its /metrics reports (vllm:num_requests_waiting,
read every --scrape-interval; moe serve and vLLM export it). A request that
fails before its first byte (connection refused or reset, a 502 or 503 from a
draining engine) is retried once on another replica; a stream that breaks
later ends with an error event. Streams pass through chunk by chunk.

--kubernetes takes the replicas from the cluster: the engine Services the
operator creates (their serving.moe-operator.io/served-model-name annotation
names the model) and the ready, non-terminating endpoints of their
EndpointSlices, watched. A request for a MixtralDeployment with no ready pod
(scaled to zero, or starting) is held, up to --max-held-per-model of them for
at most --hold-timeout, then answered 503 with Retry-After; the gateway writes
the held count onto the MixtralDeployment (serving.moe-operator.io/held-requests),
which wakes one at zero replicas, and the held requests go through as soon as
a replica is ready. One without a Service is unknown (404).
Without a cluster, --backend MODEL=URL names one replica; repeat it, and repeat
a model for more replicas. Each URL is an engine's base, such as
http://10.0.0.7:8000.`,
		Example: `  moe gateway --port 8080 --backend mixtral=http://10.0.0.7:8000 --backend mixtral=http://10.0.0.8:8000 --backend small=http://10.0.0.9:8000`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kube == (len(backends) > 0) {
				return fmt.Errorf("give either --kubernetes (replicas from the cluster's engine Services) or --backend MODEL=URL flags")
			}
			policy, err := gateway.ParseRouting(routing)
			if err != nil {
				return fmt.Errorf("--routing: %w", err)
			}
			var replicas []*gateway.Replica
			if !kube {
				if replicas, err = parseBackends(backends); err != nil {
					return err
				}
			}
			if keyFile != "" {
				if opts.Keys, err = gateway.LoadKeys(keyFile); err != nil {
					return err
				}
			}
			if backendKeyFile != "" {
				if opts.BackendKey, err = resolveAPIKey("", backendKeyFile, ""); err != nil {
					return fmt.Errorf("--backend-api-key-file: %w", err)
				}
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			router := gateway.NewRouter(replicas)
			router.Epsilon = epsilon
			router.Routing = policy
			if kube {
				cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
				if err != nil {
					return fmt.Errorf("--kubernetes: no cluster configuration (in a pod, or from KUBECONFIG): %w", err)
				}
				cs, err := kubernetes.NewForConfig(cfg)
				if err != nil {
					return err
				}
				dyn, err := dynamic.NewForConfig(cfg)
				if err != nil {
					return err
				}
				cluster, err := kubegw.Watch(ctx, cs, dyn, namespace, router, opts.Logger)
				if err != nil {
					return fmt.Errorf("--kubernetes: %w", err)
				}
				opts.Waker = cluster
			}
			g := gateway.New(router, opts)
			go g.Scrape(ctx)
			go g.Wake(ctx)
			srv := &http.Server{Handler: g, ReadHeaderTimeout: 30 * time.Second}
			opts.Logger.Info("listening", "addr", ln.Addr().String(), "models", strings.Join(router.Models(), ","))
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			select {
			case err := <-done:
				return err
			case <-ctx.Done():
			}
			shutdown, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "0.0.0.0", "address to listen on")
	f.IntVar(&port, "port", 8080, "port to listen on (0: any free port, logged)")
	f.StringArrayVar(&backends, "backend", nil, "MODEL=URL: a replica of MODEL (repeatable)")
	f.BoolVar(&kube, "kubernetes", false, "take the replicas from the cluster: the ready endpoints of the operator's engine Services, watched")
	f.StringVar(&namespace, "namespace", "", "with --kubernetes, watch this namespace only (default: every namespace)")
	f.StringVar(&keyFile, "api-key-file", "", "require one of the API keys in this file (one per line; re-read when it changes) on /v1/ paths")
	f.StringVar(&backendKeyFile, "backend-api-key-file", "", "send the API key in this file to the engines")
	f.IntVar(&opts.MaxConcurrencyPerKey, "max-concurrency-per-key", 0, "requests in flight per API key; past it, 429 (0: unbounded)")
	f.IntVar(&opts.MaxConcurrencyPerModel, "max-concurrency-per-model", 0, "requests in flight per model; past it, 429 (0: unbounded)")
	f.IntVar(&opts.PrefixBytes, "prefix-bytes", 256, "bytes of the prompt the routing hash covers")
	f.StringVar(&routing, "routing", string(gateway.RoutingPrefix), "how a replica is picked: prefix (the prompt prefix's hash, with bounded load), least-loaded or round-robin")
	f.Float64Var(&epsilon, "load-epsilon", 0.25, "bounded-load slack: a replica takes a request while its load is under (1+ε) × the mean")
	f.DurationVar(&opts.ScrapeInterval, "scrape-interval", 2*time.Second, "how often each replica's /metrics is read")
	f.DurationVar(&opts.HoldTimeout, "hold-timeout", 5*time.Minute, "how long a request for a model with no ready replica (scaled to zero, or starting) waits for one before 503")
	f.IntVar(&opts.MaxHeldPerModel, "max-held-per-model", 100, "requests held per model while it has no ready replica; past it, 503")
	f.DurationVar(&grace, "shutdown-grace", 30*time.Second, "time requests in flight get to finish after SIGTERM")
	return cmd
}

// parseBackends turns MODEL=URL flags into replicas.
func parseBackends(flags []string) ([]*gateway.Replica, error) {
	if len(flags) == 0 {
		return nil, fmt.Errorf("name at least one --backend MODEL=URL")
	}
	var out []*gateway.Replica
	seen := map[string]bool{}
	for _, f := range flags {
		model, raw, ok := strings.Cut(f, "=")
		if !ok || model == "" || raw == "" {
			return nil, fmt.Errorf("--backend %q: want MODEL=URL, for example mixtral=http://10.0.0.7:8000", f)
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--backend %q: the URL must be http:// or https:// with a host", f)
		}
		if seen[model+"="+u.String()] {
			return nil, fmt.Errorf("--backend %q is given twice", f)
		}
		seen[model+"="+u.String()] = true
		out = append(out, &gateway.Replica{Model: model, URL: u})
	}
	return out, nil
}
