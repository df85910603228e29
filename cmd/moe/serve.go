package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/server"
)

func init() { rootCmd.AddCommand(newServeCmd()) }

// vllmFlagAliases maps vLLM's names of `vllm serve` flags to moe serve's.
var vllmFlagAliases = map[string]string{
	"tensor-parallel-size":     "tensor-parallel",
	"max-model-len":            "ctx-size",
	"max-num-batched-tokens":   "max-batched-tokens",
	"no-enable-prefix-caching": "no-prefix-caching",
}

func newServeCmd() *cobra.Command {
	var (
		ef           engineFlags
		host         string
		port         int
		name         string
		apiKey       string
		apiKeyFile   string
		templateFile string
		grace        time.Duration
		sc           scheduler.Config
		opts         server.Options
		rc           server.RunConfig
	)
	cmd := &cobra.Command{
		Use:   "serve --model FILE [--port 8000] [--served-model-name NAME]",
		Short: "Serve a model over the OpenAI API with continuous batching",
		Long: `serve answers the OpenAI API (/v1/models, /v1/completions, /v1/chat/completions,
with streaming), vLLM's /tokenize, /detokenize, /version and /ping, and /health,
/ready and /metrics (vLLM's metric names; see docs/metrics.md). /health answers
at once; /ready (and /ping) once the model is loaded.

vLLM's flag names are accepted too: --tensor-parallel-size (--tensor-parallel),
--max-model-len (--ctx-size), --max-num-batched-tokens (--max-batched-tokens),
--no-enable-prefix-caching (--no-prefix-caching).
On SIGTERM or SIGINT, /ready turns false, new requests get 503, and requests in
flight get --shutdown-grace to finish before the process exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ef.model == "" {
				return fmt.Errorf("--model is required")
			}
			key, err := resolveAPIKey(apiKey, apiKeyFile, os.Getenv("MOE_API_KEY"))
			if err != nil {
				return err
			}
			if name == "" {
				name = ef.model
			}
			sc.Context = ef.ctxSize
			sc.Memory = availableMemory
			ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if msg := applyMemoryLimit(); msg != "" {
				logger.Info(msg)
			}
			opts.ModelName, opts.APIKey, opts.Logger, opts.Version = name, key, logger, version()
			if templateFile != "" {
				b, err := os.ReadFile(templateFile)
				if err != nil {
					return fmt.Errorf("--chat-template: %w", err)
				}
				if len(b) == 0 {
					return fmt.Errorf("--chat-template: %s is empty", templateFile)
				}
				opts.ChatTemplate = string(b)
			}
			rc.Options, rc.Listener, rc.Scheduler, rc.ShutdownGrace = opts, ln, sc, grace
			rc.Load = func() (*model.Model, error) { return ef.open() }
			return server.Run(ctx, rc)
		},
	}
	f := cmd.Flags()
	ef.register(f)
	// vLLM's spellings of the same flags, so a vLLM command line carries over.
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if alias, ok := vllmFlagAliases[name]; ok {
			name = alias
		}
		return pflag.NormalizedName(name)
	})
	f.StringVar(&host, "host", "0.0.0.0", "address to listen on")
	f.IntVar(&port, "port", 8000, "port to listen on (0: any free port, logged)")
	f.StringVar(&name, "served-model-name", "", `the model's name in the API (default: the --model value)`)
	f.IntVar(&sc.MaxNumSeqs, "max-num-seqs", 256, "sequences batched at once")
	f.IntVar(&sc.MaxBatchedTokens, "max-batched-tokens", 0, "token budget of one step, decodes and prefill chunks together (0: max(512, --max-num-seqs))")
	f.IntVar(&sc.KVCacheTokens, "kv-cache-tokens", 0, "positions in the paged KV cache (0: --max-num-seqs full contexts, at most 2 GiB on the CPU, at most what --gpu-memory-utilization leaves on a device)")
	f.Float64Var(&sc.DeviceMemoryUtilization, "gpu-memory-utilization", scheduler.DefaultDeviceMemoryUtilization, "on a device, the share of its memory budget the engine may use for weights, working memory and the KV cache")
	f.IntVar(&sc.MaxQueue, "max-queue", 1024, "requests that may wait to start; past it, 429")
	f.StringVar(&templateFile, "chat-template", "", "render chat requests with this Jinja chat template file (default: the model's own, or the built-in Mistral v1 renderer)")
	f.BoolVar(&opts.StrictRequests, "strict-requests", false, "refuse request fields the server does not know with 400 (default: ignore them, log each name once and list them in the X-Ignored-Fields response header)")
	f.BoolVar(&sc.DisablePrefixCaching, "no-prefix-caching", false, "turn off automatic prefix caching (reusing the keys and values of an earlier request's identical prompt prefix, in blocks of 16 tokens)")
	f.StringVar(&apiKey, "api-key", "", `require "Authorization: Bearer KEY" on /v1/ paths (visible in the process list: prefer --api-key-file or MOE_API_KEY)`)
	f.StringVar(&apiKeyFile, "api-key-file", "", "read the API key from this file (a mounted Secret)")
	f.Int64Var(&opts.MaxBodyBytes, "max-body-bytes", 0, "largest request body; past it, 413 (0: room for a prompt that fills the context, at most 16 MiB)")
	f.DurationVar(&opts.WriteTimeout, "write-timeout", 30*time.Second, "time each write of a response may take before the client counts as gone and its request is cancelled")
	f.DurationVar(&rc.ReadTimeout, "read-timeout", time.Minute, "time a client may take to send a request, headers and body")
	f.IntVar(&rc.MaxConnections, "max-connections", 4096, "open connections at once; more wait in the listen backlog")
	f.DurationVar(&grace, "shutdown-grace", 30*time.Second, "time requests in flight get to finish after SIGTERM")
	return cmd
}

// resolveAPIKey picks the API key from --api-key, --api-key-file or the
// MOE_API_KEY environment variable; at most one may be given.
func resolveAPIKey(flag, file, env string) (string, error) {
	given := 0
	for _, v := range []string{flag, file, env} {
		if v != "" {
			given++
		}
	}
	if given > 1 {
		return "", fmt.Errorf("give the API key once: with --api-key, --api-key-file or MOE_API_KEY, not several")
	}
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading the API key: %w", err)
		}
		key := strings.TrimSpace(string(b))
		if key == "" {
			return "", fmt.Errorf("the API key file %s is empty", file)
		}
		return key, nil
	case env != "":
		return strings.TrimSpace(env), nil
	}
	return flag, nil
}
