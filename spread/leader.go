package spread

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/lease"
	"github.com/vipd/vipd/placement"
)

// Reasons of a move the leader makes that placement does not.
const (
	reasonOperator = "operator" // vipctl move
	reasonRemoved  = "removed"  // no longer in the config
	reasonLeaving  = "leaving"  // its node hands its VIPs over before it stops
)

// moveRequest is an operator's planned hand-over of VIP to Node.
type moveRequest struct {
	VIP, Node string
	done      chan error
}

// Move hands vip over to node (vipctl move): the leader assigns it there;
// the old holder releases it when it learns, and the leader settles it on
// node at once after the release (or once the old lease surely ended).
// It returns once the assignment is committed. Only the granting leader.
func (r *Runner) Move(ctx context.Context, vip, node string) error {
	in := r.inbox.Load()
	if in == nil {
		return ErrNotGranting
	}
	req := &moveRequest{VIP: vip, Node: node, done: make(chan error, 1)}
	select {
	case in.ch <- inbound{move: req}:
	case <-ctx.Done():
		return fmt.Errorf("move %s to %s: %w", vip, node, ctx.Err())
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("move %s to %s: %w", vip, node, ctx.Err())
	}
}

// startLeading runs the granter loop of term; the function it returns ends
// the loop and waits for it.
func (r *Runner) startLeading(ctx context.Context, term uint64) func() {
	ctx, cancel := context.WithCancel(ctx)
	in := &leaderInbox{ch: make(chan inbound, inboxSize)}
	r.inbox.Store(in)
	var wg sync.WaitGroup
	wg.Go(func() { r.lead(ctx, term, in) })
	return func() {
		r.inbox.CompareAndSwap(in, nil)
		cancel()
		wg.Wait()
	}
}

// pendingRequest is a request waiting for the next round.
type pendingRequest struct {
	lease.Request
	id    lease.RequestID
	reply func(lease.Message)
}

// granter is the state of one term's granter loop; only lead touches it.
type granter struct {
	r     *Runner
	term  uint64
	start time.Duration
	prev  string // the node of the previous leader record
	g     *lease.Granter
	view  lease.View

	pending     []pendingRequest
	beat        time.Duration            // when the last round on the renewal cadence committed (0: none yet), roundDue
	seen        map[string]time.Duration // node -> arrival of its latest request this term
	healthy     map[string][]string      // node -> frontends with a healthy backend, from its latest request
	leaving     map[string]bool          // node -> handed its VIPs over; cleared by its next request
	lastSettled map[string]string        // VIP -> the node it was last settled on
	lastGrant   map[string]lease.RequestID
	own         map[string]bool // what this node holds as leader, as the holder loop was last told
	handing     []chan error    // hand-overs of this node's VIPs, answered once none is settled here
}

// lead records the term, then places, settles and answers in rounds until
// ctx ends (the holder loop stops it on a loss, after releasing).
func (r *Runner) lead(ctx context.Context, term uint64, in *leaderInbox) {
	l := &granter{
		r: r, term: term, seen: map[string]time.Duration{}, healthy: map[string][]string{},
		leaving: map[string]bool{}, lastSettled: map[string]string{}, lastGrant: map[string]lease.RequestID{},
		own: map[string]bool{},
	}
	var prev election.LeaderRecord
	for {
		var err error
		if prev, err = r.o.Cluster.RecordLeadership(); err == nil {
			break
		}
		r.log.Warn("leader record not committed; retrying", zap.Uint64("term", term), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.o.Timing.Renew):
		}
	}
	l.start, l.prev = r.o.Clock(), prev.Node
	l.view = viewOf(r.o.Cluster.Intent())
	l.g = lease.NewGranter(r.o.Timing, r.o.Clock, r.o.Node, l.view, prev.Node)
	l.noteSettled()
	r.log.Info("granting spread VIP leases", zap.Uint64("term", term), zap.String("previous_leader", prev.Node))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if !l.syncOwn(ctx) {
			return
		}
		wait := l.step(ctx)
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			l.fail(ErrNotGranting)
			return
		case m := <-in.ch:
			l.take(ctx, m)
			for more := true; more; {
				select {
				case m := <-in.ch:
					l.take(ctx, m)
				default:
					more = false
				}
			}
		case <-timer.C:
		}
	}
}

// fail answers the waiting hand-overs with err.
func (l *granter) fail(err error) {
	for _, h := range l.handing {
		h <- err
	}
	l.handing = nil
}

// take handles one inbound message.
func (l *granter) take(ctx context.Context, m inbound) {
	switch {
	case m.move != nil:
		m.move.done <- l.move(ctx, m.move)
	case m.handing != nil:
		l.leaving[l.r.o.Node] = true
		l.handing = append(l.handing, m.handing)
	case m.msg.Kind == lease.KindRequest:
		node := m.msg.Node
		l.seen[node], l.healthy[node] = m.arrived, m.msg.Healthy
		delete(l.leaving, node)
		l.pending = append(l.pending, pendingRequest{
			Request: lease.Request{Node: node, Arrived: m.arrived, Wants: m.msg.VIPs}, id: m.msg.ID, reply: m.reply,
		})
	case m.msg.Kind == lease.KindRelease:
		l.released(m.msg)
	}
}

// released applies a holder's release: a VIP it was the last settled
// assignee of, and that no later request of it was granted, is free now
// (lease.Granter.Released). Its pending requests stop asking for them.
func (l *granter) released(m lease.Message) {
	node := m.Node
	for _, v := range m.VIPs {
		if l.lastSettled[v] == node && l.lastGrant[v] <= m.ID {
			l.g.Released(v, node, lease.View{v: {Node: node, Settled: true}})
		}
	}
	for i := range l.pending {
		if p := &l.pending[i]; p.Node == node {
			p.Wants = slices.DeleteFunc(slices.Clone(p.Wants), func(v string) bool { return slices.Contains(m.VIPs, v) })
		}
	}
	if m.Leaving {
		l.leaving[node] = true
		l.pending = slices.DeleteFunc(l.pending, func(p pendingRequest) bool { return p.Node == node })
	}
}

// step does what is due: moves (placement), settles (when the granter
// allows), forgets removed VIPs, and a round for waiting requests. It
// returns how long until it must look again.
func (l *granter) step(ctx context.Context) time.Duration {
	wait := l.r.o.Timing.Renew
	vips := l.r.o.VIPs()
	if len(vips) == 0 {
		// Holders do not ask while there is nothing to lease, so no node
		// is heard: the grace of nodes not heard yet counts from the first
		// spread VIP, as if the term began then, or a reload that adds
		// spread VIPs would place them all on this node.
		l.start = l.r.o.Clock()
	}
	configured := map[string]bool{}
	for _, v := range vips {
		configured[v.Address] = true
	}
	// VIPs gone from the config: assigned to nobody, then forgotten.
	for _, v := range slices.Sorted(maps.Keys(l.view)) {
		if configured[v] {
			continue
		}
		if h := l.view[v]; h.Node != "" {
			l.assign(ctx, placement.Move{VIP: v, From: h.Node, To: "", Reason: reasonRemoved})
			continue
		}
		l.commit(ctx, entryForget, v, func() error { return l.r.o.Cluster.ForgetVIP(v) })
	}
	members := l.members()
	res := placement.Place(placement.Input{
		VIPs: vips, Members: members, Current: l.current(), Moving: l.moving(), Rebalance: l.r.o.Rebalance(),
	})
	for _, mv := range res.Moves {
		if l.leaving[l.r.o.Node] && mv.From == l.r.o.Node {
			mv.Reason = reasonLeaving
		}
		l.assign(ctx, mv)
	}
	for _, v := range slices.Sorted(maps.Keys(l.view)) {
		h := l.view[v]
		if h.Settled || h.Node == "" {
			continue
		}
		ok, w := l.g.MayGive(v, h.Node, l.view)
		if !ok {
			wait = min(wait, w)
			continue
		}
		l.commit(ctx, entrySettle, v, func() error { return l.r.o.Cluster.SettleVIP(v, h.Node) })
	}
	if len(l.pending) > 0 {
		due, onBeat := l.roundDue()
		if left := due - l.r.o.Clock(); left > 0 {
			wait = min(wait, left)
		} else if l.commit(ctx, entryRound, "", func() error { return l.r.o.Cluster.Round(l.term) }) && onBeat {
			l.beat = l.r.o.Clock()
		}
	}
	if len(l.handing) > 0 && !l.holdsAny() {
		l.fail(nil)
	}
	if left, ok := l.graceEnds(); ok {
		wait = min(wait, left+time.Millisecond)
	}
	return wait
}

// roundDue is when the waiting requests' round commits, and whether that
// round is on the renewal cadence.
//
// A holder asks again a renewal period R after its answer, so the holders
// one round answers come back together. Two holders answered by different
// rounds would stay that far apart for good, each costing a Raft entry a
// period. So rounds keep a beat: the holders the last round on it answered
// are due back R after it, and their round commits a slack of G/2 later
// (for their round trip). A request arriving within the gather window G
// before that beat waits for it; any other waits the whole of G, about G/2
// longer than those on the beat, which moves its holder that much closer
// to the beat each period until it joins. No request waits more than G
// (lease.Timing.Gather: a wait costs lease time, not safety). A beat that
// passed with no request on it (its holders came late or are gone) lets
// the next round set the beat again.
func (l *granter) roundDue() (time.Duration, bool) {
	oldest := l.pending[0].Arrived
	for _, p := range l.pending[1:] {
		oldest = min(oldest, p.Arrived)
	}
	g := l.r.o.Timing.Gather
	next := l.beat + l.r.o.Timing.Renew + g/2
	switch {
	case l.beat == 0 || oldest > next:
		return oldest + g, true
	case next-oldest <= g:
		return next, true
	}
	return oldest + g, false
}

// holdsAny reports whether a VIP is still settled on (or assigned to) this node.
func (l *granter) holdsAny() bool {
	for _, h := range l.view {
		if h.Node == l.r.o.Node {
			return true
		}
	}
	return false
}

// assign proposes mv, letting go of the VIP first if this node holds it
// (lease.Granter.MayGive: before a move away from this node).
func (l *granter) assign(ctx context.Context, mv placement.Move) {
	if l.own[mv.VIP] && !l.releaseOwn(ctx, mv.VIP) {
		return
	}
	if l.commit(ctx, entryAssign, mv.VIP, func() error { return l.r.o.Cluster.AssignVIP(mv.VIP, mv.To) }) {
		l.r.o.Metrics.moved(mv.VIP, mv.Reason)
		l.r.log.Info("spread VIP assigned", zap.String("vip", mv.VIP), zap.String("from", mv.From), zap.String("to", mv.To),
			zap.String("reason", mv.Reason))
	}
}

// move is an operator's hand-over: checked against placement's rules.
func (l *granter) move(ctx context.Context, m *moveRequest) error {
	var vip *placement.VIP
	for _, v := range l.r.o.VIPs() {
		if v.Address == m.VIP {
			vip = &v
		}
	}
	if vip == nil {
		return fmt.Errorf("move %s: %w", m.VIP, ErrNoSuchVIP)
	}
	cur := l.view[m.VIP].Node
	if cur == m.Node {
		return nil
	}
	eligible := false
	for _, mb := range l.members() {
		if mb.Name == m.Node {
			eligible = placement.Eligible(mb, *vip)
		}
	}
	if !eligible {
		return fmt.Errorf("move %s to %s: %w", m.VIP, m.Node, ErrIneligible)
	}
	l.assign(ctx, placement.Move{VIP: m.VIP, From: cur, To: m.Node, Reason: reasonOperator})
	if l.view[m.VIP].Node != m.Node {
		return fmt.Errorf("move %s to %s: the assignment was not committed", m.VIP, m.Node)
	}
	return nil
}

// Errors of Move.
var (
	ErrNoSuchVIP  = fmt.Errorf("no spread VIP of that address")
	ErrIneligible = fmt.Errorf("the node may not hold the VIP (not a fit voter, in maintenance, without a healthy backend for its frontends, or not renewing)")
)

// Kinds of the Raft entries the granter loop commits (vipd_spread_raft_entries_total).
const (
	entryAssign = "assign"
	entrySettle = "settle"
	entryForget = "forget"
	entryRound  = "round" // a barrier for waiting requests alone
)

// commit runs one Raft entry (kind, of vip) as a round: the requests
// pending before it are answered once it commits, with the assignment as
// it leaves it. A failed entry leaves them pending for the next round.
func (l *granter) commit(ctx context.Context, kind, vip string, entry func() error) bool {
	batch := l.pending
	l.pending = nil
	err := entry()
	if err != nil {
		l.pending = append(batch, l.pending...)
		if ctx.Err() == nil {
			l.r.log.Warn("spread VIP entry failed", zap.String("entry", kind), zap.String("vip", vip), zap.Uint64("term", l.term), zap.Error(err))
		}
		return false
	}
	l.r.o.Metrics.committed(kind)
	l.view = viewOf(l.r.o.Cluster.Intent())
	l.noteSettled()
	reqs := make([]lease.Request, len(batch))
	for i, p := range batch {
		reqs[i] = p.Request
	}
	grants := l.g.Round(reqs, l.view)
	for _, p := range batch {
		var granted, gone []string
		for _, v := range p.Wants {
			if slices.Contains(grants[p.Node], v) {
				granted = append(granted, v)
				l.lastGrant[v] = max(l.lastGrant[v], p.id)
			} else if h := l.view[v]; h.Node != "" && h.Node != p.Node {
				gone = append(gone, v)
			}
		}
		p.reply(lease.Message{Kind: lease.KindAnswer, ID: p.id, VIPs: granted, Gone: gone})
	}
	return true
}

// noteSettled keeps, per VIP, the node it was last settled on.
func (l *granter) noteSettled() {
	for v, h := range l.view {
		if h.Settled && l.lastSettled[v] != h.Node {
			l.lastSettled[v] = h.Node
			delete(l.lastGrant, v)
		}
	}
}

// syncOwn tells the holder loop which VIPs this node holds as leader:
// those settled on it (lease.Granter.LeaderHolds).
func (l *granter) syncOwn(ctx context.Context) bool {
	want := map[string]bool{}
	for v := range l.view {
		if l.g.LeaderHolds(v, l.view) {
			want[v] = true
		}
	}
	if maps.Equal(want, l.own) {
		return true
	}
	return l.sendOwn(ctx, want, nil)
}

// releaseOwn stops holding vip and returns once the address is gone.
func (l *granter) releaseOwn(ctx context.Context, vip string) bool {
	want := maps.Clone(l.own)
	delete(want, vip)
	return l.sendOwn(ctx, want, []string{vip})
}

func (l *granter) sendOwn(ctx context.Context, want map[string]bool, drop []string) bool {
	u := ownUpdate{holds: want, drop: drop, done: make(chan struct{})}
	select {
	case l.r.own <- u:
	case <-ctx.Done():
		return false
	}
	select {
	case <-u.done:
	case <-ctx.Done():
		return false
	}
	l.own = want
	return true
}

// members is placement's view of the cluster: the Raft voters, fit when
// gossip says alive (or its renewals say so) with the VIP link up and no
// failed hold, and, but for this node, renewing: a request arrived within
// one lease, or the term is younger than its grace (a node it has not
// heard yet is taken as fit with every frontend healthy, so that a new
// leader moves nothing it need not).
func (l *granter) members() []placement.Member {
	st := l.r.o.Cluster.Status()
	in := l.r.o.Cluster.Intent()
	now := l.r.o.Clock()
	var all []string
	for _, v := range l.r.o.VIPs() {
		all = append(all, v.Frontends...)
	}
	var out []placement.Member
	for _, m := range st.Members {
		if !m.Voter {
			continue
		}
		pm := placement.Member{
			Name: m.Name, Witness: m.Role == string(election.RoleWitness),
			Maintenance: slices.Contains(in.Maintenance, m.Name),
			Fit:         m.LinkUp && !m.VIPHoldFailed && !l.leaving[m.Name],
		}
		alive := m.Alive
		switch seen, heard := l.seen[m.Name]; {
		case m.Name == l.r.o.Node:
			pm.Healthy = l.r.o.Healthy()
		case heard && now-seen <= l.r.o.Timing.Duration:
			pm.Healthy = l.healthy[m.Name]
			// Its renewal reached this leader within a lease: newer
			// evidence than gossip calling it dead (a healed node's stale
			// rumour, until the node refutes it). A dead node stops
			// renewing, and is unfit a lease later.
			alive = true
		case !heard && now-l.start <= l.grace(m.Name):
			pm.Healthy = all
		default:
			pm.Fit = false
		}
		pm.Fit = pm.Fit && alive
		out = append(out, pm)
	}
	return out
}

// grace is how long into the term a node not heard yet is taken as
// renewing. A follower holds its VIPs under a lease and is renewed when it
// asks, so it has a lease. The node of the previous leader record dropped
// its VIPs when it lost leadership; if it is alive it asks as soon as it
// learns of this leader (holder.wake), which is before this leader's
// record commits: it gets half a renewal period, so that a leader that
// merely stepped down keeps its VIPs, at that cost to a dead one's (gossip
// calling it dead moves them at once).
func (l *granter) grace(node string) time.Duration {
	if node == l.prev {
		return l.r.o.Timing.Renew / 2
	}
	return l.r.o.Timing.Duration
}

// graceEnds is how long until the previous leader's grace ends while it
// has not asked (placement must then look again); ok false: not pending.
func (l *granter) graceEnds() (time.Duration, bool) {
	if _, heard := l.seen[l.prev]; heard || l.prev == "" || l.prev == l.r.o.Node || len(l.r.o.VIPs()) == 0 {
		return 0, false
	}
	left := l.start + l.grace(l.prev) - l.r.o.Clock()
	return left, left >= 0
}

func (l *granter) current() map[string]string {
	out := map[string]string{}
	for v, h := range l.view {
		out[v] = h.Node
	}
	return out
}

func (l *granter) moving() bool {
	for _, h := range l.view {
		if !h.Settled && h.Node != "" {
			return true
		}
	}
	return false
}

// viewOf is the replicated assignment as package lease reads it.
func viewOf(in election.Intent) lease.View {
	v := lease.View{}
	for _, a := range in.VIPs {
		v[a.VIP] = lease.Holding{Node: a.Node, Settled: a.Settled}
	}
	return v
}
