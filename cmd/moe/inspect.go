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
			if asJSON {
				s, err := model.Summarize(f)
				if err != nil {
					return err
				}
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{
					"config": s.Config, "fileBytes": s.FileBytes, "params": s.Params,
					"activeParams": s.ActiveParams, "activeBytesPerToken": s.ActiveBytes,
				})
			}
			return model.WriteInspect(cmd.OutOrStdout(), f)
		},
	}
	cmd.Flags().StringVar(&modelPath, "model", "", "model file (GGUF)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}
