package ownership

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// runningGroup is a Group whose Run the test drives.
type runningGroup struct {
	g       *Group
	events  chan Event
	probe   chan struct{}
	changes chan struct{} // one value per OnFailedChange call
	done    chan struct{} // closed when Run has returned
}

func startGroup(t *testing.T, holders map[string]Holder) *runningGroup {
	t.Helper()
	r := &runningGroup{events: make(chan Event), probe: make(chan struct{}), changes: make(chan struct{}, 16), done: make(chan struct{})}
	r.g = NewGroup(Options{RetryAfter: 7 * time.Second, Logger: zaptest.NewLogger(t), Probe: r.probe,
		OnFailedChange: func() { r.changes <- struct{}{} }})
	for name, h := range holders {
		if err := r.g.Add(name, h); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { defer close(r.done); r.g.Run(ctx, r.events) }()
	t.Cleanup(func() {
		cancel()
		closed(t, r.done, "Run to return")
	})
	return r
}

// notYet fails the test if ch is closed now.
func notYet(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatal(what)
	default:
	}
}

// An Owner added while this node leads holds at once; one added while it
// follows holds from the next gain.
func TestAnOwnerAddedWhileLeadingHoldsAtOnce(t *testing.T) {
	first := newFakeHolder(false)
	r := startGroup(t, map[string]Holder{"vip1": first})
	send(t, r.events, Event{Leader: true, Term: 1})
	recv(t, first.started, "the first VIP's hold")

	added := newFakeHolder(false)
	if err := r.g.Add("vip2", added); err != nil {
		t.Fatal(err)
	}
	recv(t, added.started, "the added VIP's hold, with no new event")
	if first.calls.Load() != 1 {
		t.Errorf("the first VIP was held %d times; an add must not touch it", first.calls.Load())
	}

	send(t, r.events, Event{Leader: false, Term: 1})
	late := newFakeHolder(false)
	if err := r.g.Add("vip3", late); err != nil {
		t.Fatal(err)
	}
	send(t, r.events, Event{Leader: true, Term: 2})
	recv(t, late.started, "the hold of the VIP added while following, after the gain")
	if err := r.g.Add("vip3", newFakeHolder(false)); err == nil {
		t.Error("a second Owner under the same name was accepted")
	}
}

// Remove returns only once the removed Owner has released, and the other
// Owners' holds go on.
func TestRemoveReturnsAfterTheRelease(t *testing.T) {
	kept, removed := newFakeHolder(false), newFakeHolder(true)
	r := startGroup(t, map[string]Holder{"vip1": kept, "vip2": removed})
	send(t, r.events, Event{Leader: true, Term: 1})
	keptHold := recv(t, kept.started, "the kept VIP's hold")
	h := recv(t, removed.started, "the removed VIP's hold")

	returned := make(chan struct{})
	go func() {
		defer close(returned)
		if err := r.g.Remove("vip2"); err != nil {
			t.Error(err)
		}
	}()
	closed(t, h.ctx.Done(), "Remove to end the hold")
	notYet(t, returned, "Remove returned while the hold was still releasing")
	close(h.release)
	closed(t, returned, "Remove to return")
	notYet(t, keptHold.ctx.Done(), "removing one VIP ended another's hold")
	if err := r.g.Remove("vip2"); err == nil {
		t.Error("removing a VIP twice did not fail")
	}
}

// A loss reaches every Owner at once: each cancels its hold without waiting
// for another's release, and no Owner holds again before its own release.
func TestALossReleasesEveryOwnerFirst(t *testing.T) {
	a, b := newFakeHolder(true), newFakeHolder(true)
	r := startGroup(t, map[string]Holder{"vip1": a, "vip2": b})
	send(t, r.events, Event{Leader: true, Term: 1})
	ha, hb := recv(t, a.started, "vip1's hold"), recv(t, b.started, "vip2's hold")

	send(t, r.events, Event{Leader: false, Term: 1})
	// Neither release may complete before both holds were told: both are
	// gated, so a loss handed on one Owner after the other would stall here.
	closed(t, ha.ctx.Done(), "the loss to end vip1's hold")
	closed(t, hb.ctx.Done(), "the loss to end vip2's hold while vip1 is still releasing")
	send(t, r.events, Event{Leader: true, Term: 2})
	close(ha.release)
	close(recv(t, a.started, "vip1's hold of the new term").release)
	if a.overlap.Load() {
		t.Error("vip1 was held twice at once")
	}
	if b.calls.Load() != 1 {
		t.Error("vip2 was held again before its release completed")
	}
	close(hb.release)
	close(recv(t, b.started, "vip2's hold of the new term").release)
}

// The Group is failed while any Owner's hold is, and removing the failed
// Owner makes it fit again (and says so).
func TestFailedWhileAnyOwnerFailed(t *testing.T) {
	ok, failing := newFakeHolder(false), newFakeHolder(false)
	r := startGroup(t, map[string]Holder{"vip1": ok, "vip2": failing})
	send(t, r.events, Event{Leader: true, Term: 1})
	recv(t, ok.started, "vip1's hold").holding()
	recv(t, failing.started, "vip2's hold").fail <- errors.New("claim refused")
	recv(t, r.changes, "the failure to be reported")
	if !r.g.Failed() {
		t.Fatal("one Owner failed, the Group does not report it")
	}
	if err := r.g.Remove("vip2"); err != nil {
		t.Fatal(err)
	}
	recv(t, r.changes, "the removal of the failed Owner to be reported")
	if r.g.Failed() {
		t.Error("the failed Owner was removed, the Group still reports a failure")
	}
}

// The Group takes its probe only while every Owner's loop takes the one
// passed on: an Owner stuck releasing holds the next probe back.
func TestTheProbeReachesEveryOwner(t *testing.T) {
	free, stuck := newFakeHolder(false), newFakeHolder(true)
	r := startGroup(t, map[string]Holder{"vip1": free, "vip2": stuck})
	probe := func(what string) {
		t.Helper()
		select {
		case r.probe <- struct{}{}:
		case <-time.After(wait):
			t.Fatalf("the Group did not take %s", what)
		}
	}
	probe("the first probe")
	probe("a probe while every loop answers")
	send(t, r.events, Event{Leader: true, Term: 1})
	recv(t, free.started, "vip1's hold")
	h := recv(t, stuck.started, "vip2's hold")
	send(t, r.events, Event{Leader: false, Term: 1}) // vip2's Owner now waits for its release
	closed(t, h.ctx.Done(), "the loss to end vip2's hold")
	probe("the probe that finds vip2's Owner stuck")
	for range 50 {
		select {
		case r.probe <- struct{}{}:
			t.Fatal("the Group took a probe while an Owner's loop was stuck in its release")
		default:
		}
		time.Sleep(time.Millisecond)
	}
	close(h.release)
	probe("a probe once the release completed")
}

// Run stopping releases every Owner before it returns, and nothing can be
// added after.
func TestRunReleasesEveryOwnerBeforeItReturns(t *testing.T) {
	a, b := newFakeHolder(false), newFakeHolder(false)
	r := startGroup(t, map[string]Holder{"vip1": a, "vip2": b})
	send(t, r.events, Event{Leader: true, Term: 1})
	ha, hb := recv(t, a.started, "vip1's hold"), recv(t, b.started, "vip2's hold")
	close(r.events)
	closed(t, r.done, "Run to return")
	for _, h := range []*fakeHold{ha, hb} {
		select {
		case <-h.returned:
		default:
			t.Fatal("Run returned before every hold had released")
		}
	}
	if err := r.g.Add("vip3", newFakeHolder(false)); err == nil {
		t.Error("Add after Run returned was accepted")
	}
}

// A separate Owner ignores the Group's leadership events and holds exactly
// as Send says; a release's channel closes only once the hold released,
// and a Send to an Owner that stops is done when it has released.
func TestASeparateOwnerHoldsAsSendSays(t *testing.T) {
	leaderVIP := newFakeHolder(false)
	r := startGroup(t, map[string]Holder{"leader": leaderVIP})
	spread := newFakeHolder(true)
	if err := r.g.AddSeparate("spread", spread); err != nil {
		t.Fatal(err)
	}
	send(t, r.events, Event{Leader: true, Term: 1})
	recv(t, leaderVIP.started, "the leader VIP's hold")
	select {
	case <-spread.started:
		t.Fatal("a leadership gain reached the separate Owner")
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := r.g.Send("leader", true); err == nil {
		t.Fatal("Send to an Owner that follows leadership was accepted")
	}

	done, err := r.g.Send("spread", true)
	if err != nil {
		t.Fatal(err)
	}
	h := recv(t, spread.started, "the separate Owner's hold")
	closed(t, done, "the hold's Send to be acted on")

	done, err = r.g.Send("spread", false)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, h.ctx.Done(), "the release to cancel the hold")
	notYet(t, done, "a release was done before the hold released")
	close(h.release)
	closed(t, done, "the release's Send to be done after the hold released")

	send(t, r.events, Event{Leader: false, Term: 1})
	if _, err := r.g.Send("spread", true); err != nil {
		t.Fatal(err)
	}
	h = recv(t, spread.started, "the separate Owner's hold while the node follows")
	done, _ = r.g.Send("spread", false)
	removed := make(chan error, 1)
	go func() { removed <- r.g.Remove("spread") }()
	recv(t, h.ctx.Done(), "the hold cancelled")
	close(h.release)
	closed(t, done, "a Send to a removed Owner to be done")
	if err := recv(t, removed, "Remove"); err != nil {
		t.Fatal(err)
	}
}

// Released returns once every Owner fed by the Group's events has handled
// the loss it names: not on an older loss while a gain is still held, only
// after the slowest release, with an error naming what is still held when
// ctx ends first, and never waiting for an Owner fed by Send.
func TestReleasedWaitsForEveryOwnersRelease(t *testing.T) {
	slow, quick, separate := newFakeHolder(true), newFakeHolder(false), newFakeHolder(false)
	r := startGroup(t, map[string]Holder{"vip1": slow, "vip2": quick})
	if err := r.g.AddSeparate("spread", separate); err != nil {
		t.Fatal(err)
	}
	if _, err := r.g.Send("spread", true); err != nil {
		t.Fatal(err)
	}
	recv(t, separate.started, "the separate Owner's hold")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	send(t, r.events, Event{Leader: false, Term: 1, Seq: 1})
	if err := r.g.Released(ctx, 1); err != nil {
		t.Fatalf("nothing held but the separate Owner's: %v", err)
	}
	send(t, r.events, Event{Leader: true, Term: 2, Seq: 2})
	slowHold := recv(t, slow.started, "vip1's hold")
	recv(t, quick.started, "vip2's hold")
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := r.g.Released(short, 3); err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "vip") {
		t.Fatalf("while both hold, with loss 3 not sent: %v, want the deadline naming a VIP", err)
	}
	done := make(chan error, 1)
	go func() { done <- r.g.Released(ctx, 3) }()
	send(t, r.events, Event{Leader: false, Term: 2, Seq: 3})
	time.Sleep(50 * time.Millisecond) // vip2 has released; vip1's release is still running
	select {
	case err := <-done:
		t.Fatalf("Released returned (%v) while vip1 was still releasing", err)
	default:
	}
	close(slowHold.release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Released did not return after the last release")
	}
}
