package model

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/moe-operator/moe-operator/engine/gguf"
)

// Summary describes a model file: its hyperparameters, parameter counts
// and the bytes one token's forward pass reads.
type Summary struct {
	Config       Config
	FileBytes    int64
	Params       int64 // all weights
	ActiveParams int64 // weights one token uses
	// ActiveBytes is the weight bytes one decode step reads: attention,
	// router, norms, TopK experts, one embedding row and the output head.
	ActiveBytes int64
}

// Summarize computes the summary of a GGUF model file.
func Summarize(f *gguf.File) (Summary, error) {
	c, err := ConfigFromGGUF(f)
	if err != nil {
		return Summary{}, err
	}
	s := Summary{Config: c, FileBytes: f.Size()}
	s.Params, s.ActiveParams = c.Params()
	for _, t := range f.Tensors {
		switch {
		case strings.Contains(t.Name, "_exps."):
			s.ActiveBytes += int64(t.Size) / int64(c.Experts) * int64(c.TopK)
		case isPerExpert(t.Name):
			s.ActiveBytes += int64(t.Size) * int64(c.TopK) / int64(c.Experts)
		case t.Name == "token_embd.weight":
			s.ActiveBytes += int64(t.Size) / int64(c.Vocab)
			if _, ok := f.Tensor("output.weight"); !ok {
				s.ActiveBytes += int64(t.Size) // the embedding doubles as the output head
			}
		default:
			s.ActiveBytes += int64(t.Size)
		}
	}
	return s, nil
}

// isPerExpert reports names like blk.3.ffn_up.5.weight.
func isPerExpert(name string) bool {
	for _, k := range []string{".ffn_gate.", ".ffn_up.", ".ffn_down."} {
		if i := strings.Index(name, k); i >= 0 {
			rest := name[i+len(k):]
			return len(rest) > 0 && rest[0] >= '0' && rest[0] <= '9'
		}
	}
	return false
}

// WriteInspect prints the file's metadata, a tensor table and the summary.
func WriteInspect(w io.Writer, f *gguf.File) error {
	s, err := Summarize(f)
	if err != nil {
		return err
	}
	c := s.Config
	fmt.Fprintf(w, "GGUF v%d, %d tensors, %s, data at offset %d (alignment %d)\n\n", f.Version, len(f.Tensors), humanBytes(s.FileBytes), f.DataOffset, f.Alignment)
	fmt.Fprintln(w, "metadata:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, kv := range f.KVs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", kv.Key, kv.Value.Type, kv.Value)
	}
	tw.Flush()
	fmt.Fprintln(w, "\ntensors:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  name\ttype\tshape\tbytes\t")
	types := map[string]int64{}
	for _, t := range f.Tensors {
		fmt.Fprintf(tw, "  %s\t%s\t%v\t%d\t\n", t.Name, t.Type, t.Dims, t.Size)
		types[t.Type.String()] += int64(t.Size)
	}
	tw.Flush()
	names := make([]string, 0, len(types))
	for k := range types {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "\nbytes by type:")
	for _, k := range names {
		fmt.Fprintf(w, "  %-6s %s\n", k, humanBytes(types[k]))
	}
	fmt.Fprintf(w, "\nmodel: %d layers, dim %d, %d heads (%d kv, head dim %d), %d experts top-%d, expert size %d, vocab %d, context %d",
		c.Layers, c.Dim, c.Heads, c.KVHeads, c.HeadDim, c.Experts, c.TopK, c.FFN, c.Vocab, c.Context)
	if c.SlidingWindow > 0 {
		fmt.Fprintf(w, ", sliding window %d", c.SlidingWindow)
	}
	fmt.Fprintf(w, "\nparameters: %s total, %s active per token\n", humanCount(s.Params), humanCount(s.ActiveParams))
	fmt.Fprintf(w, "weights read per decoded token: %s\n", humanBytes(s.ActiveBytes))
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
