package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/engine/gguf"
	"github.com/moe-operator/moe-operator/engine/model"
)

func init() { rootCmd.AddCommand(newInspectCmd()) }

func newInspectCmd() *cobra.Command {
	var (
		modelPath string
		asJSON    bool
		opts      model.LoadOptions
	)
	cmd := &cobra.Command{
		Use:   "inspect --model FILE",
		Short: "Print a model file's metadata, tensors, parameter counts and bytes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelPath == "" {
				return fmt.Errorf("--model is required")
			}
			f, err := gguf.Open(modelPath)
			if err != nil {
				return err
			}
			defer f.Close()
			shards, err := model.PlanShardBytes(f, opts)
			if err != nil {
				return err
			}
			if asJSON {
				s, err := model.Summarize(f)
				if err != nil {
					return err
				}
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{
					"config": s.Config, "fileBytes": s.FileBytes, "params": s.Params,
					"activeParams": s.ActiveParams, "activeBytesPerToken": s.ActiveBytes,
					"shardWeightBytes": shards,
				})
			}
			if err := model.WriteInspect(cmd.OutOrStdout(), f); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "weights per shard (tensor parallel %d, quantization %s): ", len(shards), opts.Quantization)
			for i, b := range shards {
				if i > 0 {
					fmt.Fprint(cmd.OutOrStdout(), ", ")
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%.1f MiB", float64(b)/(1<<20))
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().StringVar(&modelPath, "model", "", "model file (GGUF)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	cmd.Flags().IntVar(&opts.TensorParallel, "tensor-parallel", 1, "shards to size (as moe serve --tensor-parallel)")
	cmd.Flags().StringVar(&opts.Quantization, "quantization", "auto", "on-load quantization to size (as moe serve --quantization)")
	cmd.Flags().BoolVar(&opts.ExpertParallel, "expert-parallel", false, "place whole experts on shards (as moe serve --expert-parallel)")
	return cmd
}
