package bed

import (
	"context"
	"fmt"
	"time"
)

// Meter combines the VIP sampler and the client to measure one failover.
type Meter struct {
	Sampler *Sampler
	Client  *Client
	// Settle is how long the VIP must stay on one node before a failover
	// counts as finished, so that a second move (a flap) is measured too.
	Settle time.Duration
}

// Recovery is the outcome of one fault.
type Recovery struct {
	Holder  string    // the node holding the VIP once settled
	Claimed time.Time // first sample with the new holder
	Outage  Outage
	Moves   int // times a node gained the VIP after the fault (1 is a clean failover)
}

// Recover waits, after a fault at fault on old, for a single live holder
// other than old, for client traffic, then for the holder to stay put for
// Settle, and measures the client-seen outage since fault.
func (m *Meter) Recover(ctx context.Context, fault time.Time, old string) (Recovery, error) {
	var r Recovery
	first, err := m.Sampler.WaitSingle(ctx, 100*time.Millisecond, old)
	if err != nil {
		return r, fmt.Errorf("after the fault on %s: %w\n%s", old, err, m.Timeline(fault.Add(-time.Second)))
	}
	r.Claimed, _ = m.Sampler.FirstHeld(first, fault)
	if err := m.Client.WaitFlowing(ctx, time.Now(), 20); err != nil {
		return r, fmt.Errorf("after the fault on %s: %w", old, err)
	}
	if r.Holder, err = m.Sampler.WaitSingle(ctx, m.Settle, ""); err != nil {
		return r, fmt.Errorf("after the fault on %s the VIP never settled: %w\n%s", old, err, m.Timeline(fault.Add(-time.Second)))
	}
	if r.Outage, err = m.Client.Outage(fault, time.Now()); err != nil {
		return r, fmt.Errorf("outage after the fault on %s: %w", old, err)
	}
	for i, c := range m.Sampler.Changes(fault, time.Time{}) {
		if i > 0 && len(c.Holders) > 0 {
			r.Moves++
		}
	}
	return r, nil
}

// Timeline lists the live holder changes since from, one per line, with the
// time relative to from.
func (m *Meter) Timeline(from time.Time) string { return m.Sampler.Timeline(from, time.Time{}) }
