package planner

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable writes res for people: the request it answers, the ranked
// feasible candidates (the chosen one first, marked *), the rejected
// candidates with their reasons, and the chosen plan in one sentence. It
// writes the rejections alone when res has no plan.
func WriteTable(w io.Writer, req Request, res Result) error {
	req = req.withDefaults()
	var b strings.Builder
	rt := req.Runtime
	if rt == "" {
		rt = RuntimeMoE
	}
	fmt.Fprintf(&b, "%s on %s with the %s runtime: %s\n", modelName(req.Model), req.Accelerator.Name, rt, describeTargets(req))
	if res.Plan.GPUsPerReplica > 0 {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "RANK\tGPUS\tQUANT\tTP\tPP\tNODES/REPLICA\tREPLICAS\tBATCH\tTOK/S/REPLICA\tTOK/S TOTAL\tTTFT\tITL\tMEM/GPU\t")
		for i, p := range append([]Plan{res.Plan}, res.Alternatives...) {
			mark := " "
			if i == 0 {
				mark = "*"
			}
			fmt.Fprintf(tw, "%s%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n",
				mark, i+1, p.TotalGPUs(), p.Quantization, p.TensorParallelism, p.PipelineParallelism, p.NodesPerReplica, p.Replicas, p.BatchSize,
				thousands(p.OutputTokensPerSecondPerReplica), thousands(p.OutputTokensPerSecondPerReplica*float64(p.Replicas)),
				millis(p.TTFTSeconds), millis(p.ITLSeconds), gigabytes(float64(p.MemoryPerGPUBytes)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(res.Rejected) > 0 {
		fmt.Fprintf(&b, "\nRejected:\n")
		for _, r := range res.Rejected {
			fmt.Fprintf(&b, "  %s\n", r)
		}
	}
	if p := res.Plan; p.GPUsPerReplica > 0 {
		fmt.Fprintf(&b, "\nPlan: %d× %s (%s in total), batch %d per replica, %s tok/s per replica, TTFT %s, ITL %s, %s per GPU.\n",
			p.Replicas, p.Name(), plural(p.TotalGPUs(), "GPU"), p.BatchSize, thousands(p.OutputTokensPerSecondPerReplica),
			millis(p.TTFTSeconds), millis(p.ITLSeconds), gigabytes(float64(p.MemoryPerGPUBytes)))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// plural is "1 GPU", "2 GPUs".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// modelName is the preset name or a summary of a custom shape.
func modelName(m Model) string {
	if m.Name != "" {
		return m.Name
	}
	return fmt.Sprintf("custom model (%d layers, hidden %d, %d×%d experts)", m.Layers, m.HiddenSize, m.Experts, m.IntermediateSize)
}

// describeTargets is the request's targets in one line.
func describeTargets(req Request) string {
	t := req.Targets
	var parts []string
	if t.OutputTokensPerSecond > 0 {
		parts = append(parts, thousands(t.OutputTokensPerSecond)+" tok/s")
	} else {
		parts = append(parts, "one replica")
	}
	if t.Offline() {
		parts = append(parts, "offline (no latency bound, maximum throughput)")
	}
	if t.TTFT > 0 {
		parts = append(parts, "TTFT ≤ "+millis(t.TTFT.Seconds()))
	}
	if t.ITL > 0 {
		parts = append(parts, "ITL ≤ "+millis(t.ITL.Seconds()))
	}
	parts = append(parts, fmt.Sprintf("prompt %d, output %d, context %d tokens", t.PromptTokens, t.OutputTokens, t.Context))
	if q := req.Overrides.Quantization; q != Auto {
		parts = append(parts, "quantization pinned to "+string(q))
	}
	if tp := req.Overrides.TensorParallelism; tp > 0 {
		parts = append(parts, fmt.Sprintf("tensor parallelism pinned to %d", tp))
	}
	return strings.Join(parts, ", ")
}
