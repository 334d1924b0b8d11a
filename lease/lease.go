// Package lease is the pure logic of the spread VIP leases
// (docs/architecture.md, "Spread VIPs: leases"): the holder side (may this
// node hold a VIP now, when must it let go) and the granter side, run by the
// Raft leader (which VIPs a round grants, may a VIP be given to another node
// now). It does no I/O and reads time only from an injected monotonic
// clock, so every rule is tested with fake clocks.
package lease

import (
	"fmt"
	"math"
	"time"
)

// Clock reads a monotonic clock: the time since an arbitrary origin that
// never jumps (CLOCK_BOOTTIME on Linux, which also counts time suspended).
type Clock func() time.Duration

// Timing is the lease protocol's constants. Derive computes them from the
// Raft heartbeat; tests choose their own to make a rule's margin visible.
type Timing struct {
	// Duration (D) is what a grant gives, counted by the holder from the
	// moment it read its clock before sending the request.
	Duration time.Duration
	// Renew (R) is how long a holder waits after an answer before it asks again.
	Renew time.Duration
	// Margin (M) is how long before the lease's end the holder lets go, for
	// a late timer and the delete itself.
	Margin time.Duration
	// Gather (G) is how long the leader may hold a renewal request back so
	// that others share its round: holders answered by one round ask again
	// together, so one Raft entry a renewal period answers every holder
	// instead of one entry per holder. It delays answers, never a lease's
	// start (the holder's own r0), so it costs no safety, only lease time.
	Gather time.Duration
	// Drift (ρ) bounds how far any node's clock rate may be from real time.
	Drift float64
}

// Derived ratios (docs/architecture.md, "Timing constants").
const (
	// DefaultDrift is ρ: 20 times the most NTP slews a monotonic clock.
	DefaultDrift = 0.01
	// leaseHeartbeats is D in heartbeats: more than the slowest Raft
	// failover (3H) plus a renewal period and the round trips.
	leaseHeartbeats = 4
)

// Derive returns the constants for a Raft heartbeat: D = 4H, R = H/2,
// M = H/10, G = H/20, ρ = 1%.
func Derive(heartbeat time.Duration) Timing {
	return Timing{
		Duration: leaseHeartbeats * heartbeat,
		Renew:    heartbeat / 2,
		Margin:   heartbeat / 10,
		Gather:   heartbeat / 20,
		Drift:    DefaultDrift,
	}
}

// Validate checks the relations the safety argument and the survival of a
// leader's death rest on.
func (t Timing) Validate(heartbeat time.Duration) error {
	switch {
	case t.Drift < 0 || t.Drift >= 0.5:
		return fmt.Errorf("lease drift %v: must be in [0, 0.5)", t.Drift)
	case t.Margin < 0 || t.Margin >= t.Duration:
		return fmt.Errorf("lease margin %s: must be in [0, duration %s)", t.Margin, t.Duration)
	case t.Renew <= 0:
		return fmt.Errorf("lease renewal period %s: must be positive", t.Renew)
	case t.Gather < 0 || t.Gather >= t.Renew:
		return fmt.Errorf("lease gather window %s: must be in [0, renewal period %s)", t.Gather, t.Renew)
	}
	// The lease must outlast the slowest failover: a renewal period and
	// its gather window, 3 heartbeats, at the holder's fastest clock.
	if need := t.Renew + t.Gather + 3*heartbeat; t.holdReal() < need {
		return fmt.Errorf("lease %s less margin %s lasts %s at drift %v: shorter than a renewal period, its gather window and three heartbeats (%s), so a leader's death would drop the followers' VIPs",
			t.Duration, t.Margin, t.holdReal(), t.Drift, need)
	}
	return nil
}

// holdReal is the shortest real time a lease is held for: D − M on a clock
// running at 1+ρ.
func (t Timing) holdReal() time.Duration {
	return time.Duration(float64(t.Duration-t.Margin) / (1 + t.Drift))
}

// Wait is D′ = D·(1+ρ)/(1−ρ), rounded up: how long the granter waits, on
// its own clock, after the last arrival of a request a round could answer
// with a VIP before the VIP may be given to another node.
func (t Timing) Wait() time.Duration {
	return time.Duration(math.Ceil(float64(t.Duration) * (1 + t.Drift) / (1 - t.Drift)))
}
