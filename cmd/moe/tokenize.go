package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/engine/gguf"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

func init() {
	rootCmd.AddCommand(newTokenizeCmd(), newDetokenizeCmd())
}

func openTokenizer(path string) (*tokenizer.Tokenizer, error) {
	if path == "" {
		return nil, fmt.Errorf("--model is required")
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return tokenizer.FromGGUF(f)
}

func newTokenizeCmd() *cobra.Command {
	var modelPath, text string
	var noBOS bool
	cmd := &cobra.Command{
		Use:   "tokenize --model FILE --text TEXT",
		Short: "Print the token ids of a text as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := openTokenizer(modelPath)
			if err != nil {
				return err
			}
			ids := tok.Encode(text, !noBOS)
			if ids == nil {
				ids = []int32{}
			}
			return json.NewEncoder(cmd.OutOrStdout()).Encode(ids)
		},
	}
	cmd.Flags().StringVar(&modelPath, "model", "", "model file (GGUF)")
	cmd.Flags().StringVar(&text, "text", "", "text to tokenize")
	cmd.Flags().BoolVar(&noBOS, "no-bos", false, "do not add the beginning-of-sequence token")
	return cmd
}

func newDetokenizeCmd() *cobra.Command {
	var modelPath, tokens string
	cmd := &cobra.Command{
		Use:   "detokenize --model FILE --tokens 1,2,3",
		Short: "Print the text of token ids",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ids, err := parseTokens(tokens)
			if err != nil {
				return err
			}
			tok, err := openTokenizer(modelPath)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if id < 0 || int(id) >= tok.Size() {
					return fmt.Errorf("token %d is outside the vocabulary of %d", id, tok.Size())
				}
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok.Decode(ids))
			return err
		},
	}
	cmd.Flags().StringVar(&modelPath, "model", "", "model file (GGUF)")
	cmd.Flags().StringVar(&tokens, "tokens", "", "comma-separated token ids")
	return cmd
}
