package election

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

// window is one stretch of Raft leadership of this node, owned by monitor.
type window struct {
	stretch   uint64 // raftLeadership.began when it opened
	term      uint64
	stop      chan struct{} // closed by monitor when the window ends
	done      chan struct{} // closed by leaderLoop on exit
	confirmed bool          // Barrier succeeded in this term
	announced bool          // a gain was emitted and not yet withdrawn
}

// raftLeadership folds raft's NotifyCh values, read in order, into what the
// monitor needs however late it looks: raft's latest word, and how many
// stretches of leadership raft has begun. A loss and a regain between two
// looks leave leader true but a new stretch, so the first window still ends
// (with its loss) before the next opens. LeaderCh keeps only the latest
// value and would hide that loss.
type raftLeadership struct {
	leader bool
	began  uint64
}

func (l *raftLeadership) note(leader bool) {
	if leader && !l.leader {
		l.began++
	}
	l.leader = leader
}

// endedBy reports whether raft's stretch of leadership that opened w is over.
func (w *window) endedBy(rl raftLeadership) bool { return !rl.leader || rl.began != w.stretch }

// drain notes every value raft has queued on ch, without waiting.
func (l *raftLeadership) drain(ch <-chan bool) {
	for {
		select {
		case v := <-ch:
			l.note(v)
		default:
			return
		}
	}
}

// monitor is the one goroutine that owns leadership (Consul's
// monitorLeadership): it opens a window with a leaderLoop when raft's
// NotifyCh says leader, and on loss emits the loss first, then stops the loop
// and waits. NotifyCh carries every change (raft blocks until it is read), so
// nothing is polled; the monitor reads it even while it waits for a loop.
func (n *Node) monitor(rt *running) {
	defer n.wg.Done()
	var (
		w  *window
		rl raftLeadership
	)
	for {
		select {
		case <-n.stop:
			n.endWindow(rt, &w, &rl, "shutdown")
			return
		case v := <-rt.notifyCh:
			rl.note(v)
			rl.drain(rt.notifyCh)
		case o := <-rt.obsCh:
			n.observe(o)
			continue
		case term := <-n.confirmedCh:
			if w != nil && w.term == term {
				w.confirmed = true
			}
		case <-n.eligibleCh:
		}
		n.check(rt, &w, &rl)
	}
}

// observe keeps what raft's observations tell about peers.
func (n *Node) observe(o raft.Observation) {
	switch d := o.Data.(type) {
	case raft.LeaderObservation:
		n.notePrevLeader(d.LeaderID)
	case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
		n.noteHeartbeat(o)
	}
}

// notePrevLeader remembers the last other node seen leading. When this node
// wins because that leader died, gossip may still call it alive and Raft has
// not failed a heartbeat to it yet; a hand-off must not pick it first.
func (n *Node) notePrevLeader(id raft.ServerID) {
	if id == "" || string(id) == n.opts.NodeName {
		return
	}
	n.mu.Lock()
	n.prevLeader = id
	n.mu.Unlock()
}

// noteHeartbeat tracks which peers this leader cannot reach, so a hand-off
// never targets a peer that gossip still thinks alive but Raft cannot reach.
func (n *Node) noteHeartbeat(o raft.Observation) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch d := o.Data.(type) {
	case raft.FailedHeartbeatObservation:
		n.unreachable[d.PeerID] = time.Now()
	case raft.ResumedHeartbeatObservation:
		delete(n.unreachable, d.PeerID)
	}
}

// reachable reports whether the leader's heartbeats to id have not failed
// lately. A failing peer is re-reported at least once per transport timeout.
func (n *Node) reachable(id raft.ServerID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	last, failed := n.unreachable[id]
	return !failed || time.Since(last) > 2*ioTimeout(n.opts.Timing)
}

func (n *Node) forgetUnreachable() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.unreachable)
}

// check reconciles the window with what raft said: end it when raft's
// stretch of leadership ended, open one when raft leads, and announce or
// withdraw the gain as eligibility (witness, maintenance, leaving) allows.
func (n *Node) check(rt *running, wp **window, rl *raftLeadership) {
	if w := *wp; w != nil && w.endedBy(*rl) {
		n.endWindow(rt, wp, rl, "raft")
	}
	if *wp == nil && rl.leader {
		term := rt.raft.CurrentTerm()
		w := &window{stretch: rl.began, term: term, stop: make(chan struct{}), done: make(chan struct{})}
		*wp = w
		n.forgetUnreachable() // heartbeat history of an earlier term says nothing now
		n.log.Info("raft leadership won; confirming", zap.Uint64("term", term))
		n.wg.Add(1)
		go n.leaderLoop(rt, w)
	}
	w := *wp
	if w == nil || !w.confirmed {
		return
	}
	switch eligible := n.eligible() && !n.transferredIn(w.term); {
	case eligible && !w.announced:
		w.announced = true
		n.emit(Event{Leader: true, Term: w.term})
	case !eligible && w.announced:
		w.announced = false
		n.emit(Event{Leader: false, Term: w.term})
	}
}

// endWindow withdraws an announced gain before anything else, then stops
// the leader loop and waits for it, noting what raft says meanwhile: raft's
// main loop blocks on a full NotifyCh, and the leader loop may be waiting on
// raft.
func (n *Node) endWindow(rt *running, wp **window, rl *raftLeadership, why string) {
	w := *wp
	if w == nil {
		return
	}
	if w.announced {
		n.emit(Event{Leader: false, Term: max(rt.raft.CurrentTerm(), w.term)})
	}
	close(w.stop)
	for waiting := true; waiting; {
		select {
		case <-w.done:
			waiting = false
		case v := <-rt.notifyCh:
			rl.note(v)
		}
	}
	*wp = nil
	n.log.Info("raft leadership ended", zap.Uint64("term", w.term), zap.String("why", why))
}

func (n *Node) emit(e Event) {
	n.mu.Lock()
	n.emitted++
	e.Seq = n.emitted
	n.lastEmitted = e
	n.mu.Unlock()
	n.metrics.leadership(e.Leader)
	n.events.push(e)
	n.log.Info("leadership event", zap.Bool("leader", e.Leader), zap.Uint64("term", e.Term))
}

// eligible reports whether this node may announce leadership (hold the VIP).
func (n *Node) eligible() bool {
	return n.opts.Role == RoleVoter && !n.fsm.inMaintenance(n.opts.NodeName) && !n.leaving() && !n.handingOffNow()
}

// leaderLoop runs while this node is Raft leader: confirm the term with a
// Barrier, then keep the configuration in line with gossip and hand
// leadership off when this node should not lead.
func (n *Node) leaderLoop(rt *running, w *window) {
	defer n.wg.Done()
	defer close(w.done)
	for {
		err := await(rt.raft.Barrier(n.opTimeout()), w.stop, n.opTimeout())
		if err == nil {
			break
		}
		if errors.Is(err, errWindowEnded) {
			return
		}
		n.log.Warn("leader barrier failed", zap.Uint64("term", w.term), zap.Error(err))
		select {
		case <-w.stop:
			return
		case <-time.After(n.opts.Timing.Heartbeat):
		}
	}
	select {
	case n.confirmedCh <- w.term:
	case <-w.stop:
		return
	}
	t := time.NewTicker(n.opts.Timing.Heartbeat)
	defer t.Stop()
	h := n.newHandoff()
	for {
		n.reconcile(rt, w.stop)
		n.handOff(rt, &h)
		select {
		case <-w.stop:
			return
		case <-t.C:
		case <-n.reconcileCh:
		}
	}
}

// reconcile adds alive gossip members missing from the Raft configuration as
// voters (a witness votes too) and removes members that announced a
// deliberate leave. A crashed member stays a voter until Remove.
func (n *Node) reconcile(rt *running, stop <-chan struct{}) {
	f := rt.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return
	}
	servers := map[string]raft.Server{}
	for _, s := range f.Configuration().Servers {
		servers[string(s.ID)] = s
	}
	peers := n.gossip.snapshot()
	for _, name := range sortedNames(peers) {
		p := peers[name]
		if name == n.opts.NodeName {
			continue
		}
		s, member := servers[name]
		switch {
		case p.meta.Leaving:
			if !member {
				continue
			}
			if err := await(rt.raft.RemoveServer(raft.ServerID(name), 0, n.opTimeout()), stop, n.opTimeout()); err != nil {
				n.log.Warn("remove leaving server", zap.String("server", name), zap.Error(err))
				return
			}
			n.log.Info("removed raft server", zap.String("server", name), zap.String("by", "leave"))
		case p.alive && (!member || s.Suffrage != raft.Voter || string(s.Address) != p.meta.RaftAddr):
			if err := await(rt.raft.AddVoter(raft.ServerID(name), raft.ServerAddress(p.meta.RaftAddr), 0, n.opTimeout()), stop, n.opTimeout()); err != nil {
				n.log.Warn("add voter", zap.String("server", name), zap.Error(err))
				return
			}
			n.log.Info("added raft voter", zap.String("server", name), zap.String("addr", p.meta.RaftAddr), zap.String("role", string(p.meta.Role)))
		}
	}
}

// errWindowEnded is what await returns when the leadership window ends
// before raft answers.
var errWindowEnded = errors.New("leadership window ended")

// await is f.Error() bounded by the window's stop and by timeout. Raft's own
// timeout bounds only the enqueueing of a request: a barrier or membership
// change it has taken may stay pending, and a leader loop blocked on one can
// neither hand off nor end its window. The goroutine left waiting ends when
// raft answers f. A barrier or membership change still queued when raft
// shuts down is never answered (hashicorp/raft gives those futures no
// shutdown channel), so its waiter stays until the process exits.
func await(f raft.Future, stop <-chan struct{}, timeout time.Duration) error {
	answer := make(chan error, 1)
	go func() { answer <- f.Error() }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-answer:
		return err
	case <-stop:
		return errWindowEnded
	case <-t.C:
		return fmt.Errorf("raft gave no answer within %s", timeout)
	}
}

// handoff tracks why and since when this leader wants to step aside.
type handoff struct {
	unfitSince time.Time
	lastTry    time.Time
	warned     string
	failed     map[raft.ServerID]time.Time // targets whose transfer failed lately
}

// handOff transfers leadership when this node is a witness, in maintenance,
// leaving, or unfit for longer than FitnessGrace.
func (n *Node) handOff(rt *running, h *handoff) {
	reason := ""
	switch {
	case n.opts.Role == RoleWitness:
		reason = "witness"
	case n.fsm.inMaintenance(n.opts.NodeName):
		reason = "maintenance"
	case n.leaving():
		reason = "leaving"
	case n.currentFitness().Fit():
		h.unfitSince, h.warned = time.Time{}, ""
	case h.unfitSince.IsZero():
		h.unfitSince = time.Now()
	case time.Since(h.unfitSince) >= n.opts.FitnessGrace:
		reason = "unfit"
	}
	if reason == "" || time.Since(h.lastTry) < 2*n.opts.Timing.Election {
		return
	}
	h.lastTry = time.Now()
	target, err := n.pickTarget(rt, reason == "unfit", h.avoid)
	if err != nil {
		if h.warned != reason {
			n.log.Warn("cannot hand leadership off; keeping it", zap.String("reason", reason), zap.Error(err))
			h.warned = reason
		}
		return
	}
	if err := n.transferTo(rt, target, reason); err != nil {
		n.log.Warn("leadership transfer failed; will retry", zap.String("reason", reason), zap.Error(err))
		h.failed[target.ID] = time.Now()
	}
}

// newHandoff starts a leadership window's hand-off state: the leader this
// node replaced is tried last, as if a transfer to it had just failed.
func (n *Node) newHandoff() handoff {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := handoff{failed: map[raft.ServerID]time.Time{}}
	if n.prevLeader != "" {
		h.failed[n.prevLeader] = time.Now()
	}
	return h
}

// avoid reports whether a transfer to id failed so recently that another
// target should be tried first.
func (h *handoff) avoid(id raft.ServerID) bool {
	t, ok := h.failed[id]
	return ok && time.Since(t) < transferRetryAfter
}

// transferRetryAfter is how long a target whose transfer failed is tried last.
const transferRetryAfter = 3 * time.Second

// pickTarget chooses a voter peer that is alive in gossip, reachable over
// Raft, has the voter role, is neither leaving nor in maintenance; fit peers
// first, peers for which avoid is true last. With requireFit only fit peers
// qualify.
func (n *Node) pickTarget(rt *running, requireFit bool, avoid func(raft.ServerID) bool) (raft.Server, error) {
	f := rt.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Server{}, fmt.Errorf("read configuration: %w", err)
	}
	peers := n.gossip.snapshot()
	var fit, other []raft.Server
	for _, s := range f.Configuration().Servers {
		name := string(s.ID)
		p, ok := peers[name]
		if name == n.opts.NodeName || s.Suffrage != raft.Voter || !ok || !p.alive ||
			p.meta.Role != RoleVoter || p.meta.Leaving || n.fsm.inMaintenance(name) || !n.reachable(s.ID) {
			continue
		}
		if p.meta.fit() {
			fit = append(fit, s)
		} else {
			other = append(other, s)
		}
	}
	order := func(s []raft.Server) {
		sort.Slice(s, func(i, j int) bool {
			if ai, aj := avoid(s[i].ID), avoid(s[j].ID); ai != aj {
				return aj
			}
			return s[i].ID < s[j].ID
		})
	}
	order(fit)
	order(other)
	switch {
	case len(fit) > 0:
		return fit[0], nil
	case !requireFit && len(other) > 0:
		return other[0], nil
	case requireFit && len(other) > 0:
		return raft.Server{}, fmt.Errorf("%w: none reports itself fit", ErrNoPeer)
	}
	return raft.Server{}, ErrNoPeer
}

// transferTo withdraws the gain first (eligible is false meanwhile) and
// waits until the consumers released what this node held (Options.Released),
// because raft's TimeoutNow lets the target campaign at once, without the
// election timeout rule 6 counts on. A transfer that worked keeps this
// window's gain withdrawn until the window ends (the loss of leadership can
// reach the monitor after the transfer returns); one that failed announces
// the gain again.
func (n *Node) transferTo(rt *running, s raft.Server, reason string) error {
	start := time.Now()
	term := rt.raft.CurrentTerm()
	n.setHandingOff(+1)
	defer n.setHandingOff(-1)
	if err := n.awaitRelease(); err != nil {
		return fmt.Errorf("transfer leadership to %s: release first: %w", s.ID, err)
	}
	if err := rt.raft.LeadershipTransferToServer(s.ID, s.Address).Error(); err != nil && !steppedDown(rt.raft, 2*n.opts.Timing.Election) {
		return fmt.Errorf("transfer leadership to %s: %w", s.ID, err)
	}
	n.noteTransferred(term)
	n.log.Info("leadership transferred", zap.String("to", string(s.ID)), zap.String("reason", reason), zap.Duration("took", time.Since(start)))
	return nil
}

func (n *Node) setHandingOff(delta int) {
	n.mu.Lock()
	n.handingOff += delta
	n.mu.Unlock()
	n.pokeEligible()
}

// noteTransferred records that a transfer out of term worked: the monitor
// keeps that term's gain withdrawn until its window ends.
func (n *Node) noteTransferred(term uint64) {
	n.mu.Lock()
	n.transferred = term
	n.mu.Unlock()
}

// transferredIn reports whether a transfer out of term has worked.
func (n *Node) transferredIn(term uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.transferred == term
}

// awaitRelease waits, within one operation timeout, for the monitor to
// emit the loss that the withdrawn eligibility causes (at once if nothing
// was announced) and then for Options.Released of that loss.
func (n *Node) awaitRelease() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.opTimeout())
	defer cancel()
	for {
		n.mu.Lock()
		last := n.lastEmitted
		n.mu.Unlock()
		if !last.Leader {
			if n.opts.Released == nil {
				return nil
			}
			return n.opts.Released(ctx, last.Seq)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("withdraw the gain of term %d: %w", last.Term, ctx.Err())
		case <-n.stop:
			return ErrNotStarted
		case <-time.After(time.Millisecond):
		}
	}
}

// steppedDown reports whether r leaves the leader state within d. raft
// gives up on a transfer after one election timeout, but under load the
// target often wins a little later: the transfer worked after all. A dead
// target never wins, so the wait stays short.
func steppedDown(r *raft.Raft, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for r.State() == raft.Leader {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func sortMembers(m []Member) {
	sort.Slice(m, func(i, j int) bool { return m[i].Name < m[j].Name })
}
