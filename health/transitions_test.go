package health

import "testing"

// Status keeps each backend's last transitions, newest first, for the
// status page: a rise says ok, a fall the failure that reached Fall.
func TestStatusKeepsTheLastTransitionsNewestFirst(t *testing.T) {
	s := newTCPServer(t)
	addr := s.addr()
	h := startMonitor(t, PoolChecks{Pool: "web", Backends: []string{addr},
		Check: Check{Kind: KindTCP, Rise: 1, Fall: 1, Timeout: failAfter, StartHealthy: true}})
	if got := h.m.Status()[0].Backends[0].Transitions; got == nil || len(got) != 0 {
		t.Fatalf("transitions before any: %#v, want an empty list", got)
	}
	const flaps = 4
	for i := range flaps {
		h.m.ConnectFailed("web", addr) // fall 1: down, passive
		if r := h.step(); r != ReasonOK {
			t.Fatalf("flap %d: check against a listener: %s", i, r)
		}
	}
	got := h.m.Status()[0].Backends[0].Transitions
	if len(got) != recentChanges {
		t.Fatalf("%d transitions kept of %d, want the last %d: %+v", len(got), 2*flaps, recentChanges, got)
	}
	for i, c := range got {
		wantUp := i%2 == 0 // the newest is the last rise
		wantReason := ReasonOK
		if !wantUp {
			wantReason = ReasonPassive
		}
		if c.Healthy != wantUp || c.Reason != wantReason {
			t.Errorf("transition %d = %+v, want healthy %v reason %s", i, c, wantUp, wantReason)
		}
		if i > 0 && c.At.After(got[i-1].At) {
			t.Errorf("transition %d at %v is newer than %d at %v", i, c.At, i-1, got[i-1].At)
		}
	}
}
