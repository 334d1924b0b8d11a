// Package ownership decides when this node holds what only the leader may
// hold (the VIPs). An Owner turns leadership events into at most one running
// hold: it starts the hold on a gain, and on a loss stops it and waits for
// its release before it looks at anything else (docs/architecture.md rules 1
// and 2). A hold that fails while this node still leads is started again
// after a pause, and until a hold succeeds the Owner reports the failure, so
// that the node tells the cluster it is unfit to lead and hands over (docs/architecture.md rule 7).
//
// It imports neither the election nor the vip package: events arrive on a
// channel of Event and the hold is any Holder (a vip.VIP is one). A hold per
// VIP is one Owner per VIP: a Group runs them, adds and removes them while
// it runs, and feeds each the events of that VIP's placement: every Owner
// of a leader VIP the same leadership events, each separate Owner of a
// spread VIP its own hold and release, from the lease holder (Send).
package ownership

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// DefaultRetryAfter is the pause before a leader whose hold failed tries again.
const DefaultRetryAfter = time.Second

// Event is a change of this node's leadership. A gain is sent only once the
// leader has confirmed its term (rule 1); a loss as soon as it is seen.
type Event struct {
	Leader bool
	Term   uint64
	Seq    uint64 // the sender's count of its events (election.Event.Seq); see ReleasedFor

	done chan struct{} // Group.Send's: closed once the Owner acted on the event
}

// Holder holds something until ctx ends, then releases it and returns. It
// returns early, with an error, when the hold fails. It calls holding, from
// any goroutine and without blocking for long, once it holds everything:
// that clears a failure, so a leader whose retry succeeded is fit again.
type Holder interface {
	Hold(ctx context.Context, holding func()) error
}

// Options configures an Owner.
type Options struct {
	// Holder is what the leader holds; nil: nothing (events are only logged).
	Holder Holder
	// RetryAfter is the pause before a hold that ended while this node still
	// leads is started again. Default DefaultRetryAfter.
	RetryAfter time.Duration
	// After waits like time.After; tests inject their own clock. Default time.After.
	After func(time.Duration) <-chan time.Time
	// OnFailedChange is called, from the goroutine that changed it, whenever
	// Failed changes. It must not block.
	OnFailedChange func()
	// Probe, if set, is a liveness probe: Run receives from it between two
	// steps, so a sender (the systemd watchdog) learns that the loop still
	// comes back to its select and is not stuck inside a step.
	Probe  <-chan struct{}
	Logger *zap.Logger // nil: no logs
}

// Owner runs the holds of one Holder. Create with New, run with Run.
type Owner struct {
	holder     Holder
	retryAfter time.Duration
	after      func(time.Duration) <-chan time.Time
	onFailed   func()
	probe      <-chan struct{}
	log        *zap.Logger

	failed   atomic.Bool   // the last hold failed and no hold has succeeded since
	released atomic.Uint64 // Seq of the loss last handled (released), 0 after a gain, MaxUint64 once Run returned
}

// New applies the defaults of opts. It starts nothing.
func New(opts Options) *Owner {
	o := &Owner{
		holder: opts.Holder, retryAfter: opts.RetryAfter, after: opts.After,
		onFailed: opts.OnFailedChange, probe: opts.Probe, log: opts.Logger,
	}
	if o.retryAfter <= 0 {
		o.retryAfter = DefaultRetryAfter
	}
	if o.after == nil {
		o.after = time.After
	}
	if o.onFailed == nil {
		o.onFailed = func() {}
	}
	if o.log == nil {
		o.log = zap.NewNop()
	}
	return o
}

// Failed reports whether the last hold failed and no hold has succeeded
// since: a leader in that state is unfit to lead (rule 7).
func (o *Owner) Failed() bool { return o.failed.Load() }

// ReleasedFor reports whether this Owner has handled the loss numbered seq
// (Event.Seq) or a later one, its release completed and no gain came since,
// or whether Run has returned. A loss still queued does not count, so a gain
// queued ahead of it cannot be missed.
func (o *Owner) ReleasedFor(seq uint64) bool { return o.released.Load() >= seq }

// holding is the Holder's report that a hold now holds everything. It
// clears a failure, so a leader whose retry succeeded is fit again and
// keeps what it now holds.
func (o *Owner) holding() {
	if o.failed.Swap(false) {
		o.log.Info("hold succeeded after a failure: fit again")
		o.onFailed()
	}
}

func (o *Owner) setFailed(failed bool) {
	if o.failed.Swap(failed) != failed {
		o.onFailed()
	}
}

// Run is the only owner of the holds: it holds exactly while events say this
// node leads, until ctx ends or events is closed; either way it releases
// before it returns. Call it once.
func (o *Owner) Run(ctx context.Context, events <-chan Event) {
	var h *hold
	release := func() {
		if h != nil {
			h.stop()
			h = nil
		}
	}
	defer func() {
		release()
		o.released.Store(math.MaxUint64)
	}()
	var (
		holdEnded <-chan struct{} // the running hold's done; nil without one
		retry     <-chan time.Time
	)
	handle := func(ev Event) {
		o.log.Info("leadership", zap.Bool("leader", ev.Leader), zap.Uint64("term", ev.Term))
		switch {
		case !ev.Leader:
			release() // rule 2: the release comes first and completes here
			holdEnded, retry = nil, nil
			o.released.Store(ev.Seq)
		default:
			o.released.Store(0)
			if h == nil && o.holder != nil {
				h = o.startHold(ctx)
				holdEnded = h.done
			}
		}
		if ev.done != nil {
			close(ev.done)
		}
	}
	for {
		// A pending leadership change goes before a due retry or an ended
		// hold: a retry must never claim for a leader that already lost.
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			handle(ev)
			continue
		default:
		}
		select {
		case <-ctx.Done():
			return
		case <-o.probe:
		case ev, ok := <-events:
			if !ok {
				return
			}
			handle(ev)
		case <-holdEnded:
			// The hold ended while this node still leads: it reported itself
			// unfit, so leadership may move. If no peer takes over, try again
			// rather than lead without holding.
			holdEnded, retry = nil, o.after(o.retryAfter)
		case <-retry:
			retry = nil
			release()
			h = o.startHold(ctx)
			holdEnded = h.done
		}
	}
}

// hold is one running Holder.Hold.
type hold struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (o *Owner) startHold(ctx context.Context) *hold {
	holdCtx, cancel := context.WithCancel(ctx)
	h := &hold{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		err := o.holder.Hold(holdCtx, o.holding)
		if err != nil {
			o.log.Error("hold failed", zap.Error(err))
		}
		o.setFailed(err != nil)
	}()
	return h
}

// stop ends the hold and returns once it has released.
func (h *hold) stop() {
	h.cancel()
	<-h.done
}
