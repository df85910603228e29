package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/utils/ptr"
)

// PullEvent is one line of `moe pull --progress json`: the JSON form of engine/source.Event,
// restated with the fields the operator reads because the manager does not link the
// engine (TestPullContract holds the two to the same names). The final line, "done" or
// "error", is also the loader container's termination message.
type PullEvent struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"`
	URI   string    `json:"uri"`
	// Bytes of Total are in place; Downloaded were transferred by this pull.
	Bytes      int64 `json:"bytes"`
	Total      int64 `json:"total"`
	Downloaded int64 `json:"downloaded"`
	Files      int   `json:"files"`
	FilesTotal int   `json:"filesTotal"`
	// Rate is bytes per second; ETA seconds left at that rate.
	Rate  float64 `json:"rate,omitempty"`
	ETA   float64 `json:"etaSeconds,omitempty"`
	Path  string  `json:"path,omitempty"`
	Code  int     `json:"code,omitempty"`
	Error string  `json:"error,omitempty"`
	Msg   string  `json:"msg,omitempty"`
}

// pullEventKinds are the event names `moe pull` prints.
var pullEventKinds = map[string]bool{
	"start": true, "progress": true, "file": true, "resume": true, "retry": true,
	"wait": true, "offline": true, "done": true, "error": true,
}

// ParsePullLog returns the last pull event in out: the tail of a loader's log, or its
// termination message (one event, or the log's tail when the pull died before writing
// it). Lines that are not pull events (a partial first line of a tail, stderr text) are
// skipped; ok is false when there is none.
func ParsePullLog(out []byte) (e PullEvent, ok bool) {
	for len(out) > 0 {
		i := bytes.LastIndexByte(bytes.TrimRight(out, "\r\n"), '\n')
		line := bytes.TrimSpace(out[i+1:])
		out = out[:max(i, 0)]
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var ev PullEvent
		if json.Unmarshal(line, &ev) == nil && pullEventKinds[ev.Event] {
			return ev, true
		}
	}
	return PullEvent{}, false
}

// PullProgressSource reads the output of a running loader pod, whose last pull event is the
// cache's progress. Production reads the pods/log subresource (PodLogs); tests feed lines
// `moe pull` printed.
type PullProgressSource interface {
	// Tail returns the end of the pull container's output: at least its last few lines.
	Tail(ctx context.Context, pod *corev1.Pod) ([]byte, error)
}

// Bounds of a log read: progress lines are a few hundred bytes, and only the last matters.
const (
	pullLogTailLines  = 8
	pullLogLimitBytes = 64 << 10
)

// PodLogs is the production PullProgressSource: it reads the loader container's last lines
// through the pods/log subresource (the operator needs get on pods/log, nothing more).
type PodLogs struct {
	Pods corev1client.PodsGetter
}

// Tail implements PullProgressSource.
func (p PodLogs) Tail(ctx context.Context, pod *corev1.Pod) ([]byte, error) {
	out, err := p.Pods.Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{
		Container:  loaderContainerName,
		TailLines:  ptr.To[int64](pullLogTailLines),
		LimitBytes: ptr.To[int64](pullLogLimitBytes),
	}).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the log of loader pod %q: %w", pod.Name, err)
	}
	return out, nil
}
