package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"

	"github.com/moe-operator/moe-operator/controllers"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    func(g Gomega, o options)
		wantErr string
	}{
		{
			name: "defaults serve metrics over HTTPS on 8443 and probes on 8081 without leader election",
			want: func(g Gomega, o options) {
				g.Expect(o.metricsAddr).To(Equal(":8443"))
				g.Expect(o.metricsSecure).To(BeTrue())
				m := metricsOptions(o)
				g.Expect(m.SecureServing).To(BeTrue())
				g.Expect(m.FilterProvider).NotTo(BeNil(), "callers are authenticated and authorized")
				g.Expect(o.probeAddr).To(Equal(":8081"))
				g.Expect(o.leaderElect).To(BeFalse())
				g.Expect(o.logLevel).To(Equal(zapcore.InfoLevel))
				g.Expect(o.engineImage).To(Equal(defaultEngineImage))
				g.Expect(o.engineGPUImage).To(Equal(defaultEngineGPUImage))
				g.Expect(o.vllmImage).To(Equal(controllers.DefaultVLLMImage))
				g.Expect(o.autoscalerSyncPeriod).To(Equal(10 * time.Second))
			},
		},
		{
			name: "every flag is honoured",
			args: []string{"-metrics-bind-address=:9443", "-metrics-secure=false", "-health-probe-bind-address=:9090",
				"-leader-elect", "-leader-election-namespace=moe-system", "-log-level=debug", "-log-format=console",
				"-engine-image=example.com/moe:1", "-engine-gpu-image=example.com/moe:1-vulkan", "-vllm-image=example.com/vllm:2", "-autoscaler-sync-period=5s"},
			want: func(g Gomega, o options) {
				g.Expect(o).To(Equal(options{
					metricsAddr: ":9443", metricsSecure: false, probeAddr: ":9090", leaderElect: true,
					leaderElectNS: "moe-system", logLevel: zapcore.DebugLevel, logFormat: "console",
					engineImage: "example.com/moe:1", engineGPUImage: "example.com/moe:1-vulkan", vllmImage: "example.com/vllm:2", autoscalerSyncPeriod: 5 * time.Second,
				}))
			},
		},
		{
			name: "plain HTTP metrics only when asked for",
			args: []string{"-metrics-secure=false"},
			want: func(g Gomega, o options) {
				m := metricsOptions(o)
				g.Expect(m.SecureServing).To(BeFalse())
				g.Expect(m.FilterProvider).To(BeNil())
			},
		},
		{name: "an unknown log level is refused", args: []string{"-log-level=loud"}, wantErr: "want debug, info, warn or error"},
		{name: "panic levels are refused", args: []string{"-log-level=fatal"}, wantErr: "want debug, info, warn or error"},
		{name: "an unknown log format is refused", args: []string{"-log-format=xml"}, wantErr: "want json or console"},
		{name: "an empty engine image is refused", args: []string{"-engine-image="}, wantErr: "must not be empty"},
		{name: "an empty GPU engine image is refused", args: []string{"-engine-gpu-image="}, wantErr: "must not be empty"},
		{name: "a sync period under a second is refused", args: []string{"-autoscaler-sync-period=100ms"}, wantErr: "want at least 1s"},
		{name: "positional arguments are refused", args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			o, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.wantErr)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			tt.want(g, o)
		})
	}
}

func TestParseFlagsHelp(t *testing.T) {
	var out strings.Builder
	_, err := parseFlags([]string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parseFlags(-h) = %v, want flag.ErrHelp", err)
	}
	for _, f := range []string{"metrics-bind-address", "health-probe-bind-address", "leader-elect", "log-level", "engine-image"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("help does not mention -%s", f)
		}
	}
}
