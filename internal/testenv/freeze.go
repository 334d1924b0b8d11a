package testenv

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/vipd/vipd/internal/procstat"
)

// A Freeze is a stretch in which this process did not run: a goroutine that
// wakes every FreezeTick found Gap gone at once. Steal is what the kernel
// accounted over it and the stealSettle after, summed over the CPUs, as
// time a virtual CPU was ready but the hypervisor ran something else.
//
// Some virtual machines are stopped whole by their host now and then
// (seen here: ~100 ms, a few times a minute, while both vCPUs are busy).
// No priority inside the machine helps against that, and a Raft lease
// shorter than the freeze rightly expires; a test that judges scheduling
// inside the machine tells such stretches apart with ByHost.
type Freeze struct {
	End   time.Time
	Gap   time.Duration
	Steal time.Duration
}

// ByHost reports whether the host took the time: at least half the gap was
// stolen. A freeze of this machine's own making (its scheduler ran other
// work) steals nothing.
func (f Freeze) ByHost() bool { return f.Steal >= f.Gap/2 }

// ExplainsLeaseLoss reports whether f explains a Raft leadership change at
// at, with the given heartbeat timeout and leader lease: the host took the
// time (ByHost), long enough to expire the lease (a leader's last contact
// is up to a fifth of the heartbeat timeout old when a freeze starts: raft
// heartbeats every tenth to fifth of it), and at lies within the freeze or
// the ten heartbeat timeouts an election after it may take.
func (f Freeze) ExplainsLeaseLoss(at time.Time, heartbeat, lease time.Duration) bool {
	return f.ByHost() && f.Gap >= lease-heartbeat/5 &&
		!at.Before(f.End.Add(-f.Gap)) && !at.After(f.End.Add(10*heartbeat))
}

// AnyExplainsLeaseLoss reports whether one of freezes explains a Raft
// leadership change at at (ExplainsLeaseLoss).
func AnyExplainsLeaseLoss(freezes []Freeze, at time.Time, heartbeat, lease time.Duration) bool {
	return slices.ContainsFunc(freezes, func(f Freeze) bool { return f.ExplainsLeaseLoss(at, heartbeat, lease) })
}

func (f Freeze) String() string {
	return fmt.Sprintf("%v frozen until %s (%v stolen)", f.Gap.Round(time.Millisecond), f.End.Format("15:04:05.000"), f.Steal)
}

// FreezeTick is how often WatchFreezes wakes.
const FreezeTick = 2 * time.Millisecond

// FreezeWatch records this process's freezes longer than a minimum, from
// WatchFreezes until Stop.
type FreezeWatch struct {
	min  time.Duration
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	freezes []Freeze
	err     error
}

// WatchFreezes starts a watch for freezes longer than min.
func WatchFreezes(min time.Duration) *FreezeWatch {
	w := &FreezeWatch{min: min, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// stealSettle is how long after a freeze its steal keeps counting: the
// kernel adds steal to /proc/stat at each CPU's next tick, so a read just
// after the gap may not have all of it yet.
const stealSettle = 20 * time.Millisecond

func (w *FreezeWatch) run() {
	defer close(w.done)
	t := time.NewTicker(FreezeTick)
	defer t.Stop()
	last := time.Now()
	lastSteal, err := stolen()
	type settling struct {
		i    int           // index in freezes
		base time.Duration // the steal read before the gap
	}
	var open []settling
	for err == nil {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		var steal time.Duration
		if steal, err = stolen(); err != nil {
			break
		}
		w.mu.Lock()
		if gap := now.Sub(last); gap > w.min {
			w.freezes = append(w.freezes, Freeze{End: now, Gap: gap})
			open = append(open, settling{len(w.freezes) - 1, lastSteal})
		}
		open = slices.DeleteFunc(open, func(o settling) bool {
			f := &w.freezes[o.i]
			f.Steal = steal - o.base
			return now.Sub(f.End) >= stealSettle
		})
		w.mu.Unlock()
		last, lastSteal = now, steal
	}
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
	<-w.stop
}

// Stop ends the watch and returns the freezes it saw, or why it could not
// watch (no /proc/stat).
func (w *FreezeWatch) Stop() ([]Freeze, error) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.freezes, w.err
}

// stolen is the machine's steal time since boot.
func stolen() (time.Duration, error) {
	c, err := procstat.ReadCPU()
	if err != nil {
		return 0, fmt.Errorf("steal: %w", err)
	}
	return c.Steal, nil
}
