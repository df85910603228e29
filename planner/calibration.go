package planner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"time"
)

// CalibrationVersion is the calibration file format this package writes and
// the only one it reads.
const CalibrationVersion = 1

// Calibration is the JSON file `moe bench` writes: measured efficiency factors
// for one engine on one accelerator, and the raw measurements they came from.
// The engine writes the same shape without importing this package, so the
// JSON names are a contract (docs/planner.md).
//
// Explicit Efficiency entries win; for a quantization with measurements but no
// entry, the factors are fitted from the measurements (Fit).
type Calibration struct {
	Version      int                         `json:"version"`
	Engine       string                      `json:"engine,omitempty"`
	Accelerator  string                      `json:"accelerator"`
	CreatedAt    time.Time                   `json:"createdAt,omitzero"`
	Efficiency   map[Quantization]Efficiency `json:"efficiency,omitempty"`
	Measurements []Measurement               `json:"measurements,omitempty"`
}

// Measurement is one `moe bench` run: a model shape at a quantization and
// tensor parallelism, a batch of BatchSize sequences each prefilling
// PromptTokens and then generating OutputTokens.
type Measurement struct {
	Model             Model        `json:"model"`
	Quantization      Quantization `json:"quantization"`
	TensorParallelism int          `json:"tensorParallelism"`
	BatchSize         int          `json:"batchSize"`
	PromptTokens      int          `json:"promptTokens"`
	OutputTokens      int          `json:"outputTokens"`
	// PrefillTokensPerSecond is prompt tokens processed per second over the
	// whole batch; 0 when not measured.
	PrefillTokensPerSecond float64 `json:"prefillTokensPerSecond,omitempty"`
	// DecodeTokensPerSecond is generated tokens per second over the whole
	// batch, prefill excluded.
	DecodeTokensPerSecond float64 `json:"decodeTokensPerSecond"`
}

// ReadCalibration decodes and validates a calibration file. Errors wrap
// ErrInvalidCalibration.
func ReadCalibration(r io.Reader) (*Calibration, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var c Calibration
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: decoding: %w", ErrInvalidCalibration, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// LoadCalibration reads the calibration file at path.
func LoadCalibration(path string) (*Calibration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("planner: opening calibration: %w", err)
	}
	defer f.Close()
	c, err := ReadCalibration(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return c, nil
}

// Write encodes c as indented JSON.
func (c *Calibration) Write(w io.Writer) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("planner: encoding calibration: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// Save writes c to path, replacing the file.
func (c *Calibration) Save(path string) error {
	var buf bytes.Buffer
	if err := c.Write(&buf); err != nil {
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("planner: writing calibration: %w", err)
	}
	return nil
}

// Validate reports an error wrapping ErrInvalidCalibration for an unknown
// version or quantization, a factor outside (0, 1] or a measurement without
// a positive batch, token counts and decode rate.
func (c *Calibration) Validate() error {
	if c.Version != CalibrationVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrInvalidCalibration, c.Version, CalibrationVersion)
	}
	for q, e := range c.Efficiency {
		if q.rank() >= len(Quantizations()) {
			return fmt.Errorf("%w: unknown quantization %q", ErrInvalidCalibration, string(q))
		}
		if !e.valid() {
			return fmt.Errorf("%w: %s factors must be in (0, 1], got bandwidth %g compute %g", ErrInvalidCalibration, q, e.Bandwidth, e.Compute)
		}
	}
	for i, m := range c.Measurements {
		if err := m.Model.Validate(); err != nil {
			return fmt.Errorf("%w: measurement %d: %w", ErrInvalidCalibration, i, err)
		}
		switch {
		case m.Quantization.rank() >= len(Quantizations()):
			return fmt.Errorf("%w: measurement %d: unknown quantization %q", ErrInvalidCalibration, i, string(m.Quantization))
		case m.TensorParallelism < 1 || m.BatchSize < 1 || m.PromptTokens < 1 || m.OutputTokens < 1:
			return fmt.Errorf("%w: measurement %d: tensor parallelism, batch and token counts must be positive", ErrInvalidCalibration, i)
		case m.DecodeTokensPerSecond <= 0 || m.PrefillTokensPerSecond < 0:
			return fmt.Errorf("%w: measurement %d: decode rate must be positive", ErrInvalidCalibration, i)
		}
	}
	return nil
}

// Fit derives efficiency factors per quantization from the measurements on
// a: the bandwidth and compute factors that minimise the sum, over the
// measurements, of the squared log ratios of predicted to measured prefill
// time and decode step, found by a search over both factors at once in log
// space. A factor no measurement constrains (compute, when every figure is a
// memory-bound decode) stays at the default. Explicit Efficiency entries
// replace fitted ones. Factors stay within [1e-4, 1].
func (c *Calibration) Fit(a Accelerator) map[Quantization]Efficiency {
	out := map[Quantization]Efficiency{}
	// The measuring engine's own GPU layout (its KV element size and
	// expert split) shapes the model the factors are fitted to.
	var rt Runtime
	if c.Engine != "" {
		rt, _ = RuntimeByName(c.Engine)
	}
	for _, q := range Quantizations() {
		var ms []Measurement
		for _, m := range c.Measurements {
			if m.Quantization == q {
				ms = append(ms, m)
			}
		}
		if len(ms) > 0 {
			out[q] = fitMeasurements(a, rt, DefaultEfficiency(a, q), ms)
		}
	}
	for q, e := range c.Efficiency {
		out[q] = e
	}
	return out
}

// fitMeasurements fits factors to measurements of one quantization,
// starting from eff. The objective is a sum of squared log errors: in log
// factors each predicted time is the log of a sum of rooflines, so the
// search is well conditioned even for a measurement near the ridge between
// memory- and compute-bound, where solving for one factor alone is not. A
// vanishing pull towards eff (fitPrior) settles the directions the
// measurements leave flat. Each round searches a 21×21 grid around the best
// point so far and shrinks it fivefold; the first spans the whole range.
func fitMeasurements(a Accelerator, rt Runtime, eff Efficiency, ms []Measurement) Efficiency {
	cost := func(lb, lc float64) float64 {
		e := Efficiency{Bandwidth: math.Exp(lb), Compute: math.Exp(lc)}
		var sum float64
		for _, m := range ms {
			c := m.candidate(a, rt, e)
			if m.PrefillTokensPerSecond > 0 {
				measured := float64(m.BatchSize*m.PromptTokens) / m.PrefillTokensPerSecond
				sum += square(math.Log(c.prefill(m.BatchSize) / measured))
			}
			measured := float64(m.BatchSize) / m.DecodeTokensPerSecond
			sum += square(math.Log(c.decodeStep(m.BatchSize, m.decodeContext()) / measured))
		}
		return sum + fitPrior*(square(lb-math.Log(eff.Bandwidth))+square(lc-math.Log(eff.Compute)))
	}
	lo := math.Log(minFactor)
	clamp := func(x float64) float64 { return math.Min(0, math.Max(lo, x)) }
	lb, lc := clamp(math.Log(eff.Bandwidth)), clamp(math.Log(eff.Compute))
	best := cost(lb, lc)
	for step := -lo / 10; step > 1e-9; step /= 5 {
		cb, cc := lb, lc
		for i := -10; i <= 10; i++ {
			for j := -10; j <= 10; j++ {
				b, c := clamp(cb+float64(i)*step), clamp(cc+float64(j)*step)
				if v := cost(b, c); v < best {
					best, lb, lc = v, b, c
				}
			}
		}
	}
	return Efficiency{Bandwidth: math.Exp(lb), Compute: math.Exp(lc)}
}

// minFactor is the smallest factor Fit returns.
const minFactor = 1e-4

// fitPrior weighs the pull of Fit towards the default factors: small enough
// to move a fit to exact measurements by well under 0.1%.
const fitPrior = 1e-6

func square(x float64) float64 { return x * x }

// decodeContext is the mean KV length over the measured decode: the prompt
// plus half the generated tokens.
func (m Measurement) decodeContext() float64 {
	return float64(m.PromptTokens) + float64(m.OutputTokens)/2
}

// candidate is the performance model of m's shape on a under rt with
// factors eff.
func (m Measurement) candidate(a Accelerator, rt Runtime, eff Efficiency) candidate {
	req := Request{Model: m.Model, Accelerator: a, Targets: Targets{PromptTokens: m.PromptTokens, OutputTokens: m.OutputTokens,
		Context: m.PromptTokens + m.OutputTokens}}
	return newCandidate(req, rt, m.Quantization, m.TensorParallelism, 1, eff)
}

// efficiencies resolves the factors Solve uses per quantization: the
// calibration's (explicit or fitted), else the runtime's profile for the
// accelerator.
func efficiencies(req Request, rt Runtime) (map[Quantization]Efficiency, error) {
	out := map[Quantization]Efficiency{}
	for _, q := range Quantizations() {
		out[q] = rt.efficiency(req.Accelerator, q)
	}
	if req.Calibration == nil {
		return out, nil
	}
	if err := req.Calibration.Validate(); err != nil {
		return nil, err
	}
	for q, e := range req.Calibration.Fit(req.Accelerator) {
		out[q] = e
	}
	return out, nil
}
