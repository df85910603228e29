// Package engineclient sends OpenAI requests to an engine Service from outside the
// cluster, through the Service itself: to its cluster IP when this host routes to it (the
// local cluster's kube-proxy rules do), otherwise through the API server's service proxy,
// which works against any cluster a kubeconfig reaches. `make demo` and the e2e tests use it.
package engineclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Route says how requests reach the Service.
type Route string

const (
	// RouteClusterIP goes to the Service's virtual IP (kube-proxy picks a ready pod).
	RouteClusterIP Route = "cluster IP"
	// RouteAPIServer goes through the API server's services/proxy subresource (the API
	// server picks a ready endpoint).
	RouteAPIServer Route = "API server service proxy"
)

// Client talks to one engine Service.
type Client struct {
	Namespace, Service string
	Port               int32
	Route              Route
	base               string // http://IP:port for RouteClusterIP
	http               *http.Client
	rest               rest.Interface
}

// New looks up the Service and picks the route: the cluster IP when a TCP connection to it
// succeeds within a second, else the API server proxy.
func New(ctx context.Context, cfg *rest.Config, namespace, service string) (*Client, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	svc, err := cs.CoreV1().Services(namespace).Get(ctx, service, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading Service %s/%s: %w", namespace, service, err)
	}
	if len(svc.Spec.Ports) == 0 {
		return nil, fmt.Errorf("Service %s/%s has no ports", namespace, service)
	}
	c := &Client{Namespace: namespace, Service: service, Port: svc.Spec.Ports[0].Port, rest: cs.CoreV1().RESTClient(),
		http: &http.Client{Timeout: 5 * time.Minute}}
	if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		addr := net.JoinHostPort(ip, strconv.Itoa(int(c.Port)))
		if conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr); err == nil {
			conn.Close()
			c.Route, c.base = RouteClusterIP, "http://"+addr
			return c, nil
		}
	}
	c.Route = RouteAPIServer
	return c, nil
}

// Base is the Service's base URL when it is reached at its cluster IP (RouteClusterIP), or "".
func (c *Client) Base() string { return c.base }

func newKey() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatRequest is the subset of the OpenAI chat request the tests and demo send.
type ChatRequest struct {
	Model       string    `json:"model"`
	Messages    []Message `json:"messages"`
	MaxTokens   int       `json:"max_tokens,omitempty"`
	Temperature *float64  `json:"temperature,omitempty"`
	Seed        *int64    `json:"seed,omitempty"`
}

// ChatResponse is the subset of the OpenAI chat response they read.
type ChatResponse struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Message      Message `json:"message"`
		FinishReason string  `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Code, e.Body) }

// Do sends a request to path (such as /v1/models) and returns the body of a 2xx answer.
func (c *Client) Do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	if c.Route == RouteClusterIP {
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		// An Idempotency-Key makes the request replayable for net/http: when the replica
		// closes a kept-alive connection (it drains on shutdown) just as a request goes out
		// on it, before any answer, the transport sends it again on a new connection, as
		// the OpenAI clients retry connection errors. Completions have no side effects, and
		// an answered request, a 503 included, is never retried.
		req.Header.Set("Idempotency-Key", newKey())
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode/100 != 2 {
			return nil, &StatusError{Code: resp.StatusCode, Body: string(out)}
		}
		return out, nil
	}
	r := c.rest.Verb(method).Namespace(c.Namespace).Resource("services").
		Name(net.JoinHostPort(c.Service, strconv.Itoa(int(c.Port)))).SubResource("proxy").Suffix(path)
	if body != nil {
		r = r.Body(body).SetHeader("Content-Type", "application/json")
	}
	res := r.Do(ctx)
	var code int
	res.StatusCode(&code)
	out, err := res.Raw()
	if err != nil {
		if code != 0 {
			return nil, &StatusError{Code: code, Body: string(out)}
		}
		return nil, err
	}
	return out, nil
}

// Chat sends one chat completion and decodes the answer.
func (c *Client) Chat(ctx context.Context, req ChatRequest) (*ChatResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	out, err := c.Do(ctx, http.MethodPost, "/v1/chat/completions", body)
	if err != nil {
		return nil, err
	}
	var resp ChatResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("decoding the chat answer %q: %w", out, err)
	}
	if len(resp.Choices) == 0 {
		return nil, errors.New("the chat answer has no choices")
	}
	return &resp, nil
}
