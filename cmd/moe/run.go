package main

import (
	"bufio"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/engine/sample"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

func init() { rootCmd.AddCommand(newRunCmd()) }

func newRunCmd() *cobra.Command {
	var (
		ef        engineFlags
		prompt    string
		tokens    string
		chat      bool
		system    string
		maxTokens int
		asJSON    bool
		sp        sample.Params
	)
	cmd := &cobra.Command{
		Use:   "run --model FILE (--prompt TEXT | --tokens 1,2,3) [--chat]",
		Short: "Generate text from a prompt, streaming it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (prompt == "") == (tokens == "") {
				return fmt.Errorf("give exactly one of --prompt and --tokens")
			}
			if err := sp.Validate(); err != nil {
				return err
			}
			m, err := ef.open()
			if err != nil {
				return err
			}
			defer m.Close()
			var ids []int32
			switch {
			case tokens != "":
				if ids, err = parseTokens(tokens); err != nil {
					return err
				}
			case chat:
				msgs := []tokenizer.Message{{Role: "user", Content: prompt}}
				if system != "" {
					msgs = append([]tokenizer.Message{{Role: "system", Content: system}}, msgs...)
				}
				if ids, err = m.Tokenizer.MistralV1Chat(msgs); err != nil {
					return err
				}
			default:
				ids = m.Tokenizer.Encode(prompt, true)
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			dec := m.Tokenizer.NewDecoder(true)
			var gen []int32
			text := ""
			_, err = m.NewSession(ef.ctxSize).Generate(ids, sample.New(sp, ids), maxTokens, func(tok int32) bool {
				gen = append(gen, tok)
				piece := dec.Next(tok)
				text += piece
				if !asJSON {
					out.WriteString(piece)
					out.Flush()
				}
				return true
			})
			if err != nil {
				return err
			}
			tail := dec.Flush()
			text += tail
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"tokens": gen, "text": text})
			}
			out.WriteString(tail + "\n")
			return nil
		},
	}
	f := cmd.Flags()
	ef.register(f)
	f.StringVar(&prompt, "prompt", "", "prompt text")
	f.StringVar(&tokens, "tokens", "", "prompt as comma-separated token ids")
	f.BoolVar(&chat, "chat", false, "wrap the prompt in the Mistral chat template")
	f.StringVar(&system, "system", "", "system prompt (with --chat)")
	f.IntVar(&maxTokens, "max-tokens", 64, "tokens to generate at most")
	f.BoolVar(&asJSON, "json", false, `print {"tokens":[...],"text":"..."} instead of streaming`)
	f.Float32Var(&sp.Temperature, "temperature", 0, "sampling temperature (0: greedy)")
	f.Float32Var(&sp.TopP, "top-p", 1, "nucleus sampling mass")
	f.IntVar(&sp.TopK, "top-k", 0, "sample from the k most likely tokens (0: all)")
	f.Float32Var(&sp.MinP, "min-p", 0, "drop tokens below this fraction of the top probability")
	f.Float32Var(&sp.RepetitionPenalty, "repetition-penalty", 1, "penalty for tokens already seen (1: none)")
	f.Uint64Var(&sp.Seed, "seed", 0, "random seed")
	return cmd
}
