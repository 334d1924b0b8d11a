package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// This file speaks systemd's notify protocol (sd_notify(3)) for the
// Type=notify unit in deploy/systemd: READY=1 once the daemon serves,
// STATUS= lines for `systemctl status`, WATCHDOG=1 while the daemon's loops
// answer, STOPPING=1 when shutdown begins, and RELOADING=1 … READY=1 around
// a reload.

const (
	// readyPoll is how often the notify loop looks for the cluster before
	// READY=1.
	readyPoll = 100 * time.Millisecond
	// statusEvery is how often it compares the STATUS= line with the one
	// last sent; a line is sent only when it changed.
	statusEvery = time.Second
)

// notifier sends sd_notify messages. Without NOTIFY_SOCKET (not started by
// systemd) it sends nothing. After stopping it sends nothing more.
type notifier struct {
	send     func(state string) error // nil: no NOTIFY_SOCKET
	watchdog time.Duration            // WATCHDOG_USEC; 0: systemd runs no watchdog
	log      *zap.Logger

	stopOnce sync.Once
	stopped  chan struct{} // closed by stopping

	mu         sync.Mutex // guards lastStatus
	lastStatus string
}

// newNotifier reads NOTIFY_SOCKET and WATCHDOG_USEC from the environment
// systemd set.
func newNotifier(log *zap.Logger) (*notifier, error) {
	n := &notifier{log: log.Named("systemd"), stopped: make(chan struct{})}
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return n, nil
	}
	n.send = func(state string) error {
		_, err := sd.SdNotify(false, state)
		return err
	}
	wd, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		return nil, fmt.Errorf("systemd watchdog: %w", err)
	}
	n.watchdog = wd
	return n, nil
}

func (n *notifier) enabled() bool { return n.send != nil }

// notify sends one datagram of newline-separated assignments.
func (n *notifier) notify(states ...string) {
	if !n.enabled() {
		return
	}
	select {
	case <-n.stopped:
		return
	default:
	}
	if err := n.send(strings.Join(states, "\n")); err != nil {
		n.log.Warn("sd_notify", zap.Strings("states", states), zap.Error(err))
	}
}

// ready says the daemon serves, with its first STATUS= line.
func (n *notifier) ready(status string) {
	n.mu.Lock()
	n.lastStatus = status
	n.mu.Unlock()
	n.notify(sd.SdNotifyReady, "STATUS="+status)
}

// status sends a STATUS= line when it differs from the last one sent.
func (n *notifier) status(line string) {
	n.mu.Lock()
	changed := line != n.lastStatus
	n.lastStatus = line
	n.mu.Unlock()
	if changed {
		n.notify("STATUS=" + line)
	}
}

// reloading wraps a reload: systemd shows the unit as reloading while apply
// runs, and `systemctl reload` returns once READY=1 follows. A failed
// reload is READY=1 too (the daemon keeps running on its old config), with
// a STATUS= line that says it failed.
func (n *notifier) reloading(apply func() error) error {
	n.notify(sd.SdNotifyReloading, fmt.Sprintf("MONOTONIC_USEC=%d", monotonicMicros()))
	err := apply()
	if err != nil {
		n.notify(sd.SdNotifyReady, "STATUS=reload failed, running the previous config: "+err.Error())
		return err
	}
	n.notify(sd.SdNotifyReady)
	return nil
}

// stopping sends STOPPING=1 and silences everything after it; safe to call
// more than once.
func (n *notifier) stopping() {
	n.stopOnce.Do(func() {
		n.notify(sd.SdNotifyStopping, "STATUS=stopping: releasing the VIP, handing over, draining")
		close(n.stopped)
	})
}

// monotonicMicros is CLOCK_MONOTONIC in microseconds, which systemd wants
// beside RELOADING=1 to match the reload to its request.
func monotonicMicros() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano() / 1e3
}

// loopProbe checks that a long-running loop still comes back to its
// select: the loop receives from the channel in a case of its own, so a
// send succeeds only while the loop is not stuck in one step.
type loopProbe chan struct{}

// loopProbes are the daemon's event loops whose liveness WATCHDOG=1 vouches
// for.
type loopProbes struct {
	fitness, leadership, intent loopProbe
}

func newLoopProbes() loopProbes {
	return loopProbes{fitness: make(loopProbe), leadership: make(loopProbe), intent: make(loopProbe)}
}

// stuck returns the loops that did not answer before deadline. A loop
// waiting in its select always answers, also after the deadline.
func (p loopProbes) stuck(ctx context.Context, deadline time.Time) []string {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var out []string
	for _, lp := range []struct {
		name  string
		probe loopProbe
	}{{"fitness", p.fitness}, {"leadership", p.leadership}, {"intent", p.intent}} {
		select {
		case lp.probe <- struct{}{}:
			continue
		default:
		}
		select {
		case lp.probe <- struct{}{}:
		case <-ctx.Done():
			out = append(out, lp.name)
		}
	}
	return out
}

// notifyLoop sends READY=1 once the listeners are bound (run started it
// after binding them) and the node has formed or joined its cluster, then
// keeps STATUS= current and, while every loop answers its probe, sends
// WATCHDOG=1. It ends when ctx ends or shutdown began.
//
// WATCHDOG=1 is not a bare ticker: it vouches for the loops that hold the
// VIP (leadership), report fitness and apply drains. If one of them hangs,
// the pings stop and systemd restarts vipd after WatchdogSec, which also
// lets the kernel drop the VIP (its lifetime runs out).
func (d *daemon) notifyLoop(ctx context.Context) {
	n := d.notify
	if !n.enabled() {
		return
	}
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	ready, stuckBefore := false, false
	for {
		switch {
		case !ready && d.node.Clustered():
			ready = true
			n.ready(d.statusLine())
			t.Reset(d.notifyEvery())
		case !ready:
			n.status("waiting to form or join the cluster")
		default:
			n.status(d.statusLine())
			if n.watchdog > 0 {
				stuck := d.probes.stuck(ctx, time.Now().Add(d.notifyEvery()))
				if len(stuck) == 0 {
					n.notify(sd.SdNotifyWatchdog)
				} else if !stuckBefore {
					d.log.Error("daemon loops do not answer: withholding the systemd watchdog ping", zap.Strings("loops", stuck))
				}
				stuckBefore = len(stuck) > 0
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-n.stopped:
			return
		case <-t.C:
		}
	}
}

// notifyEvery is the notify loop's period once ready: often enough for a
// readable STATUS= and for two watchdog pings per WatchdogSec.
func (d *daemon) notifyEvery() time.Duration {
	if wd := d.notify.watchdog; wd > 0 {
		return min(statusEvery, wd/2)
	}
	return statusEvery
}

// statusLine is what `systemctl status` shows: the node's role, the VIPs
// it holds and the healthy backends of each pool, e.g.
// "leader, term 3; holds 198.18.0.100; healthy backends: web 2/2".
func (d *daemon) statusLine() string {
	es := d.node.Status()
	var b strings.Builder
	switch {
	case es.State == "leader":
		fmt.Fprintf(&b, "leader, term %d", es.Term)
	case es.Leader != "":
		fmt.Fprintf(&b, "%s of %s, term %d", es.State, es.Leader, es.Term)
	default:
		fmt.Fprintf(&b, "%s, no leader, term %d", es.State, es.Term)
	}
	if vips := d.vips.mgr.Status(); len(vips) > 0 {
		var held []string
		for _, v := range vips {
			if v.Held {
				held = append(held, v.Address)
			}
		}
		if len(held) == 0 {
			held = []string{"no VIP"}
		}
		b.WriteString("; holds " + strings.Join(held, ", "))
	}
	if pools := d.mon.Status(); len(pools) > 0 {
		b.WriteString("; healthy backends:")
		for i, p := range pools {
			healthy := 0
			for _, be := range p.Backends {
				if be.Healthy {
					healthy++
				}
			}
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(&b, "%s %s %d/%d", sep, p.Name, healthy, len(p.Backends))
		}
	}
	return b.String()
}
