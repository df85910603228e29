package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/moe-operator/moe-operator/engine/model"
)

// engineFlags are the flags serve, run, logits and bench share, with the
// same meaning everywhere (the operator builds them for `moe serve`).
type engineFlags struct {
	model          string
	threads        int
	tensorParallel int
	ctxSize        int
	quantization   string
	expertParallel bool
}

func (e *engineFlags) register(f *pflag.FlagSet) {
	f.StringVar(&e.model, "model", "", "model file (GGUF)")
	f.IntVar(&e.threads, "threads", 0, "compute threads (0: all CPUs)")
	f.IntVar(&e.tensorParallel, "tensor-parallel", 1, "tensor-parallel shards")
	f.IntVar(&e.ctxSize, "ctx-size", 0, "maximum sequence length (0: the model's context length)")
	f.StringVar(&e.quantization, "quantization", "auto", "convert weights at load: auto (keep the file's), bf16, int8 (Q8_0) or int4 (Q4_0)")
	f.BoolVar(&e.expertParallel, "expert-parallel", false, "with --tensor-parallel, place whole experts on shards instead of splitting every expert")
}

func (e *engineFlags) open() (*model.Model, error) {
	if e.model == "" {
		return nil, fmt.Errorf("--model is required")
	}
	return model.Open(e.model, model.LoadOptions{Threads: e.threads, TensorParallel: e.tensorParallel, Quantization: e.quantization, ExpertParallel: e.expertParallel})
}

// parseTokens parses "1,2,3" (spaces allowed).
func parseTokens(s string) ([]int32, error) {
	var out []int32
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("token %q is not an integer", f)
		}
		out = append(out, int32(v))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no tokens given")
	}
	return out, nil
}
