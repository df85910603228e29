package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/moe-operator/moe-operator/engine/model"
)

// engineFlags are the flags serve, run, logits and bench share, with the
// same meaning everywhere (the operator builds them for `moe serve`).
type engineFlags struct {
	model          string
	modelCache     string
	threads        int
	tensorParallel int
	ctxSize        int
	quantization   string
	expertParallel bool
	device         string
}

func (e *engineFlags) register(f *pflag.FlagSet) {
	f.StringVar(&e.model, "model", "", "the model: a GGUF file, a Hugging Face checkpoint directory, or a URI (hf://org/repo[@rev][/file], https://…, pvc://claim/path, file:///path); remote ones are pulled into --model-cache first unless already there")
	f.StringVar(&e.modelCache, "model-cache", "", "where remote models are cached (default $MOE_MODEL_CACHE or ${XDG_CACHE_HOME:-~/.cache}/moe/models)")
	f.IntVar(&e.threads, "threads", 0, "compute threads (0: the CPUs Go may use, GOMAXPROCS, which follows a container limit)")
	f.IntVar(&e.tensorParallel, "tensor-parallel", 1, "tensor-parallel shards")
	f.IntVar(&e.ctxSize, "ctx-size", 0, "maximum sequence length (0: the model's context length)")
	f.StringVar(&e.quantization, "quantization", "auto", "convert weights at load: auto (keep the file's), bf16, fp8 (Q8_0 on CPUs), int8 (Q8_0) or int4 (Q4_0)")
	f.StringVar(&e.device, "device", "auto", "where the layers run: auto (a GPU through Vulkan when there is one, else the CPU), cpu, vulkan (the best Vulkan device, lavapipe included) or vulkan:N (see moe devices)")
	f.BoolVar(&e.expertParallel, "expert-parallel", false, "with --tensor-parallel, place whole experts on shards instead of splitting every expert")
}

func (e *engineFlags) open() (*model.Model, error) {
	if e.model == "" {
		return nil, fmt.Errorf("--model is required")
	}
	path, err := resolveModel(context.Background(), e.model, e.modelCache, os.Stderr)
	if err != nil {
		return nil, err
	}
	opts := model.LoadOptions{Threads: e.threads, TensorParallel: e.tensorParallel, Quantization: e.quantization, ExpertParallel: e.expertParallel}
	onCPU := fmt.Sprintf("quantizing weights (%s)", e.quantization)
	what := onCPU
	if strings.EqualFold(e.quantization, "fp8") {
		fmt.Fprintln(os.Stderr, "moe: --quantization fp8: the CPU backend has no FP8 kernels; running Q8_0, which takes the same memory")
	}
	if opts.Device, err = e.deviceFactory(); err != nil {
		return nil, err
	}
	if opts.Device != nil {
		what = "loading weights onto the device"
		if !strings.EqualFold(e.quantization, "auto") && e.quantization != "" {
			what = fmt.Sprintf("quantizing weights (%s) onto the device", e.quantization)
		}
	}
	opts.Progress = quantizeProgress(os.Stderr, what)
	m, err := model.Open(path, opts)
	if err != nil && opts.Device != nil && (e.device == "auto" || e.device == "") {
		// auto never fails where the CPU would run: say why and go on.
		fmt.Fprintf(os.Stderr, "moe: --device auto: running on the CPU: the GPU could not load the model: %v\n", err)
		opts.Device = nil
		opts.Progress = quantizeProgress(os.Stderr, onCPU)
		return model.Open(path, opts)
	}
	if err == nil {
		if name, ok := m.Accelerated(); ok {
			fmt.Fprintf(os.Stderr, "moe: running on %s\n", name)
		}
	}
	return m, err
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
