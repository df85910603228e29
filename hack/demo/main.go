// Command demo holds the steps of `make demo` (hack/demo.sh) that are awkward in shell:
//
//	go run ./hack/demo plan -n NAMESPACE NAME
//	    print the plan the operator wrote to the MixtralDeployment's status
//	go run ./hack/demo chat -n NAMESPACE [--prompt TEXT] [--max-tokens N] NAME
//	    send one OpenAI chat request through the MixtralDeployment's Service and print the answer
//
// Both use the cluster $KUBECONFIG names.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/test/e2e/engineclient"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: demo plan|chat -n NAMESPACE NAME")
	}
	fs := flag.NewFlagSet("demo "+args[0], flag.ContinueOnError)
	ns := fs.String("n", "default", "namespace")
	prompt := fs.String("prompt", "Name three things a mixture-of-experts model does well.", "chat: the user message")
	maxTokens := fs.Int("max-tokens", 48, "chat: tokens to generate")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("give the MixtralDeployment's name")
	}
	name := fs.Arg(0)
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := servingv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	var mxd servingv1alpha1.MixtralDeployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: *ns, Name: name}, &mxd); err != nil {
		return err
	}
	switch args[0] {
	case "plan":
		return printPlan(&mxd)
	case "chat":
		return chat(ctx, cfg, &mxd, *prompt, *maxTokens)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func printPlan(mxd *servingv1alpha1.MixtralDeployment) error {
	p := mxd.Status.Plan
	if p == nil {
		return fmt.Errorf("%s has no plan in its status yet", mxd.Name)
	}
	fmt.Printf("Plan for %s/%s (model %s on %s):\n", mxd.Namespace, mxd.Name, mxd.Status.Model, mxd.Spec.Accelerator.Type)
	fmt.Printf("  quantization           %s\n", p.Quantization)
	fmt.Printf("  tensor parallelism     %d\n", p.TensorParallelism)
	if mxd.Spec.Accelerator.Type == servingv1alpha1.AcceleratorCPU {
		fmt.Printf("  devices per replica    %d (CPU: the pods request no GPU)\n", p.GPUsPerReplica)
	} else {
		fmt.Printf("  GPUs per replica       %d\n", p.GPUsPerReplica)
	}
	fmt.Printf("  replicas               %d\n", p.Replicas)
	fmt.Printf("  batch (max-num-seqs)   %d\n", p.BatchSize)
	fmt.Printf("  predicted output tok/s %.1f per replica\n", p.OutputTokensPerSecondPerReplica)
	fmt.Printf("  predicted TTFT         %s\n", seconds(p.TTFTSeconds))
	fmt.Printf("  predicted ITL          %s\n", seconds(p.ITLSeconds))
	fmt.Printf("  memory per device      %.1f MiB\n", float64(p.MemoryPerGPUBytes)/(1<<20))
	if p.Reason != "" {
		fmt.Printf("  why                    %s\n", p.Reason)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	fmt.Printf("  (status.plan: %s)\n", b)
	return nil
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond).String()
}

// chat sends one request to the Service the operator made for mxd (same name) and prints
// the question, the answer and how it got there.
func chat(ctx context.Context, cfg *rest.Config, mxd *servingv1alpha1.MixtralDeployment, prompt string, maxTokens int) error {
	ec, err := engineclient.New(ctx, cfg, mxd.Namespace, mxd.Name)
	if err != nil {
		return err
	}
	model := mxd.Spec.Model.ServedName
	if model == "" {
		model = mxd.Name
	}
	seed := int64(1)
	start := time.Now()
	resp, err := ec.Chat(ctx, engineclient.ChatRequest{
		Model:     model,
		Messages:  []engineclient.Message{{Role: "user", Content: prompt}},
		MaxTokens: maxTokens,
		Seed:      &seed,
	})
	if err != nil {
		return fmt.Errorf("chat through Service %s/%s (%s): %w", mxd.Namespace, mxd.Name, ec.Route, err)
	}
	fmt.Printf("POST /v1/chat/completions to Service %s/%s port %d, via the %s, in %s\n",
		mxd.Namespace, mxd.Name, ec.Port, ec.Route, time.Since(start).Round(time.Millisecond))
	fmt.Printf("  user:      %s\n", prompt)
	fmt.Printf("  assistant: %s\n", strings.TrimSpace(resp.Choices[0].Message.Content))
	fmt.Printf("  (model %s, %d prompt + %d completion tokens, finish_reason %s; the weights are random, so the words are too)\n",
		resp.Model, resp.Usage.PromptTokens, resp.Usage.CompletionTokens, resp.Choices[0].FinishReason)
	return nil
}
