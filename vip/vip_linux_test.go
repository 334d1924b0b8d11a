package vip

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// TestHelperProcess is the Manager side of the namespace tests: they start
// this test binary inside a namespace with VIPD_VIP_HELPER set. It logs zap
// JSON to stdout; SIGTERM ends a hold. The process exits non-zero if the
// Manager leaked a goroutine (goleak in TestMain).
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("VIPD_VIP_HELPER")
	if mode == "" {
		t.Skip("helper for the namespace tests; they start it themselves")
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(os.Stdout), zapcore.DebugLevel))
	var m *Manager
	var holding atomic.Bool
	m, err := New(Options{
		VIPs:   []Config{{Address: netip.MustParseAddr(os.Getenv("VIPD_VIP_ADDR")), Interface: os.Getenv("VIPD_VIP_IF")}},
		Logger: log,
		OnLinkChange: func(up bool) {
			log.Info("helper link change", zap.Bool("up", up), zap.Bool("link_up", m.LinkUp()))
		},
		// Records whether the VIP was held when Hold reported holding.
		OnHolding: func() { holding.Store(m.Status()[0].Held) },
	})
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "removestale":
		err := m.RemoveStale()
		log.Info("helper removestale returned", zap.Error(err))
		if err != nil {
			t.Error(err)
		}
	case "hold":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Watch(ctx)
		}()
		err := m.Hold(ctx)
		stop() // Hold may have failed on its own: end Watch too
		wg.Wait()
		log.Info("helper hold returned", zap.Error(err), zap.Bool("held", m.Status()[0].Held), zap.Bool("holding_reported", holding.Load()))
		v := m.vips[0].cfg
		l := []string{v.Address.String(), v.Interface}
		log.Info("helper metrics",
			zap.Float64("held", metricValue(m.metrics.held.WithLabelValues(l...))),
			zap.Float64("claims", metricValue(m.metrics.claims.WithLabelValues(l...))),
			zap.Float64("releases", metricValue(m.metrics.releases.WithLabelValues(l...))),
			zap.Float64("restores", metricValue(m.metrics.restores.WithLabelValues(l...))),
			zap.Float64("announcements", metricValue(m.metrics.announcements.WithLabelValues(l...))),
			zap.Float64("conflicts", metricValue(m.metrics.conflicts.WithLabelValues(l...))),
			zap.Float64("claim_to_announce_samples", metricValue(m.metrics.claimToAnnounce)))
	default:
		t.Fatalf("unknown helper mode %q", mode)
	}
}

func TestHoldAddsVIPWithLifetimeAndLabel(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			c := startChild(t, tb.a, "hold", f.vip)
			ann := c.waitLog(t, "vip announced", 10*time.Second)
			t.Logf("claim to first announcement: %v", ann["claim_to_announce"])
			a := tb.a.addrOf(t, f.vip)
			if a == nil {
				t.Fatalf("%s not on %s while held", f.vip, tb.a.ifname)
			}
			ones, bits := a.Mask.Size()
			if ones != bits {
				t.Errorf("prefix /%d, want /%d", ones, bits)
			}
			if a.ValidLft <= 0 || a.ValidLft > 3 || a.PreferedLft <= 0 || a.PreferedLft > 3 {
				t.Errorf("valid_lft %d preferred_lft %d, want the 3s lifetime", a.ValidLft, a.PreferedLft)
			}
			if f.vip.Is4() && a.Label != "eth0:vip" {
				t.Errorf("label %q, want eth0:vip", a.Label)
			}
			if f.vip.Is6() && (a.Flags&unix.IFA_F_NODAD == 0 || a.Flags&unix.IFA_F_TENTATIVE != 0) {
				t.Errorf("flags %#x, want NODAD and not tentative", a.Flags)
			}
			// Renewal: after more than a lifetime the address is still there.
			time.Sleep(4 * time.Second)
			if a := tb.a.addrOf(t, f.vip); a == nil || a.ValidLft <= 0 {
				t.Fatalf("%s not renewed: %+v", f.vip, a)
			}
			must(t, c.cmd.Process.Signal(syscall.SIGTERM))
			// The burst, then at least one re-announcement on a refresh tick.
			if met := c.waitLog(t, "helper metrics", 10*time.Second); met["announcements"].(float64) < DefaultAnnounceCount+1 {
				t.Fatalf("announcements = %v after 4s, want the burst of %d and refreshes", met["announcements"], DefaultAnnounceCount)
			}
			c.waitExit(t)
		})
	}
}

func TestReleaseDeletesVIP(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			c := startChild(t, tb.a, "hold", f.vip)
			c.waitLog(t, "vip announced", 10*time.Second)
			signalled := time.Now()
			must(t, c.cmd.Process.Signal(syscall.SIGTERM))
			rel := c.waitLog(t, "vip released", 10*time.Second)
			t.Logf("SIGTERM to address deleted: %v", logTime(t, rel).Sub(signalled))
			end := c.waitLog(t, "helper hold returned", 10*time.Second)
			if end["error"] != nil || end["held"] != false || end["holding_reported"] != true {
				t.Fatalf("hold ended with %v, want no error, not held, and holding reported once claimed", end)
			}
			met := c.waitLog(t, "helper metrics", 10*time.Second)
			if met["held"] != 0.0 || met["claims"] != 1.0 || met["releases"] != 1.0 || met["announcements"].(float64) < 1 {
				t.Fatalf("metrics after one hold: %v", met)
			}
			if met["claim_to_announce_samples"] != 1.0 {
				t.Fatalf("claim_to_announce not collected: %v", met)
			}
			c.waitExit(t)
			if a := tb.a.addrOf(t, f.vip); a != nil {
				t.Fatalf("%s still on %s after release: %v", f.vip, tb.a.ifname, a)
			}
			if tb.a.addrOf(t, f.ownA) == nil {
				t.Fatal("release deleted the node's own address")
			}
		})
	}
}

func TestTakeoverMovesNeighbourToNewHolder(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			a := startChild(t, tb.a, "hold", f.vip)
			a.waitLog(t, "vip announced", 10*time.Second)
			eventually(t, 10*time.Second, "neighbour resolves the VIP to A", func() bool {
				tb.nbr.sendUDP(t, f.vip)
				time.Sleep(50 * time.Millisecond)
				return tb.nbr.neighMAC(t, f.vip).String() == tb.a.mac.String()
			})
			a.stop(t)

			// B has no address of its own in the VIP's family: announcing must
			// not depend on one (arp.Dial would refuse such an interface).
			own := tb.b.addrOf(t, f.ownB)
			must(t, tb.b.h.AddrDel(tb.b.link(t), own))

			// No more traffic from the neighbour: only B's announcements can
			// change its entry now.
			start := time.Now()
			b := startChild(t, tb.b, "hold", f.vip)
			ann := b.waitLog(t, "vip announced", 10*time.Second)
			announced := time.Since(start)
			took := eventually(t, 10*time.Second, "neighbour entry moves to B's MAC", func() bool {
				return tb.nbr.neighMAC(t, f.vip).String() == tb.b.mac.String()
			})
			t.Logf("B start to first announcement %v (B's own claim_to_announce %v); neighbour updated %v after that",
				announced, ann["claim_to_announce"], took)
			b.stop(t)
		})
	}
}

func TestKilledHolderLeavesNoVIPAfterLifetime(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			c := startChild(t, tb.a, "hold", f.vip)
			c.waitLog(t, "vip announced", 10*time.Second)
			c.kill(t)
			killed := time.Now()
			if tb.a.addrOf(t, f.vip) == nil {
				t.Fatal("VIP gone right after SIGKILL: nothing to prove about the lifetime")
			}
			eventually(t, 10*time.Second, "kernel drops the VIP of the killed holder", func() bool {
				return tb.a.addrOf(t, f.vip) == nil
			})
			t.Logf("VIP gone %v after SIGKILL (lifetime 3s)", time.Since(killed))
		})
	}
}

func TestFlushedVIPIsRestored(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			c := startChild(t, tb.a, "hold", f.vip)
			c.waitLog(t, "vip announced", 10*time.Second)
			a := tb.a.addrOf(t, f.vip)
			flushed := time.Now()
			must(t, tb.a.h.AddrDel(tb.a.link(t), a))
			r := c.waitLog(t, "vip restored", 10*time.Second)
			if r["reason"] != "address vanished" {
				t.Fatalf("restored for %v", r["reason"])
			}
			took := eventually(t, 10*time.Second, "VIP back on the interface", func() bool {
				return tb.a.addrOf(t, f.vip) != nil
			})
			t.Logf("VIP back %v after the flush (polled %v)", time.Since(flushed), took)
			must(t, c.cmd.Process.Signal(syscall.SIGTERM))
			if met := c.waitLog(t, "helper metrics", 10*time.Second); met["restores"] != 1.0 {
				t.Fatalf("restores = %v, want 1", met["restores"])
			}
			c.waitExit(t)
		})
	}
}

// TestRecreatedInterfaceEndsTheHold deletes the held VIP's interface and
// plugs in a new one under the same name: the Hold's address and announcer
// are bound to the old one, so it must end with an error that says so (the
// daemon then claims again), not keep renewing a link that is gone.
func TestRecreatedInterfaceEndsTheHold(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			c := startChild(t, tb.a, "hold", f.vip)
			c.waitLog(t, "vip announced", 10*time.Second)
			must(t, tb.a.h.LinkDel(tb.a.link(t)))
			tb.plug(t, tb.a, 0)
			end := c.waitLog(t, "helper hold returned", 10*time.Second)
			if msg, _ := end["error"].(string); !strings.Contains(msg, "interface eth0 was deleted or recreated") {
				t.Fatalf("Hold ended with %v, want the recreated interface named", end)
			}
			c.waitExit(t)
			if !strings.Contains(c.output(), `"msg":"vip released with its interface"`) {
				t.Errorf("the release of an address whose interface is gone was not logged as such:\n%s", c.output())
			}
			if a := tb.a.addrOf(t, f.vip); a != nil {
				t.Fatalf("the ended Hold left %s on the new interface: %v", f.vip, a)
			}
		})
	}
}

func TestLinkDownAndUpReachOnLinkChange(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			c := startChild(t, tb.a, "hold", f.vip)
			c.waitLog(t, "vip announced", 10*time.Second)
			must(t, tb.a.h.LinkSetDown(tb.a.link(t)))
			if e := c.waitLog(t, "helper link change", 10*time.Second); e["up"] != false || e["link_up"] != false {
				t.Fatalf("after link down: %v", e)
			}
			must(t, tb.a.h.LinkSetUp(tb.a.link(t)))
			if e := c.waitLog(t, "helper link change", 10*time.Second); e["up"] != true || e["link_up"] != true {
				t.Fatalf("after link up: %v", e)
			}
			// IPv6 addresses go with the link; the holder puts the VIP back.
			eventually(t, 10*time.Second, "VIP on the interface after link up", func() bool {
				return tb.a.addrOf(t, f.vip) != nil
			})
			c.stop(t)
		})
	}
}

func TestRemoveStaleDeletesLeftoverVIP(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			// A leftover as an operator or keepalived would leave it:
			// permanent, and not even a host prefix.
			tb.a.addAddr(t, netip.PrefixFrom(f.vip, f.bits).String())
			c := startChild(t, tb.a, "removestale", f.vip)
			if e := c.waitLog(t, "helper removestale returned", 10*time.Second); e["error"] != nil {
				t.Fatalf("RemoveStale: %v", e["error"])
			}
			c.waitExit(t)
			if a := tb.a.addrOf(t, f.vip); a != nil {
				t.Fatalf("leftover %v still there", a)
			}
			if tb.a.addrOf(t, f.ownA) == nil {
				t.Fatal("RemoveStale deleted the node's own address")
			}
		})
	}
}

func TestConflictingHolderIsDetected(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			a := startChild(t, tb.a, "hold", f.vip)
			a.waitLog(t, "vip announced", 10*time.Second)
			// A second holder breaks the rules on purpose: each must see the other.
			b := startChild(t, tb.b, "hold", f.vip)
			e := a.waitLog(t, "vip conflict: another host claims the VIP", 10*time.Second)
			if e["mac"] != tb.b.mac.String() {
				t.Fatalf("A saw a conflict from %v, want B's %s", e["mac"], tb.b.mac)
			}
			if e := b.waitLog(t, "vip conflict: another host claims the VIP", 10*time.Second); e["mac"] != tb.a.mac.String() {
				t.Fatalf("B saw a conflict from %v, want A's %s", e["mac"], tb.a.mac)
			}
			must(t, a.cmd.Process.Signal(syscall.SIGTERM))
			if met := a.waitLog(t, "helper metrics", 10*time.Second); met["conflicts"].(float64) < 1 {
				t.Fatalf("conflicts = %v, want at least 1", met["conflicts"])
			}
			a.waitExit(t)
			b.stop(t)
		})
	}
}

func TestMissingCapabilityIsNamed(t *testing.T) {
	for _, c := range []struct {
		capability, drop string
	}{{"CAP_NET_ADMIN", "-net_admin"}, {"CAP_NET_RAW", "-net_raw"}} {
		for _, f := range families {
			t.Run(c.capability+"/"+f.name, func(t *testing.T) {
				tb := newTestbed(t)
				ch := startChild(t, tb.a, "hold", f.vip, "setpriv", "--bounding-set", c.drop, "--")
				e := ch.waitLog(t, "helper hold returned", 10*time.Second)
				msg, _ := e["error"].(string)
				if !strings.Contains(msg, "operation not permitted (needs "+c.capability+")") {
					t.Fatalf("Hold error %q does not name %s", msg, c.capability)
				}
				if e["holding_reported"] != false {
					t.Fatal("a Hold that failed reported holding")
				}
				t.Logf("error: %s", msg)
				ch.waitExit(t)
				if tb.a.addrOf(t, f.vip) != nil {
					t.Fatal("failed claim left the VIP behind")
				}
			})
		}
	}
}

// metricValue reads a counter or gauge, or a histogram's sample count.
func metricValue(c prometheus.Metric) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		return -1
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	case d.Histogram != nil:
		return float64(d.Histogram.GetSampleCount())
	}
	return -1
}

// logTime is the time a helper's log entry was written.
func logTime(t *testing.T, entry map[string]any) time.Time {
	t.Helper()
	ts, ok := entry["ts"].(float64)
	if !ok {
		t.Fatalf("log entry without ts: %v", entry)
	}
	return time.Unix(0, int64(ts*float64(time.Second)))
}

func TestSecondHoldIsRefused(t *testing.T) {
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	m.holding.Store(true) // as while a first Hold runs
	if err := m.Hold(context.Background()); !errors.Is(err, ErrHoldActive) {
		t.Fatalf("second Hold = %v, want ErrHoldActive", err)
	}
}
