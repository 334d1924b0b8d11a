package lease

import (
	"slices"
	"time"
)

// RequestID names one renewal request of a Holder.
type RequestID uint64

// Holder is one node's side of its leases: it records when each request was
// sent, turns answers into leases counted from that moment, and says which
// VIPs this node may hold now. It is not safe for concurrent use; its owner
// (the node's lease loop) calls it from one goroutine.
type Holder struct {
	t   Timing
	now Clock

	next    RequestID
	pending map[RequestID]request    // requests not yet answered, or answered and young enough to matter
	ends    map[string]time.Duration // VIP -> the clock reading at which the lease ends
}

type request struct {
	sent  time.Duration
	wants map[string]bool
}

// NewHolder returns a Holder with no lease.
func NewHolder(t Timing, now Clock) *Holder {
	return &Holder{t: t, now: now, pending: map[RequestID]request{}, ends: map[string]time.Duration{}}
}

// Request records a renewal request for wants (the VIPs assigned to this
// node that it has not released) and returns its id. It reads the clock
// first: call it before sending the request, never after, because the
// lease counts from this reading (docs/architecture.md, "Leases", step 1).
func (h *Holder) Request(wants []string) RequestID {
	sent := h.now()
	h.forgetOld(sent)
	h.next++
	r := request{sent: sent, wants: map[string]bool{}}
	for _, v := range wants {
		r.wants[v] = true
	}
	h.pending[h.next] = r
	return h.next
}

// forgetOld drops requests whose lease would already be over: an answer to
// them gives nothing.
func (h *Holder) forgetOld(now time.Duration) {
	for id, r := range h.pending {
		if now-r.sent >= h.t.Duration {
			delete(h.pending, id)
		}
	}
}

// Granted applies the answer to request id: each granted VIP the request
// asked for is held until D after the request was sent, unless a later
// answer already holds it longer. An answer to an unknown, too old or
// released request, and VIPs it did not ask for, change nothing.
func (h *Holder) Granted(id RequestID, vips []string) {
	r, ok := h.pending[id]
	if !ok {
		return
	}
	end := r.sent + h.t.Duration
	for _, v := range vips {
		if r.wants[v] && end > h.ends[v] {
			h.ends[v] = end
		}
	}
}

// Holds reports whether this node may hold vip now under a lease: until
// the margin M before the lease's end.
func (h *Holder) Holds(vip string) bool {
	end, ok := h.ends[vip]
	return ok && h.now() < end-h.t.Margin
}

// ReleaseAt is the clock reading at which vip must be let go, and whether
// this node holds a lease on it at all. A reading in the past means now.
func (h *Holder) ReleaseAt(vip string) (time.Duration, bool) {
	end, ok := h.ends[vip]
	return end - h.t.Margin, ok
}

// Held lists the VIPs this node may hold now, sorted.
func (h *Holder) Held() []string {
	var out []string
	for v := range h.ends {
		if h.Holds(v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// Next is the earliest clock reading at which a held lease must be let go:
// when the lease loop must look again, if no answer comes first.
func (h *Holder) Next() (time.Duration, bool) {
	var next time.Duration
	found := false
	for v := range h.ends {
		if at, _ := h.ReleaseAt(v); h.Holds(v) && (!found || at < next) {
			next, found = at, true
		}
	}
	return next, found
}

// Release gives vip up: its lease ends now, and every request already sent
// no longer asks for it, so a late answer to one cannot bring it back. The
// caller deletes the address before it tells the leader, and asks for vip
// again only once it is assigned to this node again.
func (h *Holder) Release(vip string) {
	delete(h.ends, vip)
	for _, r := range h.pending {
		delete(r.wants, vip)
	}
}

// LostLeadership drops every lease: a node that was leader holds nothing
// once it is not, not even a lease an earlier leader gave it, because the
// next leader takes the VIPs settled on the last recorded leader to be free
// (docs/architecture.md, "Across leaders").
func (h *Holder) LostLeadership() {
	for v := range h.ends {
		h.Release(v)
	}
	for id := range h.pending {
		delete(h.pending, id)
	}
}
