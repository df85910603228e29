package source

import (
	"sync"
	"sync/atomic"
	"time"
)

// Event is one progress report. `moe pull` prints them as JSON lines when
// its output is not a terminal; an operator may parse them (the field names
// are part of the pull contract).
//
// Event kinds:
//
//	start     the file list is known: Total, FilesTotal
//	progress  periodic: Bytes of Total, Rate, ETA
//	file      a file is complete (State: downloaded, resumed or reused)
//	resume    a file continues from a partial download of Resumed bytes
//	wait      another process holds the file's lock; this one waits for it
//	retry     an attempt failed and will be retried after Wait seconds
//	offline   the Hub is unreachable; a complete earlier pull is used (Error says why)
//	done      everything is in place at Path
//	error     the pull failed (printed by `moe pull`, with Code)
type Event struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"`
	URI   string    `json:"uri"`
	File  string    `json:"file,omitempty"`
	State string    `json:"state,omitempty"`
	// Bytes of Total are in place (downloaded, resumed or reused).
	Bytes int64 `json:"bytes"`
	Total int64 `json:"total"`
	// Downloaded bytes were transferred by this pull; Resumed bytes came
	// from partial downloads of earlier pulls; Reused from complete files.
	Downloaded int64 `json:"downloaded"`
	Resumed    int64 `json:"resumed,omitempty"`
	Reused     int64 `json:"reused,omitempty"`
	Files      int   `json:"files"`
	FilesTotal int   `json:"filesTotal"`
	// Rate is bytes per second over the last few seconds; ETA seconds left
	// at that rate (0 when unknown).
	Rate    float64 `json:"rate,omitempty"`
	ETA     float64 `json:"etaSeconds,omitempty"`
	Attempt int     `json:"attempt,omitempty"`
	Wait    float64 `json:"waitSeconds,omitempty"`
	Path    string  `json:"path,omitempty"`
	Code    int     `json:"code,omitempty"`
	Error   string  `json:"error,omitempty"`
	Msg     string  `json:"msg,omitempty"`
}

// tracker adds up the bytes of every file and emits events.
type tracker struct {
	uri        string
	report     func(Event)
	mu         sync.Mutex // serialises report calls and the rate estimate
	total      atomic.Int64
	bytes      atomic.Int64
	downloaded atomic.Int64
	resumed    atomic.Int64
	reused     atomic.Int64
	files      atomic.Int64
	filesTotal int

	lastTime  time.Time
	lastBytes int64
	rate      float64
}

func newTracker(uri string, specs []fileSpec, report func(Event)) *tracker {
	t := &tracker{uri: uri, report: report, filesTotal: len(specs), lastTime: time.Now()}
	for _, s := range specs {
		if s.Size > 0 {
			t.total.Add(s.Size)
		}
	}
	return t
}

// emit fills in the totals and reports e.
func (t *tracker) emit(e Event) {
	if t.report == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fill(&e)
	t.report(e)
}

func (t *tracker) fill(e *Event) {
	e.Time, e.URI = time.Now().UTC(), t.uri
	e.Bytes, e.Total = t.bytes.Load(), t.total.Load()
	e.Downloaded = t.downloaded.Load()
	if e.Event != "resume" {
		e.Resumed = t.resumed.Load()
	}
	e.Reused = t.reused.Load()
	e.Files, e.FilesTotal = int(t.files.Load()), t.filesTotal
	e.Rate = t.rate
	if t.rate > 0 && e.Total > e.Bytes {
		e.ETA = float64(e.Total-e.Bytes) / t.rate
	}
}

// progress emits a progress event, updating the rate: an exponentially
// weighted average of the download speed between calls.
func (t *tracker) progress() {
	if t.report == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	d := t.downloaded.Load()
	if dt := now.Sub(t.lastTime).Seconds(); dt > 0 {
		inst := float64(d-t.lastBytes) / dt
		if t.rate == 0 {
			t.rate = inst
		} else {
			t.rate = 0.5*t.rate + 0.5*inst
		}
	}
	t.lastTime, t.lastBytes = now, d
	e := Event{Event: "progress"}
	t.fill(&e)
	t.report(e)
}

// tick emits progress events every interval until the returned func is called.
func (t *tracker) tick(every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				t.progress()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
