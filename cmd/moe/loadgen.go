package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/engine/loadgen"
)

func init() { rootCmd.AddCommand(newLoadgenCmd()) }

func newLoadgenCmd() *cobra.Command {
	var (
		o                          loadgen.Options
		asJSON                     bool
		systemPrompts, systemWords int
	)
	cmd := &cobra.Command{
		Use:   "loadgen --url URL --concurrency N (--requests M | --duration D) [--stream] [--json]",
		Short: "Load an OpenAI-compatible server and report throughput, TTFT and ITL",
		Long: `loadgen runs N clients against a server, each with one request in flight,
for M requests in all or for a duration, and reports aggregate output tokens per
second, time to first token and inter-token latency (p50/p95; these need
--stream), end-to-end latency, and the server's goroutines and memory (from its
/metrics) before and after.

--system-prompts N starts every request with one of N long synthetic system
prompts, picked at random, to measure prefix caching and prefix-affine
routing (hack/bench-gateway-prefix.sh).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.URL == "" {
				return fmt.Errorf("--url is required")
			}
			if systemPrompts < 0 || systemWords < 1 {
				return fmt.Errorf("--system-prompts must be 0 or more and --system-prompt-words at least 1")
			}
			o.SystemPrompts = loadgen.SyntheticSystemPrompts(systemPrompts, systemWords)
			r, err := loadgen.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			r.Format(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.URL, "url", "", "server base URL, e.g. http://127.0.0.1:8000")
	f.StringVar(&o.Model, "model", "", "model name (default: the first the server lists)")
	f.StringVar(&o.APIKey, "api-key", "", "API key")
	f.IntVar(&o.Concurrency, "concurrency", 1, "clients, each with one request in flight")
	f.IntVar(&o.Requests, "requests", 0, "requests in all (0: until --duration)")
	f.DurationVar(&o.Duration, "duration", 0, "stop starting requests after this long")
	f.BoolVar(&o.Stream, "stream", false, "stream responses (needed for TTFT and ITL)")
	f.BoolVar(&o.Chat, "chat", false, "use /v1/chat/completions instead of /v1/completions")
	f.StringVar(&o.Prompt, "prompt", "", "prompt text (default: a fixed story prompt)")
	f.IntVar(&systemPrompts, "system-prompts", 0, "start each request with one of this many distinct synthetic system prompts, picked at random (0: none)")
	f.IntVar(&systemWords, "system-prompt-words", 800, "words in each synthetic system prompt (about 1.2 tokens each with Mistral's vocabulary)")
	f.IntVar(&o.MaxTokens, "max-tokens", 128, "tokens to generate per request")
	f.Float64Var(&o.Temperature, "temperature", 0, "sampling temperature")
	f.BoolVar(&o.IgnoreEOS, "ignore-eos", true, "generate exactly --max-tokens tokens (vLLM's ignore_eos)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
