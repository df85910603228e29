package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// errClientGone reports a failed write: the client went away.
var errClientGone = errors.New("server: the client went away")

// eventStream writes Server-Sent Events: "data: JSON\n\n" per event, then
// "data: [DONE]\n\n", flushing each so tokens reach the client at once.
type eventStream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration // for each write: a client that stops reading is gone
	buf     []byte
	err     error
}

func newEventStream(w http.ResponseWriter, timeout time.Duration) *eventStream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies must not buffer the stream
	w.WriteHeader(http.StatusOK)
	e := &eventStream{w: w, rc: http.NewResponseController(w), timeout: timeout}
	e.rc.SetWriteDeadline(time.Now().Add(timeout))
	// Send the headers now: the client knows it was accepted even while
	// its request waits in the queue.
	if e.rc.Flush() != nil {
		e.err = errClientGone
	}
	return e
}

func (e *eventStream) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return e.write(b)
}

func (e *eventStream) done() { e.write([]byte("[DONE]")) }

func (e *eventStream) write(data []byte) error {
	if e.err != nil {
		return e.err
	}
	e.buf = append(e.buf[:0], "data: "...)
	e.buf = append(e.buf, data...)
	e.buf = append(e.buf, '\n', '\n')
	e.rc.SetWriteDeadline(time.Now().Add(e.timeout))
	if _, err := e.w.Write(e.buf); err != nil {
		e.err = errClientGone
		return e.err
	}
	if err := e.rc.Flush(); err != nil {
		e.err = errClientGone
	}
	return e.err
}
