package ownership

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Group runs one Owner per held thing (one per VIP), named, and feeds them
// all the same leadership events. Owners are added and removed while it
// runs: one added while this node leads is given the latest gain at once,
// so it starts holding; Remove returns once the removed Owner released.
// Each Owner keeps the rules of an Owner on its own (a loss releases first,
// a failed hold is retried), and a loss reaches every Owner without
// waiting for any other's release.
type Group struct {
	template Options // each Owner's options, but for Holder and Probe
	probe    <-chan struct{}
	log      *zap.Logger

	mu      sync.Mutex
	members map[string]*member
	order   []string        // member names in the order added, for probes
	last    Event           // the latest event, for an Owner added later
	ctx     context.Context // Run's, once it runs; Owners run under it
	stopped bool            // Run returned: nothing is added any more
}

// member is one Owner of a Group and what feeds it.
type member struct {
	own    bool // fed by Send alone, not by the Group's events
	owner  *Owner
	inbox  *inbox
	probe  chan struct{}      // the Owner's Probe, which the Group's loop relays to
	cancel context.CancelFunc // ends its Run; nil until it runs
	done   chan struct{}      // closed once its Run (and feed) returned
}

// NewGroup returns a Group whose Owners take opts' RetryAfter, After,
// OnFailedChange and Logger. opts.Probe, if set, is the Group's liveness
// probe: the Group receives from it between two steps, passes it on to
// every Owner's loop, one after the other, and receives the next one only
// once each has taken it, so a sender learns that every loop still comes
// back to its select. opts.Holder is not used.
func NewGroup(opts Options) *Group {
	g := &Group{template: opts, probe: opts.Probe, log: opts.Logger, members: map[string]*member{}}
	g.template.Holder, g.template.Probe = nil, nil
	if g.log == nil {
		g.log = zap.NewNop()
	}
	return g
}

// Failed reports whether any Owner's hold failed (see Owner.Failed): a
// leader in that state is unfit to lead (rule 7).
func (g *Group) Failed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.members {
		if m.owner.Failed() {
			return true
		}
	}
	return false
}

// Released returns once every Owner fed by the Group's events has handled
// the loss numbered seq (Event.Seq) or a later one, so what this node held
// as leader is released, or with ctx's error. A leader that hands its
// leadership over calls it after withdrawing its gain
// (election.Options.Released), so that its VIPs are gone before its
// successor may campaign. Owners fed by Send hold on their own terms and
// are not waited for.
func (g *Group) Released(ctx context.Context, seq uint64) error {
	t := time.NewTicker(releasedPoll)
	defer t.Stop()
	for {
		held := ""
		g.mu.Lock()
		for _, name := range g.order {
			if m := g.members[name]; !m.own && !m.owner.ReleasedFor(seq) {
				held = name
				break
			}
		}
		g.mu.Unlock()
		if held == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to handle loss %d: %w", held, seq, ctx.Err())
		case <-t.C:
		}
	}
}

// releasedPoll is how often Released looks: a release is a netlink delete.
const releasedPoll = time.Millisecond

// Add starts an Owner of h named name. If this node leads (the latest
// event was a gain), it starts holding at once. It fails if the name is
// taken or Run has returned.
func (g *Group) Add(name string, h Holder) error { return g.add(name, h, false) }

// AddSeparate starts an Owner of h named name that the Group's events do
// not reach: it holds only as Send tells it (a spread VIP, held under a
// lease rather than leadership). It starts released.
func (g *Group) AddSeparate(name string, h Holder) error { return g.add(name, h, true) }

// Send tells the separate Owner named name to hold or to release. The
// channel it returns is closed once the Owner acted on it (a release: the
// hold has ended and released) or the Owner stopped (which releases too).
func (g *Group) Send(name string, hold bool) (<-chan struct{}, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.members[name]
	switch {
	case g.stopped:
		return nil, fmt.Errorf("send to %s: the owners have stopped", name)
	case m == nil:
		return nil, fmt.Errorf("send to %s: not owned", name)
	case !m.own:
		return nil, fmt.Errorf("send to %s: it follows the leadership events", name)
	}
	ev := Event{Leader: hold, done: make(chan struct{})}
	m.inbox.put(ev)
	return ev.done, nil
}

func (g *Group) add(name string, h Holder, own bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.stopped:
		return fmt.Errorf("own %s: the owners have stopped", name)
	case g.members[name] != nil:
		return fmt.Errorf("own %s: already owned", name)
	}
	opts := g.template
	opts.Holder, opts.Logger = h, g.log.With(zap.String("held", name))
	m := &member{own: own, inbox: newInbox(), probe: make(chan struct{}), done: make(chan struct{})}
	opts.Probe = m.probe
	m.owner = New(opts)
	if g.last.Leader && !own {
		m.inbox.put(g.last)
	}
	g.members[name] = m
	g.order = append(g.order, name)
	if g.ctx != nil {
		g.startLocked(m)
	}
	return nil
}

// Remove stops the Owner named name and returns once it has released
// what it held. Removing a name that is not there is an error.
func (g *Group) Remove(name string) error {
	g.mu.Lock()
	m := g.members[name]
	if m == nil {
		g.mu.Unlock()
		return fmt.Errorf("disown %s: not owned", name)
	}
	delete(g.members, name)
	g.order = slices.DeleteFunc(g.order, func(n string) bool { return n == name })
	g.mu.Unlock()
	if m.cancel != nil {
		m.cancel()
		<-m.done
	} else {
		m.inbox.abandon()
	}
	if m.owner.Failed() && g.template.OnFailedChange != nil {
		g.template.OnFailedChange() // its failure no longer counts
	}
	return nil
}

// startLocked runs m under the Group's context; g.mu must be held.
func (g *Group) startLocked(m *member) {
	ctx, cancel := context.WithCancel(g.ctx)
	m.cancel = cancel
	events := make(chan Event)
	var wg sync.WaitGroup
	wg.Go(func() { m.inbox.feed(ctx, events) })
	wg.Go(func() { m.owner.Run(ctx, events) })
	go func() {
		wg.Wait()
		m.inbox.abandon() // the Owner has released: what it never saw is done too
		close(m.done)
	}()
}

// Run feeds every Owner the events until ctx ends or events is closed,
// then stops every Owner and returns once all have released. Call it once.
func (g *Group) Run(ctx context.Context, events <-chan Event) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.mu.Lock()
	g.ctx = ctx
	for _, m := range g.members {
		g.startLocked(m)
	}
	g.mu.Unlock()
	defer g.stop()

	probeIn := g.probe
	var pending []*member // Owners the probe being relayed has still to reach
	for {
		var probeOut chan struct{}
		var gone chan struct{}
		if len(pending) > 0 {
			probeOut, gone = pending[0].probe, pending[0].done
		}
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			g.publish(ev)
		case <-probeIn:
			pending, probeIn = g.inOrder(), nil
		case probeOut <- struct{}{}:
			pending = pending[1:]
		case <-gone: // removed meanwhile: nothing to probe
			pending = pending[1:]
		}
		if len(pending) == 0 {
			probeIn = g.probe
		}
	}
}

// publish gives ev to every Owner and keeps it for those added later.
func (g *Group) publish(ev Event) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last = ev
	for _, m := range g.members {
		if !m.own {
			m.inbox.put(ev)
		}
	}
}

// inOrder is every member, in the order added.
func (g *Group) inOrder() []*member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*member, 0, len(g.order))
	for _, name := range g.order {
		out = append(out, g.members[name])
	}
	return out
}

// stop ends every Owner (each releases on its own, at once) and waits for
// all of them.
func (g *Group) stop() {
	g.mu.Lock()
	g.stopped = true
	members := make([]*member, 0, len(g.members))
	for _, m := range g.members {
		m.cancel()
		members = append(members, m)
	}
	g.mu.Unlock()
	for _, m := range members {
		<-m.done
	}
}

// inbox queues one Owner's events so that publishing never waits for an
// Owner that is busy releasing; the Owner still sees every event in order.
type inbox struct {
	mu     sync.Mutex
	queue  []Event       // guarded by mu
	notify chan struct{} // buffered 1: the queue is not empty
}

func newInbox() *inbox { return &inbox{notify: make(chan struct{}, 1)} }

// put queues ev; it never blocks.
func (in *inbox) put(ev Event) {
	in.mu.Lock()
	in.queue = append(in.queue, ev)
	in.mu.Unlock()
	select {
	case in.notify <- struct{}{}:
	default:
	}
}

// feed hands the queued events to out, in order, until ctx ends.
func (in *inbox) feed(ctx context.Context, out chan<- Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.notify:
		}
		in.mu.Lock()
		queue := in.queue
		in.queue = nil
		in.mu.Unlock()
		for i, ev := range queue {
			select {
			case out <- ev:
			case <-ctx.Done():
				in.mu.Lock()
				in.queue = append(queue[i:], in.queue...)
				in.mu.Unlock()
				return
			}
		}
	}
}

// abandon closes the done channels of the events left in the queue, once
// the Owner can no longer see them.
func (in *inbox) abandon() {
	in.mu.Lock()
	queue := in.queue
	in.queue = nil
	in.mu.Unlock()
	for _, ev := range queue {
		if ev.done != nil {
			close(ev.done)
		}
	}
}
