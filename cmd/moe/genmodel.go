package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

func init() { rootCmd.AddCommand(newGenModelCmd()) }

func newGenModelCmd() *cobra.Command {
	var (
		out, preset, typ, vocab string
		c                       modelgen.Config
		perExpert               bool
	)
	cmd := &cobra.Command{
		Use:   "gen-model --out FILE [--preset tiny|small|mini] [shape flags]",
		Short: "Write a deterministic random Mixtral-architecture GGUF model",
		Long: `gen-model writes a Mixtral-architecture model (GGUF, architecture "llama" with
experts) with deterministic random weights. llama.cpp loads the files it writes.
A preset sets every shape flag; flags given explicitly override it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			base := modelgen.Presets["tiny"]
			if preset != "" {
				p, err := modelgen.Preset(preset)
				if err != nil {
					return err
				}
				base = p
			}
			f := cmd.Flags()
			override := func(name string, dst *int, v int) {
				if f.Changed(name) {
					*dst = v
				}
			}
			override("layers", &base.Layers, c.Layers)
			override("dim", &base.Dim, c.Dim)
			override("heads", &base.Heads, c.Heads)
			override("kv-heads", &base.KVHeads, c.KVHeads)
			override("ffn", &base.FFN, c.FFN)
			override("experts", &base.Experts, c.Experts)
			override("top-k", &base.TopK, c.TopK)
			override("context", &base.Context, c.Context)
			override("sliding-window", &base.SlidingWindow, c.SlidingWindow)
			if f.Changed("type") {
				t, err := tensor.ParseDType(typ)
				if err != nil {
					return err
				}
				base.Type = t
			}
			if f.Changed("vocab") {
				base.Vocab = vocab
			}
			if f.Changed("seed") {
				base.Seed = c.Seed
			}
			if f.Changed("name") {
				base.Name = c.Name
			}
			base.PerExpert = perExpert
			if err := modelgen.Write(out, base); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s, %d layers, dim %d, %d experts top-%d, %s)\n",
				out, base.Name, base.Layers, base.Dim, base.Experts, base.TopK, base.Type)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "output file")
	f.StringVar(&preset, "preset", "", "tiny, small or mini")
	f.IntVar(&c.Layers, "layers", 0, "transformer blocks")
	f.IntVar(&c.Dim, "dim", 0, "embedding size")
	f.IntVar(&c.Heads, "heads", 0, "attention heads")
	f.IntVar(&c.KVHeads, "kv-heads", 0, "key/value heads (grouped-query attention)")
	f.IntVar(&c.FFN, "ffn", 0, "intermediate size of each expert")
	f.IntVar(&c.Experts, "experts", 0, "experts per layer")
	f.IntVar(&c.TopK, "top-k", 0, "experts used per token")
	f.IntVar(&c.Context, "context", 0, "context length")
	f.IntVar(&c.SlidingWindow, "sliding-window", 0, "attention window (0: full causal attention)")
	f.StringVar(&typ, "type", "", "weight type: f32, f16, bf16, q8_0, q4_0, q4_k or q6_k")
	f.Uint64Var(&c.Seed, "seed", 0, "random seed")
	f.StringVar(&vocab, "vocab", "", `"mistral" (the real 32000-piece vocabulary) or a synthetic vocabulary size`)
	f.StringVar(&c.Name, "name", "", "general.name")
	f.BoolVar(&perExpert, "per-expert", false, "write experts one tensor each (the pre-2024 layout)")
	return cmd
}
