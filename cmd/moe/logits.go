package main

import (
	"bufio"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func init() { rootCmd.AddCommand(newLogitsCmd()) }

func newLogitsCmd() *cobra.Command {
	var (
		ef     engineFlags
		tokens string
	)
	cmd := &cobra.Command{
		Use:   "logits --model FILE --tokens 1,2,3",
		Short: "Print the raw logits at every position as JSON",
		Long:  `logits prints {"logits":[[...],...]}: one row of raw logits for every input position, for parity checks.`,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ids, err := parseTokens(tokens)
			if err != nil {
				return err
			}
			m, err := ef.open()
			if err != nil {
				return err
			}
			defer m.Close()
			s := m.NewSession(ef.ctxSize)
			flat, err := s.Prefill(ids, true)
			if err != nil {
				return err
			}
			V := m.Config.Vocab
			rows := make([][]float32, len(ids))
			for i := range rows {
				rows[i] = flat[i*V : (i+1)*V]
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			if err := json.NewEncoder(w).Encode(map[string]any{"logits": rows}); err != nil {
				return fmt.Errorf("writing logits: %w", err)
			}
			return w.Flush()
		},
	}
	ef.register(cmd.Flags())
	cmd.Flags().StringVar(&tokens, "tokens", "", "comma-separated token ids")
	return cmd
}
