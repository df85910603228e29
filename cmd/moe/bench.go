package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/engine/bench"
)

func init() { rootCmd.AddCommand(newBenchCmd()) }

func newBenchCmd() *cobra.Command {
	var (
		ef             engineFlags
		o              bench.Options
		asJSON         bool
		calibrationOut string
		accelerator    string
	)
	cmd := &cobra.Command{
		Use:   "bench --model FILE [--prompt-tokens N --gen-tokens N --threads N] [--json]",
		Short: "Measure prefill and decode throughput and peak memory",
		Long: `bench prefills a deterministic prompt, then decodes greedily, and reports tokens per
second for each phase and the peak resident memory. With --calibration-out it also
records the measurement in a planner calibration file (see docs/planner.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := ef.open()
			if err != nil {
				return err
			}
			defer m.Close()
			r, err := bench.Run(m, o)
			if err != nil {
				return err
			}
			if calibrationOut != "" {
				if err := bench.WriteCalibration(calibrationOut, accelerator, m, o, r); err != nil {
					return err
				}
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "prefill %.1f tok/s (%d tokens), decode %.1f tok/s (%d tokens), peak RSS %.1f MiB, %d threads\n",
				r.PrefillTokensPerSecond, o.PromptTokens, r.DecodeTokensPerSecond, o.GenTokens, float64(r.PeakRSSBytes)/(1<<20), m.Threads())
			return nil
		},
	}
	f := cmd.Flags()
	ef.register(f)
	f.IntVar(&o.PromptTokens, "prompt-tokens", 128, "prompt length")
	f.IntVar(&o.GenTokens, "gen-tokens", 32, "tokens to decode")
	f.BoolVar(&asJSON, "json", false, `print {"prefillTokensPerSecond":N,"decodeTokensPerSecond":N,"peakRSSBytes":N}`)
	f.StringVar(&calibrationOut, "calibration-out", "", "append the measurement to this planner calibration file")
	f.StringVar(&accelerator, "accelerator", "cpu", "accelerator catalog name for --calibration-out")
	return cmd
}
