package ownership

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every wait of these tests; it is a failure bound only.
const wait = 5 * time.Second

// fakeHolder announces each Hold on started and counts overlaps. A hold
// returns when the test fails it or, once its context ends, when the test
// lets its release finish (immediately unless gated).
type fakeHolder struct {
	gated   bool
	started chan *fakeHold // buffered: Hold never waits for the test
	calls   atomic.Int32
	active  atomic.Int32
	overlap atomic.Bool
}

type fakeHold struct {
	ctx      context.Context
	holding  func()        // the Owner's report that the hold holds
	fail     chan error    // buffered 1: the hold returns this error
	release  chan struct{} // closed by the test: a gated release completes
	returned chan struct{} // closed when Hold has returned
}

func newFakeHolder(gated bool) *fakeHolder {
	return &fakeHolder{gated: gated, started: make(chan *fakeHold, 8)}
}

func (f *fakeHolder) Hold(ctx context.Context, holding func()) error {
	f.calls.Add(1)
	if f.active.Add(1) > 1 {
		f.overlap.Store(true)
	}
	h := &fakeHold{ctx: ctx, holding: holding, fail: make(chan error, 1), release: make(chan struct{}), returned: make(chan struct{})}
	defer close(h.returned)
	defer f.active.Add(-1)
	f.started <- h
	select {
	case err := <-h.fail:
		return err
	case <-ctx.Done():
		if f.gated {
			<-h.release
		}
		return nil
	}
}

var _ Holder = (*fakeHolder)(nil)

// fakeClock hands the loop a timer that fires when the test says so. The
// loop waits in After until the test has taken the request (asked) and let
// it go on (resume), so the test can line up what the loop sees next.
type fakeClock struct {
	asked  chan time.Duration
	resume chan struct{}
	timer  chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{asked: make(chan time.Duration), resume: make(chan struct{}), timer: make(chan time.Time, 1)}
}

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	c.asked <- d
	<-c.resume
	return c.timer
}

// pause takes the loop's request for a pause and lets the loop go on.
func (c *fakeClock) pause(t *testing.T) time.Duration {
	t.Helper()
	d := recv(t, c.asked, "the retry pause")
	c.resume <- struct{}{}
	return d
}

func (c *fakeClock) fire() { c.timer <- time.Time{} }

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func send(t *testing.T, ch chan<- Event, ev Event) {
	t.Helper()
	select {
	case ch <- ev:
	case <-time.After(wait):
		t.Fatalf("the loop did not take %+v", ev)
	}
}

func closed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	recv(t, ch, what)
}

// running is an Owner whose Run the test drives.
type running struct {
	o       *Owner
	events  chan Event
	changes chan struct{} // one value per OnFailedChange call
	done    chan struct{} // closed when Run has returned
	cancel  context.CancelFunc
}

func start(t *testing.T, h Holder, c *fakeClock, eventBuffer int) *running {
	t.Helper()
	r := &running{events: make(chan Event, eventBuffer), changes: make(chan struct{}, 16), done: make(chan struct{})}
	opts := Options{Holder: h, RetryAfter: 7 * time.Second, Logger: zaptest.NewLogger(t),
		OnFailedChange: func() { r.changes <- struct{}{} }}
	if c != nil {
		opts.After = c.after
	}
	r.o = New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); r.o.Run(ctx, r.events) }()
	t.Cleanup(func() {
		cancel()
		closed(t, r.done, "Run to return")
	})
	return r
}

// A loss cancels the hold, and the loop takes nothing else until the
// release has completed; the next gain starts a hold that never overlaps
// the old one.
func TestLossReleasesBeforeTheLoopTakesAnythingElse(t *testing.T) {
	f := newFakeHolder(true)
	r := start(t, f, nil, 0)
	send(t, r.events, Event{Leader: true, Term: 1})
	first := recv(t, f.started, "the first hold")

	send(t, r.events, Event{Leader: false, Term: 1})
	closed(t, first.ctx.Done(), "the loss to cancel the hold")
	// The release is still running: the loop must not be ready for an event.
	select {
	case r.events <- Event{Leader: true, Term: 2}:
		t.Fatal("the loop took a new gain while the old hold was still releasing")
	default:
	}
	close(first.release)
	closed(t, first.returned, "the first hold to return")

	send(t, r.events, Event{Leader: true, Term: 2})
	second := recv(t, f.started, "the hold of the new term")
	if f.overlap.Load() {
		t.Error("two holds ran at once")
	}
	close(second.release)
}

// A retry that is due when a loss arrives is dropped: the loss is handled
// first and nothing is claimed for a leader that already lost.
func TestALossBeatsADueRetry(t *testing.T) {
	f, c := newFakeHolder(false), newFakeClock()
	r := start(t, f, c, 1)
	send(t, r.events, Event{Leader: true, Term: 1})
	recv(t, f.started, "the first hold").fail <- errors.New("claim refused")
	recv(t, c.asked, "the retry pause")
	// Both ready before the loop selects again: the loss, and the retry.
	r.events <- Event{Leader: false, Term: 1}
	c.fire()
	c.resume <- struct{}{}
	// The loop takes the second loss only once it has handled the first,
	// and the third once it has handled the second, so by then a retry
	// taken before the loss would have started (and released) a hold.
	send(t, r.events, Event{Leader: false, Term: 1})
	send(t, r.events, Event{Leader: false, Term: 1})
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d holds started; want 1: the due retry claimed for a leader that had lost", n)
	}
}

// A hold that fails while this node leads makes it unfit and is retried
// after the pause; a retry that fails again is retried again, and one that
// holds clears the failure.
func TestAFailedHoldRetriesAfterThePauseUntilItHolds(t *testing.T) {
	f, c := newFakeHolder(false), newFakeClock()
	r := start(t, f, c, 0)
	send(t, r.events, Event{Leader: true, Term: 1})
	h := recv(t, f.started, "the first hold")
	h.holding()
	if r.o.Failed() {
		t.Fatal("a hold that holds reports a failure")
	}

	for attempt := 1; attempt <= 2; attempt++ {
		h.fail <- errors.New("claim refused")
		if attempt == 1 { // later failures change nothing to report
			recv(t, r.changes, "the failure to be reported")
		}
		if !r.o.Failed() {
			t.Fatalf("attempt %d: a failed hold is not reported", attempt)
		}
		if d := c.pause(t); d != 7*time.Second {
			t.Errorf("attempt %d: retry after %v, want the configured 7s", attempt, d)
		}
		if n := f.calls.Load(); n != int32(attempt) {
			t.Fatalf("attempt %d: %d holds before the pause ended", attempt, n)
		}
		c.fire()
		h = recv(t, f.started, "the retried hold")
		if !r.o.Failed() {
			t.Errorf("attempt %d: the failure cleared before the retry held", attempt)
		}
	}
	h.holding() // the retried hold now holds
	recv(t, r.changes, "the recovery to be reported")
	if r.o.Failed() {
		t.Error("a retry that holds still reports the failure")
	}

	send(t, r.events, Event{Leader: false, Term: 1})
	closed(t, h.returned, "the loss to release the retried hold")
	if r.o.Failed() {
		t.Error("a follower reports a failed hold")
	}
}

// The election stopping (its event channel closed) releases the hold and
// ends Run.
func TestClosedEventsRelease(t *testing.T) {
	f := newFakeHolder(false)
	r := start(t, f, nil, 0)
	send(t, r.events, Event{Leader: true, Term: 1})
	h := recv(t, f.started, "the hold")
	close(r.events)
	closed(t, r.done, "Run to return")
	select {
	case <-h.returned:
	default:
		t.Fatal("Run returned before the hold had released")
	}
}

// Without a Holder, leadership events are consumed and nothing is held.
func TestNothingToHold(t *testing.T) {
	r := start(t, nil, nil, 0)
	send(t, r.events, Event{Leader: true, Term: 1})
	send(t, r.events, Event{Leader: false, Term: 1})
	close(r.events)
	closed(t, r.done, "Run to return")
	if r.o.Failed() {
		t.Error("nothing to hold reports a failure")
	}
}
