package main

import (
	"sync"
	"time"

	"github.com/vipd/vipd/health"
)

// transitionsKept is how many health transitions /status shows per backend.
const transitionsKept = 5

// TransitionRecord is one health transition of a backend in /status.
type TransitionRecord struct {
	At      time.Time `json:"at"`
	Healthy bool      `json:"healthy"`
	Reason  string    `json:"reason"` // ok for a rise, else the failure that reached fall
}

// transitionLog keeps the latest health transitions of each backend for the
// status page. health owns the state; this is its recent history, which
// health does not keep. The zero value is ready to use.
type transitionLog struct {
	mu        sync.Mutex
	byBackend map[[2]string][]TransitionRecord // guarded by mu; newest first, at most transitionsKept
}

func (l *transitionLog) record(t health.Transition, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byBackend == nil {
		l.byBackend = map[[2]string][]TransitionRecord{}
	}
	key := [2]string{t.Pool, t.Backend}
	recs := append([]TransitionRecord{{At: at, Healthy: t.Healthy, Reason: t.Reason}}, l.byBackend[key]...)
	l.byBackend[key] = recs[:min(len(recs), transitionsKept)]
}

// recent returns a backend's transitions, newest first; never nil.
func (l *transitionLog) recent(pool, backend string) []TransitionRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]TransitionRecord{}, l.byBackend[[2]string{pool, backend}]...)
}
