package health

import "time"

// clock is the scheduling seam: workers wait on its timers, so tests can
// fire checks one at a time without sleeping.
type clock interface {
	NewTimer(d time.Duration) clockTimer
}

// clockTimer is the part of *time.Timer a worker uses.
type clockTimer interface {
	C() <-chan time.Time
	Stop() bool
}

// realClock is the production clock.
type realClock struct{}

func (realClock) NewTimer(d time.Duration) clockTimer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }
