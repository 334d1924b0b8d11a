package spread

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/vipd/vipd/lease"
)

// ErrNotGranting is returned by calls that only the granting leader serves.
var ErrNotGranting = errors.New("this node is not the granting leader")

// Runner is one node's side of the spread VIPs. Run is its holder loop,
// the only goroutine that tells Holds what to hold; while this node is the
// confirmed leader it also runs the granter loop (leader.go), which it
// starts on a gain and stops, after releasing, on a loss.
type Runner struct {
	o   Options
	log *zap.Logger

	inbox   atomic.Pointer[leaderInbox] // the running granter loop's; nil: not granting
	answers chan lease.Message          // from the link's reader
	own     chan ownUpdate              // from the granter loop: what the leader holds
	poke    chan struct{}               // buffered 1: the assignment or the leader changed
	handing chan chan error             // HandOver on a follower

	mu     sync.Mutex      // guards status
	status map[string]bool // VIP -> held, as last told to Holds
}

// ownUpdate is the set of spread VIPs the leader holds itself; drop lists
// those it gives away, whose leases (from an earlier leader) end too. done
// is closed once the holds match.
type ownUpdate struct {
	holds map[string]bool
	drop  []string
	done  chan struct{}
}

// New checks opts. It starts nothing.
func New(o Options) (*Runner, error) {
	switch {
	case o.Node == "":
		return nil, errors.New("spread: no node name")
	case o.Cluster == nil || o.Holds == nil || o.VIPs == nil || o.Healthy == nil || o.Rebalance == nil:
		return nil, errors.New("spread: cluster, holds, VIPs, healthy and rebalance are required")
	case o.Timing.Renew <= 0 || o.Timing.Duration <= o.Timing.Margin:
		return nil, fmt.Errorf("spread: lease timing %+v", o.Timing)
	}
	if o.Clock == nil {
		o.Clock = monotonic()
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Runner{
		o: o, log: o.Logger,
		answers: make(chan lease.Message, linkQueue), own: make(chan ownUpdate),
		poke: make(chan struct{}, 1), handing: make(chan chan error), status: map[string]bool{},
	}, nil
}

// monotonic reads Go's monotonic clock (CLOCK_MONOTONIC on Linux; the
// wall clock never enters it).
func monotonic() lease.Clock {
	origin := time.Now()
	return func() time.Duration { return time.Since(origin) }
}

// Poke says the replicated assignment or the leader may have changed: the
// holder looks again at once instead of at its next renewal.
func (r *Runner) Poke() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// Held reports whether this node holds vip now, as it last told Holds.
func (r *Runner) Held(vip string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status[vip]
}

// HandOver gives this node's spread VIPs away before it stops
// (docs/architecture.md rule 9 for spread VIPs): the leader moves the VIPs
// settled on itself to other nodes; a follower releases what it holds,
// tells the leader and stops asking. It returns once that is done or ctx
// ends; this node holds no spread VIP afterwards either way.
func (r *Runner) HandOver(ctx context.Context) error {
	done := make(chan error, 1)
	ask := func() bool {
		select {
		case r.handing <- done:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if in := r.inbox.Load(); in != nil {
		ask = func() bool {
			select {
			case in.ch <- inbound{handing: done}:
				return true
			case <-ctx.Done():
				return false
			}
		}
	}
	if ask() {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
		}
	}
	return fmt.Errorf("hand spread VIPs over: %w", ctx.Err())
}

// leaderlessPolls is how many times per renewal period the holder loop
// looks for a leader while it knows none.
const leaderlessPolls = 5

// holder is the state of the holder loop; only Run touches it.
type holder struct {
	r        *Runner
	h        *lease.Holder
	held     map[string]bool // what Holds was told
	own      map[string]bool // what the leader holds itself, while leading
	leading  bool
	term     uint64
	stopLead func() // ends the granter loop and waits; nil when none runs

	link        *link
	closed      []*link // closed links whose goroutines may not have ended yet; stop waits for them
	lastReq     lease.RequestID
	nextAsk     time.Duration // clock reading of the next request
	unanswered  time.Duration // when the oldest request since the last answer went out; -1: none
	quietUntil  time.Duration // no request before this reading (the leader does not answer)
	handingOver bool          // stopped asking for good
}

// Run is the holder loop: it holds each spread VIP exactly while this node
// has a lease on it, or leads and has it settled on itself, until ctx
// ends; then it releases everything and stops the granter loop.
func (r *Runner) Run(ctx context.Context, leadership <-chan Leadership) {
	s := &holder{
		r: r, h: lease.NewHolder(r.o.Timing, r.o.Clock),
		held: map[string]bool{}, own: map[string]bool{}, unanswered: -1,
	}
	defer s.stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case l, ok := <-leadership:
			if !ok {
				return
			}
			s.leadership(ctx, l)
		case m := <-r.answers:
			s.answer(m)
		case u := <-r.own:
			s.setOwn(u)
		case done := <-r.handing:
			done <- s.handOver()
		case <-r.poke:
			s.nextAsk = 0
		case <-timer.C:
		}
		s.step()
		timer.Reset(s.wake())
	}
}

// stop releases everything (rule 2: first), then ends the granter loop
// and the link.
func (s *holder) stop() {
	s.h.LostLeadership()
	s.own = map[string]bool{}
	s.leading = false
	s.apply()
	if s.stopLead != nil {
		s.stopLead()
		s.stopLead = nil
	}
	s.dropLink()
	for _, l := range s.closed {
		<-l.done
	}
	s.closed = nil
}

// dropLink closes the link to the leader without waiting for it to end.
func (s *holder) dropLink() {
	if s.link == nil {
		return
	}
	s.link.close()
	s.closed = append(slices.DeleteFunc(s.closed, (*link).ended), s.link)
	s.link = nil
}

func (s *holder) leadership(ctx context.Context, l Leadership) {
	if !l.Leader {
		if !s.leading {
			return
		}
		// A lost leader holds nothing: not what it held as leader, not a
		// lease an earlier leader gave it (lease.Holder.LostLeadership).
		// The release comes first; the granter loop is stopped after.
		s.h.LostLeadership()
		s.own = map[string]bool{}
		s.leading = false
		s.apply()
		s.stopLead()
		s.stopLead = nil
		s.nextAsk = 0
		return
	}
	if s.leading && s.term == l.Term {
		return
	}
	if s.stopLead != nil { // a gain of a newer term without a loss between
		s.stopLead()
	}
	s.leading, s.term = true, l.Term
	s.stopLead = s.r.startLeading(ctx, l.Term)
}

// answer applies a leader's answer: the leases it grants, the VIPs it says
// went to other nodes.
func (s *holder) answer(m lease.Message) {
	if m.Kind == lease.KindNotLeader {
		// Asked before the new leader's granter loop started: ask again
		// soon, not a renewal period later (a node that led must ask
		// inside its grace, granter.grace).
		s.nextAsk = min(s.nextAsk, s.r.o.Clock()+s.r.o.Timing.Renew/leaderlessPolls)
		return
	}
	if m.Kind != lease.KindAnswer {
		return
	}
	s.h.Granted(m.ID, m.VIPs)
	s.unanswered = -1
	if m.ID == s.lastReq {
		// Ask again a renewal period after the answer, not after the
		// request: holders answered by one round then ask together, and
		// the leader's gather window lets them share the next one too.
		s.nextAsk = s.r.o.Clock() + s.r.o.Timing.Renew
	}
	for _, v := range m.Gone {
		if s.h.Holds(v) {
			s.release(v)
		}
	}
}

func (s *holder) setOwn(u ownUpdate) {
	for _, v := range u.drop {
		s.h.Release(v)
	}
	s.own = u.holds
	s.apply()
	close(u.done)
}

// handOver releases every held VIP, tells the leader it leaves, and stops
// asking for good.
func (s *holder) handOver() error {
	s.handingOver = true
	var gone []string
	for v := range s.held {
		if s.held[v] {
			gone = append(gone, v)
		}
	}
	slices.Sort(gone)
	for _, v := range gone {
		s.h.Release(v)
	}
	s.apply()
	if s.link == nil {
		return nil
	}
	sent := make(chan struct{})
	s.link.send(lease.Message{Kind: lease.KindRelease, ID: s.lastReq, Node: s.r.o.Node, VIPs: gone, Leaving: true}, sent)
	select {
	case <-sent:
	case <-time.After(writeTimeout):
	}
	s.r.log.Info("spread VIPs handed over", zap.Strings("vips", gone), zap.String("leader", s.link.leader))
	return nil
}

// release gives vip up at once: the lease ends, the address goes, and the
// leader is told so that it may settle vip on its new node without waiting.
func (s *holder) release(vip string) {
	s.h.Release(vip)
	s.apply()
	if s.link != nil {
		s.link.send(lease.Message{Kind: lease.KindRelease, ID: s.lastReq, Node: s.r.o.Node, VIPs: []string{vip}}, nil)
	}
}

// step follows the leader, lets go of VIPs assigned elsewhere, holds what
// the rules allow and asks when a request is due.
func (s *holder) step() {
	now := s.r.o.Clock()
	st := s.r.o.Cluster.Status()
	leader, addr := st.Leader, ""
	for _, m := range st.Members {
		if m.Name == leader {
			addr = m.RaftAddr
		}
	}
	if s.link != nil && (s.link.leader != leader || leader == s.r.o.Node) {
		s.dropLink()
	}
	if s.link == nil && leader != "" && leader != s.r.o.Node && addr != "" {
		s.link = openLink(s.r.o.Cluster, leader, addr, s.r.o.Timing.Renew, s.r.answers, s.r.log)
		s.nextAsk, s.unanswered, s.quietUntil = 0, -1, 0
	}
	for _, a := range s.r.o.Cluster.Intent().VIPs {
		if a.Node != s.r.o.Node && s.h.Holds(a.VIP) && !s.own[a.VIP] {
			s.release(a.VIP)
		}
	}
	s.apply()
	if s.link == nil || s.handingOver || s.leading || now < s.nextAsk || now < s.quietUntil {
		return
	}
	if s.unanswered >= 0 && now-s.unanswered > s.r.o.Timing.Duration {
		// The leader hears this node but its answers do not arrive (or it
		// cannot commit): stop asking for a while, so that the leader sees
		// no renewals and moves this node's VIPs (docs/architecture.md,
		// "The hard cases").
		s.quietUntil = now + s.r.o.Timing.Wait()
		s.unanswered = -1
		s.r.log.Warn("leader answers no lease request; not asking for a while", zap.String("leader", s.link.leader),
			zap.Duration("for", s.r.o.Timing.Wait()))
		return
	}
	wants := s.wants()
	if len(wants) == 0 {
		// No spread VIP in the config: nothing to lease, and every request
		// would cost the cluster a Raft entry (a round) for nothing.
		return
	}
	s.lastReq = s.h.Request(wants) // reads the clock before the request goes out
	s.link.send(lease.Message{Kind: lease.KindRequest, ID: s.lastReq, Node: s.r.o.Node, VIPs: wants, Healthy: s.r.o.Healthy()}, nil)
	if s.unanswered < 0 {
		s.unanswered = now
	}
	s.nextAsk = now + s.r.o.Timing.Renew
}

// wants is every spread VIP: the leader grants only those settled on this
// node, so asking for all lets a VIP settled here be granted by the round
// that settles it.
func (s *holder) wants() []string {
	var out []string
	for _, v := range s.r.o.VIPs() {
		out = append(out, v.Address)
	}
	slices.Sort(out)
	return out
}

// apply makes the holds match the rules: releases first, then claims.
func (s *holder) apply() {
	want := map[string]bool{}
	for _, v := range s.r.o.VIPs() {
		if s.own[v.Address] || s.h.Holds(v.Address) {
			want[v.Address] = true
		}
	}
	for v := range s.held {
		if s.held[v] && !want[v] {
			s.r.o.Holds.Release(v)
			s.setHeld(v, false)
		}
	}
	for v := range want {
		if !s.held[v] {
			s.r.o.Holds.Hold(v)
			s.setHeld(v, true)
		}
	}
}

func (s *holder) setHeld(v string, held bool) {
	s.held[v] = held
	if !held {
		delete(s.held, v)
	}
	s.r.mu.Lock()
	s.r.status[v] = held
	s.r.mu.Unlock()
	s.r.o.Metrics.holding(v, held, time.Now())
	s.r.log.Info("spread VIP", zap.String("vip", v), zap.Bool("held", held))
}

// wake is how long until the loop must look again: the next request or
// the earliest lease end.
func (s *holder) wake() time.Duration {
	now := s.r.o.Clock()
	next := now + s.r.o.Timing.Renew
	if s.nextAsk > now && s.nextAsk < next {
		next = s.nextAsk
	}
	if s.quietUntil > now && s.quietUntil < next {
		next = s.quietUntil
	}
	if at, ok := s.h.Next(); ok && at < next {
		next = at
	}
	if s.link == nil && !s.leading && !s.handingOver {
		// No leader to ask (just lost leadership, or an election runs):
		// look again soon, so that a node that led asks the new leader
		// inside the grace it gets (granter.grace).
		next = min(next, now+s.r.o.Timing.Renew/leaderlessPolls)
	}
	return max(next-now, 0)
}
