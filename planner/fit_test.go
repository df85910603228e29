package planner

import (
	"flag"
	"math"
	"testing"
)

var refit = flag.Bool("fit", false, "refit the default efficiency factors to the published figures (slow)")

// TestFitEfficiencyFactors reproduces the default efficiency factors: for
// each precision family it searches a 0.02 grid of bandwidth and compute
// factors for the pair that minimises the worst relative error over that
// family's published rows (ties broken by the sum of squared log errors),
// and fails when the result differs from defaultEfficiency. Run it after
// changing the performance model:
//
//	go test ./planner -run TestFitEfficiencyFactors -fit -v
func TestFitEfficiencyFactors(t *testing.T) {
	if !*refit {
		t.Skip("run with -fit to refit the efficiency factors")
	}
	rows := append(append([]publishedRow{}, trtllmRows...), gptFastRows...)
	for _, q := range []Quantization{BF16, FP8, Int8} {
		var family []publishedRow
		for _, r := range rows {
			if r.quant == q {
				family = append(family, r)
			}
		}
		best, bestEff := math.Inf(1), Efficiency{}
		for eb := 0.20; eb < 0.99; eb += 0.02 {
			for ec := 0.10; ec < 0.99; ec += 0.02 {
				eff := Efficiency{Bandwidth: math.Round(eb*100) / 100, Compute: math.Round(ec*100) / 100}
				worst, squares := 0.0, 0.0
				for _, r := range family {
					e := math.Log(predictWith(t, r, eff) / r.tokensPerSec)
					worst = math.Max(worst, math.Abs(e))
					squares += e * e
				}
				if obj := worst + 0.01*squares; obj < best {
					best, bestEff = obj, eff
				}
			}
		}
		t.Logf("%s: bandwidth %.2f, compute %.2f, worst error %.1f%%", q, bestEff.Bandwidth, bestEff.Compute, 100*(math.Exp(best)-1))
		for _, r := range family {
			t.Logf("  %-34s predicted %8.1f published %8.1f error %+6.1f%%", r.name, predictWith(t, r, bestEff), r.tokensPerSec,
				100*relativeError(predictWith(t, r, bestEff), r.tokensPerSec))
		}
		def := defaultEfficiency[q]
		// Int8's compute factor is not observable at batch 1.
		if math.Abs(def.Bandwidth-bestEff.Bandwidth) > 0.011 || (q != Int8 && math.Abs(def.Compute-bestEff.Compute) > 0.011) {
			t.Errorf("%s default %+v differs from the fit %+v: update defaultEfficiency and docs/planner.md", q, def, bestEff)
		}
	}
}

// predictWith predicts a published row with the given factors for its family.
func predictWith(t testing.TB, r publishedRow, eff Efficiency) float64 {
	var req Request
	if r.prompt == 5 {
		req = gptFastRequest(t, r)
	} else {
		req = trtllmRequest(t, r)
	}
	req.Calibration = &Calibration{Version: CalibrationVersion, Efficiency: map[Quantization]Efficiency{r.quant: eff}}
	return predict(t, req)
}
