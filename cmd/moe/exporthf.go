package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

func init() { rootCmd.AddCommand(newExportHFCmd()) }

func newExportHFCmd() *cobra.Command {
	var in, out, dtype string
	var shard int64
	cmd := &cobra.Command{
		Use:   "export-hf --in MODEL.gguf --out DIR [--dtype bf16] [--max-shard-bytes N]",
		Short: "Write an unquantized GGUF model as a Hugging Face checkpoint (safetensors, config.json, tokenizer.json)",
		Long: `export-hf writes a GGUF model with F32, F16 or BF16 weights (gen-model makes them) in the
layout of a Hugging Face Mixtral repository: config.json, tokenizer.json,
tokenizer_config.json and model*.safetensors with HF tensor names, per-expert
w1/w2/w3 and Q/K rows in HF's rotate_half order (GGUF's permutation undone).
serve, run and logits load the directory as they load the GGUF file, with the
same logits; tests and demos use it as a stand-in for a real repository.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" || out == "" {
				return fmt.Errorf("--in and --out are required")
			}
			opts := modelgen.HFOptions{MaxShardBytes: shard}
			if dtype != "" {
				t, err := tensor.ParseDType(dtype)
				if err != nil {
					return err
				}
				if t != tensor.F32 && t != tensor.F16 && t != tensor.BF16 {
					return fmt.Errorf("--dtype must be f32, f16 or bf16, not %s", dtype)
				}
				opts.DType = t
			}
			if err := modelgen.ExportHF(in, out, opts); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "input GGUF model (F32, F16 or BF16 weights)")
	cmd.Flags().StringVar(&out, "out", "", "output directory")
	cmd.Flags().StringVar(&dtype, "dtype", "", "weight type of the checkpoint: f32, f16 or bf16 (default: the file's)")
	cmd.Flags().Int64Var(&shard, "max-shard-bytes", 5_000_000_000, "split the weights into shards of about this size (0: one file)")
	return cmd
}
