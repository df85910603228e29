package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

func init() { rootCmd.AddCommand(newQuantizeCmd()) }

func newQuantizeCmd() *cobra.Command {
	var in, out, typ string
	var threads int
	cmd := &cobra.Command{
		Use:   "quantize --in FILE --out FILE --type q8_0|q4_0|q4_k",
		Short: "Write a copy of a GGUF model with its weights converted to a quantized type",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" || out == "" {
				return fmt.Errorf("--in and --out are required")
			}
			t, err := tensor.ParseDType(typ)
			if err != nil {
				return err
			}
			if t != tensor.Q8_0 && t != tensor.Q4_0 && t != tensor.Q4_K {
				return fmt.Errorf("--type must be q8_0, q4_0 or q4_k, not %s", typ)
			}
			pool := tensor.NewPool(threads)
			defer pool.Close()
			start := time.Now()
			var bytes int64
			if err := model.QuantizeFile(in, out, t, pool, func(done, total int64) { bytes = total }); err != nil {
				return err
			}
			secs := time.Since(start).Seconds()
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s) in %.1fs, %.2f GB/s of input\n", out, t, secs, float64(bytes)/secs/1e9)
			return nil
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "input GGUF model")
	cmd.Flags().StringVar(&out, "out", "", "output GGUF model")
	cmd.Flags().StringVar(&typ, "type", "", "q8_0, q4_0 or q4_k")
	cmd.Flags().IntVar(&threads, "threads", 0, "threads (0: GOMAXPROCS)")
	return cmd
}
