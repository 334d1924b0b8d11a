package election

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// slowRelease is a node's Options.Released that waits, as the ownership
// layer does, until the node's loss has reached its events, then takes a
// while longer (a slow netlink delete), and records when it was called and
// when it returned.
type slowRelease struct {
	c    **cluster
	name string
	fail error // returned instead, at once

	mu                sync.Mutex
	called, returned  time.Time
	lossBeforeRelease bool
}

func (r *slowRelease) released(ctx context.Context) error {
	r.mu.Lock()
	r.called = time.Now()
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		return fail
	}
	var rec *recorder
	if c := *r.c; c != nil {
		for _, tn := range c.nodes {
			if tn.opts.NodeName == r.name {
				rec = tn.rec
			}
		}
	}
	if rec == nil {
		return errors.New("released before the test's cluster was formed")
	}
	loss := false
	for ctx.Err() == nil && !loss {
		loss = !rec.isLeader()
		time.Sleep(time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	r.mu.Lock()
	r.returned, r.lossBeforeRelease = time.Now(), loss
	r.mu.Unlock()
	return nil
}

func releasesFor(c **cluster) (func(i int, o *Options), map[string]*slowRelease) {
	rs := map[string]*slowRelease{}
	return func(_ int, o *Options) {
		r := &slowRelease{c: c, name: o.NodeName}
		rs[o.NodeName] = r
		o.Released = r.released
	}, rs
}

// A leadership transfer takes the leader's VIP away before raft hands
// leadership on: the old leader announces its loss, waits for Released, and
// only then asks raft, whose TimeoutNow lets the target campaign at once
// (without the election timeout rule 6 counts on). So no node announces a
// gain before Released returned: a VIP still held then would be on two
// nodes (the e2e bed saw 340 ms of that on a planned transfer).
func TestTransferWithdrawsAndWaitsForTheReleaseFirst(t *testing.T) {
	var c *cluster
	mod, rs := releasesFor(&c)
	c, leader := formedClusterWith(t, mod)
	if err := leader.TransferLeadership(); err != nil {
		t.Fatal(err)
	}
	next := c.waitLeader(10*time.Second, leader)
	r := rs[leader.opts.NodeName]
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.called.IsZero():
		t.Fatal("the transfer did not wait for Released")
	case !r.lossBeforeRelease:
		t.Fatal("Released was called, but the old leader never announced its loss")
	case next.rec.gainedAt().Before(r.returned):
		t.Fatalf("%s announced its gain at %s, before the old leader's release returned at %s",
			next.opts.NodeName, next.rec.gainedAt().Format("15:04:05.000"), r.returned.Format("15:04:05.000"))
	}
}

// A transfer whose release fails does not happen, and the leader's gain
// stands (announced again if it was withdrawn): it keeps leading.
func TestTransferWhoseReleaseFailsKeepsTheLeader(t *testing.T) {
	var c *cluster
	mod, rs := releasesFor(&c)
	c, leader := formedClusterWith(t, mod)
	r := rs[leader.opts.NodeName]
	r.mu.Lock()
	r.fail = errors.New("a release that never ends")
	r.mu.Unlock()
	if err := leader.TransferLeadership(); err == nil {
		t.Fatal("a transfer whose release failed reported success")
	}
	time.Sleep(2 * time.Second) // a transfer would have happened by now
	if got := c.waitLeader(5 * time.Second); got != leader {
		t.Fatalf("leadership moved to %s after a transfer whose release failed", got.opts.NodeName)
	}
}
