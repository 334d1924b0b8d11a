package lease

import (
	"testing"
	"time"
)

const ms = time.Millisecond

// world is real time, which no node reads; each node reads its own clock,
// running at a rate within the drift bound of it.
type world struct{ t time.Duration }

// clock is a node's monotonic clock: rate × real time, from its own origin.
func (w *world) clock(rate float64, origin time.Duration) Clock {
	return func() time.Duration { return origin + time.Duration(rate*float64(w.t)) }
}

// tight is a timing whose margin is small beside ρ·D, so that a rule that
// forgets the drift or the send time overlaps and a test sees it.
var tight = Timing{Duration: 400 * ms, Renew: 50 * ms, Margin: 1 * ms, Drift: 0.01}

// noOverlap steps real time by 1 ms until end and fails if holder holds
// vip while the granter may give it to another node: that node could be
// claiming it.
func noOverlap(t *testing.T, w *world, end time.Duration, h *Holder, g *Granter, vip, other string, view View) (freedAt time.Duration) {
	t.Helper()
	freedAt = -1
	for ; w.t <= end; w.t += ms {
		may, _ := g.MayGive(vip, other, view)
		if may && freedAt < 0 {
			freedAt = w.t
		}
		if may && h.Holds(vip) {
			t.Fatalf("at %s the holder still holds %s and the granter may give it to %s", w.t, vip, other)
		}
	}
	return freedAt
}

// A follower cut off after one renewal (its link up, its packets
// dropped): with its clock at the slow bound (its lease lasts longest) and
// the leader's at the fast bound (its wait is shortest), and the request
// arriving the instant it was sent, the VIP is given away only after the
// follower let it go, and is given away in the end.
func TestCutOffFollowerLetsGoBeforeTheVIPIsGivenAway(t *testing.T) {
	w := &world{t: 10 * ms}
	a := NewHolder(tight, w.clock(1-tight.Drift, 5*time.Second))
	leaderClock := w.clock(1+tight.Drift, 7*time.Second)
	view := View{"vip1": {Node: "a", Settled: true}}
	g := NewGranter(tight, leaderClock, "l", View{}, "") // a term with nothing granted before

	id := a.Request([]string{"vip1"})
	grants := g.Round([]Request{{Node: "a", Arrived: leaderClock(), Wants: []string{"vip1"}}}, view)
	w.t += 30 * ms // the answer's trip: it must not stretch the lease
	a.Granted(id, grants["a"])
	if !a.Holds("vip1") {
		t.Fatalf("granted %v, but the follower does not hold vip1", grants)
	}
	// From here the cut: no request arrives, no answer leaves.
	freed := noOverlap(t, w, 2*time.Second, a, g, "vip1", "b", view)
	if freed < 0 {
		t.Fatal("the VIP of a cut-off follower was never given away")
	}
	if wantMax := 10*ms + tight.Wait() + 2*ms; freed > wantMax {
		t.Errorf("given away at %s, want by %s (D′ after the arrival)", freed, wantMax)
	}
}

// An asymmetric cut: the leader does not hear the follower (its renewals
// never arrive, though it keeps asking every R), while the follower hears
// the leader. The leader waits out the last lease it granted, with the
// clocks at the drift bounds; and once the follower sees its VIP assigned
// elsewhere it lets go at once.
func TestAsymmetricCutFollowerNeverOverlaps(t *testing.T) {
	w := &world{}
	a := NewHolder(tight, w.clock(1-tight.Drift, 0))
	leaderClock := w.clock(1+tight.Drift, 0)
	view := View{"vip1": {Node: "a", Settled: true}}
	g := NewGranter(tight, leaderClock, "l", View{}, "")
	id := a.Request([]string{"vip1"})
	a.Granted(id, g.Round([]Request{{Node: "a", Arrived: leaderClock(), Wants: []string{"vip1"}}}, view)["a"])

	freed := time.Duration(-1)
	for ; w.t < time.Second; w.t += ms {
		if w.t%tight.Renew == 0 {
			a.Request([]string{"vip1"}) // lost on the way
		}
		may, _ := g.MayGive("vip1", "b", view)
		if may && a.Holds("vip1") {
			t.Fatalf("at %s a still holds vip1 and the granter may give it to b", w.t)
		}
		if may && freed < 0 {
			freed = w.t
		}
	}
	if freed < 0 {
		t.Fatal("vip1 never became free for b")
	}

	// Hearing the leader, a sees a new assignment and lets go at once.
	b := NewHolder(tight, w.clock(1, 0))
	id = b.Request([]string{"vip2"})
	b.Granted(id, []string{"vip2"})
	b.Release("vip2")
	if b.Holds("vip2") {
		t.Fatal("a holder still holds a VIP it released on seeing it assigned elsewhere")
	}
}

// The leader dies while followers hold VIPs. With the derived timing and
// the slowest failover the protocol budgets (3H, then the record and the
// renewal round), a follower whose clock runs fast (its lease shortest)
// never stops holding: the new leader renews its settled VIP at once. The
// new leader may give a follower's VIP to another node only D′ after its
// record, but the dead leader's own VIP at once.
func TestLeaderDeathKeepsFollowersVIPsAndWaitsForOldGrants(t *testing.T) {
	const h = 100 * ms
	tm := Derive(h)
	const delta = 5 * ms // one message or commit
	w := &world{}
	a := NewHolder(tm, w.clock(1+tm.Drift, 0))
	oldClock := w.clock(1-tm.Drift, 0)
	view := View{"va": {Node: "a", Settled: true}, "vo": {Node: "o", Settled: true}}
	old := NewGranter(tm, oldClock, "o", View{}, "")

	// a renews every R + 2δ under the old leader until it dies at 1 s.
	death := time.Second
	for w.t = 0; w.t < death; {
		id := a.Request([]string{"va"})
		sent := w.t
		w.t += delta
		if w.t >= death {
			break // the request is lost with the leader
		}
		arrived := oldClock()
		w.t += tm.Gather // held back for other holders to share the round
		grants := old.Round([]Request{{Node: "a", Arrived: arrived, Wants: []string{"va"}}}, view)
		w.t += delta
		a.Granted(id, grants["a"])
		if !a.Holds("va") {
			t.Fatalf("request at %s answered, but a does not hold va", sent)
		}
		w.t += tm.Renew
	}
	// The new leader's record commits 3H + 2δ after the death.
	confirm := death + 3*h + 2*delta
	for ; w.t < confirm; w.t += ms {
		if !a.Holds("va") {
			t.Fatalf("a dropped va at %s, before the new leader could renew it", w.t)
		}
	}
	newClock := w.clock(1+tm.Drift, time.Hour)
	g := NewGranter(tm, newClock, "b", view, "o")
	if may, _ := g.MayGive("vo", "c", view); !may {
		t.Error("the dead leader's own VIP is not free at the new leader's record (rule 6)")
	}
	if may, wait := g.MayGive("va", "c", view); may || wait < tm.Wait()-ms {
		t.Errorf("a's VIP may go to c %v (wait %s) right after the leader change; want a wait of D′ %s", may, wait, tm.Wait())
	}
	if may, _ := g.MayGive("va", "a", view); !may {
		t.Error("the new leader may not renew a's settled VIP at once")
	}
	// a learns of the new leader and asks; the round answers it.
	id := a.Request([]string{"va"})
	w.t += delta
	arrived := newClock()
	w.t += tm.Gather
	grants := g.Round([]Request{{Node: "a", Arrived: arrived, Wants: []string{"va"}}}, view)
	w.t += delta
	if !a.Holds("va") {
		t.Fatalf("a dropped va at %s, before the new leader's first round answered", w.t)
	}
	a.Granted(id, grants["a"])
	if !a.Holds("va") {
		t.Fatal("a does not hold va after the new leader renewed it")
	}
}

// A follower that an old leader renewed just before a new leader was
// elected, and that the new leader cannot reach, loses its VIP only after
// that old lease: the new leader's term-start wait covers grants it never saw.
func TestNewLeaderWaitsOutAnOldLeadersGrant(t *testing.T) {
	w := &world{}
	a := NewHolder(tight, w.clock(1-tight.Drift, 0))
	oldClock := w.clock(1, 0)
	view := View{"va": {Node: "a", Settled: true}}
	old := NewGranter(tight, oldClock, "o", View{}, "")
	id := a.Request([]string{"va"})
	a.Granted(id, old.Round([]Request{{Node: "a", Arrived: oldClock(), Wants: []string{"va"}}}, view)["a"])

	w.t += ms // the new leader's record commits right after the old round
	g := NewGranter(tight, w.clock(1+tight.Drift, 0), "b", view, "o")
	if freed := noOverlap(t, w, time.Second, a, g, "va", "c", view); freed < 0 {
		t.Fatal("va never became free")
	}
}

// A node that led (and had a lease from the leader before it) drops every
// VIP when it loses leadership, lease or not: its successor takes the VIPs
// settled on the last recorded leader to be free.
func TestLostLeadershipDropsLeasesFromEarlierLeaders(t *testing.T) {
	w := &world{}
	o := NewHolder(tight, w.clock(1, 0))
	view := View{"vo": {Node: "o", Settled: true}}
	z := NewGranter(tight, w.clock(1, 0), "z", View{}, "")
	id := o.Request([]string{"vo"})
	o.Granted(id, z.Round([]Request{{Node: "o", Arrived: 0, Wants: []string{"vo"}}}, view)["o"])
	late := o.Request([]string{"vo"}) // answered after the loss

	// o wins, records, then loses; b records next with o as previous leader.
	w.t += 10 * ms
	o.LostLeadership()
	b := NewGranter(tight, w.clock(1, 0), "b", view, "o")
	o.Granted(late, b.Round(nil, view)["o"])
	o.Granted(late, []string{"vo"})
	if freed := noOverlap(t, w, 100*ms, o, b, "vo", "c", view); freed != 10*ms {
		t.Fatalf("vo free at %s, want at once (10ms)", freed)
	}
}

// A planned hand-over: the holder releases, the leader settles the VIP on
// the new node at once, and a late answer to a request the holder sent
// before it released cannot bring the VIP back.
func TestReleaseFreesAtOnceAndVoidsEarlierRequests(t *testing.T) {
	w := &world{}
	a := NewHolder(tight, w.clock(1, 0))
	lc := w.clock(1, 0)
	view := View{"v": {Node: "a", Settled: true}}
	g := NewGranter(tight, lc, "l", View{}, "")
	id := a.Request([]string{"v"})
	a.Granted(id, g.Round([]Request{{Node: "a", Arrived: lc(), Wants: []string{"v"}}}, view)["a"])
	pending := a.Request([]string{"v"})
	late := g.Round([]Request{{Node: "a", Arrived: lc(), Wants: []string{"v"}}}, view)["a"]

	w.t += 5 * ms
	view = View{"v": {Node: "b"}} // vipctl move v b
	a.Release("v")
	g.Released("v", "a", View{"v": {Node: "a", Settled: true}})
	if may, _ := g.MayGive("v", "b", view); !may {
		t.Fatal("after the holder's release, v may not go to b")
	}
	a.Granted(pending, late)
	if a.Holds("v") {
		t.Fatal("a late answer to a request sent before the release brought v back")
	}
}

// A release by a node that is not the settled assignee frees nothing.
func TestReleaseByAnotherNodeFreesNothing(t *testing.T) {
	w := &world{}
	g := NewGranter(tight, w.clock(1, 0), "l", View{"v": {Node: "a", Settled: true}}, "")
	view := View{"v": {Node: "a", Settled: true}}
	g.Released("v", "c", view)
	if may, _ := g.MayGive("v", "b", view); may {
		t.Fatal("a release by c freed a's VIP")
	}
}

// A follower frozen past its lease (SIGSTOP) finds it over when it runs
// again: its monotonic clock moved on while it was stopped.
func TestFrozenHolderFindsItsLeaseOverOnResume(t *testing.T) {
	w := &world{}
	a := NewHolder(tight, w.clock(1, 0))
	id := a.Request([]string{"v"})
	a.Granted(id, []string{"v"})
	if next, ok := a.Next(); !ok || next != tight.Duration-tight.Margin {
		t.Fatalf("next release at %s %v, want %s", next, ok, tight.Duration-tight.Margin)
	}
	w.t = 3 * tight.Duration // frozen, then resumed
	if a.Holds("v") || len(a.Held()) != 0 {
		t.Fatal("a resumed holder still holds a lease that ran out while it was frozen")
	}
	if at, ok := a.ReleaseAt("v"); !ok || at > w.t {
		t.Fatalf("release at %s (%v): want a reading in the past", at, ok)
	}
	if _, ok := a.Next(); ok {
		t.Fatal("Next reports a deadline with nothing held")
	}
}

// An answer counts only for what its request asked for, only once per
// request id known, and not at all once D has passed since it was sent.
func TestAnswersCountOnlyForWhatTheRequestAsked(t *testing.T) {
	w := &world{}
	a := NewHolder(tight, w.clock(1, 0))
	id := a.Request([]string{"v1"})
	a.Granted(id, []string{"v1", "v2"})
	a.Granted(id+7, []string{"v3"})
	if got := a.Held(); len(got) != 1 || got[0] != "v1" {
		t.Fatalf("held %v, want [v1]", got)
	}
	old := a.Request([]string{"v2"})
	w.t += tight.Duration
	a.Request(nil) // forgets requests older than D
	a.Granted(old, []string{"v2"})
	if a.Holds("v2") {
		t.Fatal("an answer to a request older than D gave a lease")
	}
	// A later answer never shortens a lease.
	b := NewHolder(tight, w.clock(1, 0))
	first := b.Request([]string{"v"})
	w.t += 100 * ms
	second := b.Request([]string{"v"})
	b.Granted(second, []string{"v"})
	b.Granted(first, []string{"v"})
	if at, _ := b.ReleaseAt("v"); at != w.t+tight.Duration-tight.Margin {
		t.Fatalf("release at %s: the older answer shortened the lease", at)
	}
}

// A round grants only VIPs settled on the requester, and ignores a
// request stamped after the round began.
func TestRoundGrantsOnlySettledVIPsOfTheRequester(t *testing.T) {
	w := &world{t: time.Second}
	g := NewGranter(tight, w.clock(1, 0), "l", View{}, "")
	view := View{"v1": {Node: "a", Settled: true}, "v2": {Node: "a"}, "v3": {Node: "b", Settled: true}}
	got := g.Round([]Request{
		{Node: "a", Arrived: w.t, Wants: []string{"v1", "v2", "v3", "v1"}},
		{Node: "b", Arrived: w.t + ms, Wants: []string{"v3"}},
	}, view)
	if len(got) != 1 || len(got["a"]) != 1 || got["a"][0] != "v1" {
		t.Fatalf("round granted %v, want only v1 to a", got)
	}
	if !g.LeaderHolds("v1", View{"v1": {Node: "l", Settled: true}}) || g.LeaderHolds("v1", view) {
		t.Fatal("LeaderHolds does not follow the settled assignee")
	}
	if may, _ := g.MayGive("v1", "b", view); may {
		t.Fatal("v1, just granted to a, may go to b at once")
	}
	if may, _ := g.MayGive("v2", "a", view); !may {
		t.Fatal("v2, never granted in this term that began with nothing, may not go to a")
	}
}

// The derived constants keep the relations the protocol rests on, for both
// profiles' heartbeats, and Validate refuses a lease that would not
// outlast a failover.
func TestDerivedTimingOutlastsTheSlowestFailover(t *testing.T) {
	for _, h := range []time.Duration{70 * ms, 100 * ms, time.Second} {
		tm := Derive(h)
		if err := tm.Validate(h); err != nil {
			t.Errorf("heartbeat %s: %v", h, err)
		}
		if tm.Wait() <= tm.Duration {
			t.Errorf("heartbeat %s: wait %s not longer than the lease %s", h, tm.Wait(), tm.Duration)
		}
	}
	short := Derive(100 * ms)
	short.Duration = 300 * ms
	if err := short.Validate(100 * ms); err == nil {
		t.Error("a 300ms lease with a 100ms heartbeat validated: it cannot outlast a 3H failover")
	}
	for _, bad := range []Timing{
		{Duration: time.Second, Renew: ms, Margin: time.Second, Drift: 0.01},
		{Duration: time.Second, Renew: 0, Drift: 0.01},
		{Duration: time.Second, Renew: ms, Drift: 0.6},
		{Duration: time.Second, Renew: ms, Gather: ms, Drift: 0.01},
	} {
		if err := bad.Validate(ms); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}
