package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkGatewayOverhead measures what the gateway adds to a request: the same small
// chat completion sent b.N times straight to a loopback engine and through the gateway,
// interleaved, one at a time.
//
//	direct-p50-us, gateway-p50-us   median latency of each path
//	added-p50-us                    their difference (the target: under 1000)
func BenchmarkGatewayOverhead(b *testing.B) {
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"ok"}}]}`)
	}))
	defer engine.Close()
	u, _ := url.Parse(engine.URL)
	g := New(NewRouter([]*Replica{{Model: "m", URL: u}}), Options{})
	front := httptest.NewServer(g)
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	body := `{"model":"m","messages":[{"role":"system","content":"` + strings.Repeat("You are helpful. ", 30) + `"},{"role":"user","content":"hi"}]}`
	send := func(base string) time.Duration {
		start := time.Now()
		res, err := client.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("status %d", res.StatusCode)
		}
		return time.Since(start)
	}
	send(engine.URL)
	send(front.URL)
	direct := make([]time.Duration, 0, b.N)
	through := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		direct = append(direct, send(engine.URL))
		through = append(through, send(front.URL))
	}
	b.StopTimer()
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds())
	}
	dp, gp := p50(direct), p50(through)
	b.ReportMetric(dp, "direct-p50-us")
	b.ReportMetric(gp, "gateway-p50-us")
	b.ReportMetric(gp-dp, "added-p50-us")
}
