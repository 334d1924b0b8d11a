package vip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestHoldAddsVIPWithLifetimeAndLabel(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			c := startChild(t, tb.a, "hold", f.vip)
			c.waitAnnounced(t)
			ann := c.waitMetric(t, "vipd_vip_claim_to_announce_seconds_count", 1, 10*time.Second)
			t.Logf("claim to first announcement: %.6fs", ann.Metrics["vipd_vip_claim_to_announce_seconds_sum"])
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
			// Renewal: each refresh tick renews, then announces once. After
			// the burst and more ticks than a lifetime holds, the address is
			// still there.
			ticks := float64(testLifetime/testRefresh + 1)
			c.waitMetric(t, "vipd_vip_announcements_total", testAnnounceCount+ticks, 10*time.Second)
			if a := tb.a.addrOf(t, f.vip); a == nil || a.ValidLft <= 0 {
				t.Fatalf("%s not renewed: %+v", f.vip, a)
			}
			c.stop(t)
		})
	}
}

func TestReleaseDeletesVIP(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			c := startChild(t, tb.a, "hold", f.vip)
			if e := c.waitFor(t, "holding", 10*time.Second, isEvent(eventHolding, eventReturned)); e.Event != eventHolding || !e.Held {
				t.Fatalf("want holding reported with the VIP held, got %+v", e)
			}
			c.waitAnnounced(t)
			signalled := time.Now()
			must(t, c.cmd.Process.Signal(syscall.SIGTERM))
			end := c.waitReturned(t)
			t.Logf("SIGTERM to Hold returned (address deleted first): %v", end.Time.Sub(signalled))
			if end.Error != "" || end.Held {
				t.Fatalf("hold ended with %+v, want no error and not held", end)
			}
			met := end.Metrics
			if met["vipd_vip_held"] != 0 || met["vipd_vip_claims_total"] != 1 || met["vipd_vip_releases_total"] != 1 ||
				met["vipd_vip_announcements_total"] < 1 || met["vipd_vip_claim_to_announce_seconds_count"] != 1 {
				t.Fatalf("metrics after one hold: %v", met)
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
			a.waitAnnounced(t)
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
			ann := b.waitAnnounced(t)
			announced := time.Since(start)
			took := eventually(t, 10*time.Second, "neighbour entry moves to B's MAC", func() bool {
				return tb.nbr.neighMAC(t, f.vip).String() == tb.b.mac.String()
			})
			t.Logf("B start to first announcement seen %v (B's own claim_to_announce %.6fs); neighbour updated %v after that",
				announced, ann.Metrics["vipd_vip_claim_to_announce_seconds_sum"], took)
			b.stop(t)
		})
	}
}

func TestKilledHolderLeavesNoVIPAfterLifetime(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			c := startChild(t, tb.a, "hold", f.vip)
			c.waitAnnounced(t)
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
			c.waitAnnounced(t)
			a := tb.a.addrOf(t, f.vip)
			flushed := time.Now()
			must(t, tb.a.h.AddrDel(tb.a.link(t), a))
			c.waitMetric(t, "vipd_vip_restores_total", 1, 10*time.Second)
			took := eventually(t, 10*time.Second, "VIP back on the interface", func() bool {
				return tb.a.addrOf(t, f.vip) != nil
			})
			t.Logf("VIP back %v after the flush (polled %v)", time.Since(flushed), took)
			must(t, c.cmd.Process.Signal(syscall.SIGTERM))
			if end := c.waitReturned(t); end.Metrics["vipd_vip_restores_total"] != 1 {
				t.Fatalf("restores = %v, want 1", end.Metrics["vipd_vip_restores_total"])
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
			c.waitAnnounced(t)
			must(t, tb.a.h.LinkDel(tb.a.link(t)))
			tb.plug(t, tb.a, 0)
			end := c.waitReturned(t)
			if !strings.Contains(end.Error, "interface eth0 was deleted or recreated") {
				t.Fatalf("Hold ended with %+v, want the recreated interface named", end)
			}
			if end.Held || end.Metrics["vipd_vip_releases_total"] != 1 {
				t.Fatalf("after the hold ended: %+v, want the VIP released", end)
			}
			c.waitExit(t)
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
			c.waitAnnounced(t)
			must(t, tb.a.h.LinkSetDown(tb.a.link(t)))
			if e := c.waitFor(t, "link change", 10*time.Second, isEvent(eventLink)); e.Up || e.LinkUp {
				t.Fatalf("after link down: %+v", e)
			}
			must(t, tb.a.h.LinkSetUp(tb.a.link(t)))
			if e := c.waitFor(t, "link change", 10*time.Second, isEvent(eventLink)); !e.Up || !e.LinkUp {
				t.Fatalf("after link up: %+v", e)
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
			if e := c.waitReturned(t); e.Error != "" {
				t.Fatalf("RemoveStale: %v", e.Error)
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
			a.waitAnnounced(t)
			// A second holder breaks the rules on purpose: each must see the
			// other. Only packets from another MAC count, and the only other
			// host claiming the VIP is the other holder.
			b := startChild(t, tb.b, "hold", f.vip)
			a.waitMetric(t, "vipd_vip_conflicts_total", 1, 10*time.Second)
			b.waitMetric(t, "vipd_vip_conflicts_total", 1, 10*time.Second)
			a.stop(t)
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
				e := ch.waitFor(t, "Hold returned", 10*time.Second, isEvent(eventHolding, eventReturned))
				if e.Event == eventHolding {
					t.Fatal("a Hold that failed reported holding")
				}
				if !strings.Contains(e.Error, "operation not permitted (needs "+c.capability+")") {
					t.Fatalf("Hold error %q does not name %s", e.Error, c.capability)
				}
				t.Logf("error: %s", e.Error)
				ch.waitExit(t)
				if tb.a.addrOf(t, f.vip) != nil {
					t.Fatal("failed claim left the VIP behind")
				}
			})
		}
	}
}

// TestVIPAddedAndRemovedBesideAHeldOne holds one VIP, then adds a second
// and holds it, then ends its hold and removes it: the second is claimed
// and released on its own, its series leave the metrics, and the first
// VIP's address is never deleted meanwhile (the test follows the kernel's
// address notifications), claimed once, never restored.
func TestVIPAddedAndRemovedBesideAHeldOne(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			tb := newTestbed(t)
			second := f.vip.Next()
			c := startChild(t, tb.a, "live", f.vip)
			c.waitFor(t, "the first VIP holding", 10*time.Second, isEvent(eventHolding))
			c.waitAnnounced(t)
			deletions := tb.a.countDeletions(t, f.vip)

			c.send(t, "add "+second.String())
			e := c.waitFor(t, "the second VIP holding", 10*time.Second, func(e helperEvent) bool {
				return e.Address == second.String()
			})
			if e.Event != eventHolding {
				t.Fatalf("second VIP: %+v, want it holding", e)
			}
			if tb.a.addrOf(t, second) == nil {
				t.Fatalf("%s reported holding but not on %s", second, tb.a.ifname)
			}
			if !slices.Contains(e.Exported, second.String()) {
				t.Errorf("series of the added VIP not exported: %v", e.Exported)
			}

			c.send(t, "remove "+second.String())
			e = c.waitFor(t, "the second VIP removed", 10*time.Second, isEvent(eventRemoved))
			if a := tb.a.addrOf(t, second); a != nil {
				t.Fatalf("%s still on %s after its hold ended: %v", second, tb.a.ifname, a)
			}
			if fmt.Sprint(e.Exported) != fmt.Sprint([]string{f.vip.String()}) {
				t.Errorf("addresses with series after the remove = %v, want only %s", e.Exported, f.vip)
			}
			if tb.a.addrOf(t, f.vip) == nil || !e.Held {
				t.Fatalf("the first VIP is not held after the second came and went: %+v", e)
			}
			if n := deletions(); n != 0 {
				t.Errorf("the first VIP's address was deleted %d times while the second came and went", n)
			}
			if m := e.Metrics; m["vipd_vip_claims_total"] != 1 || m["vipd_vip_releases_total"] != 0 || m["vipd_vip_restores_total"] != 0 {
				t.Errorf("first VIP's series %v, want one claim, no release, no restore", m)
			}
			c.stop(t)
		})
	}
}

// isEvent matches events of the given kinds.
func isEvent(kinds ...string) func(helperEvent) bool {
	return func(e helperEvent) bool { return slices.Contains(kinds, e.Event) }
}

func TestSecondHoldOfAVIPIsRefused(t *testing.T) {
	m := newManager(t, Options{})
	v := add(t, m, testVIP(vip4, "eth0"))
	other := add(t, m, testVIP(netip.MustParseAddr("198.18.0.101"), "eth0"))
	must(t, v.beginHold()) // as while a first Hold runs
	if err := v.Hold(context.Background(), nil); !errors.Is(err, ErrHoldActive) {
		t.Fatalf("second Hold = %v, want ErrHoldActive", err)
	}
	if err := m.Remove(v); !errors.Is(err, ErrHoldActive) {
		t.Fatalf("Remove while a Hold runs = %v, want ErrHoldActive", err)
	}
	if len(m.Status()) != 2 {
		t.Fatal("a refused Remove changed the set")
	}
	// Another VIP's hold is not this one's: only its own state counts.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := other.Hold(ctx, nil); err != nil {
		t.Fatalf("Hold of another VIP = %v, want nil (its context ended before it began)", err)
	}
	v.endHold()
	must(t, m.Remove(v))
	if err := v.Hold(context.Background(), nil); !errors.Is(err, ErrRemoved) {
		t.Fatalf("Hold of a removed VIP = %v, want ErrRemoved", err)
	}
}

// newIfbNode is a namespace whose only interface (besides lo) is an ifb
// device, ifb0, up. Unlike veth, ifb takes an MTU below IPv4's minimum of 68,
// and with such an MTU the kernel refuses IPv4 and IPv6 addresses on it
// while the interface itself stays: a real renewal failure.
func newIfbNode(t *testing.T) *node {
	t.Helper()
	needRoot(t)
	n := newNode(t, "a", "ifb0")
	must(t, n.h.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "ifb0"}}))
	must(t, n.h.LinkSetMulticastOn(n.link(t))) // NDP announces to ff02::1
	must(t, n.h.LinkSetUp(n.link(t)))
	return n
}

// refuseAddresses sets the MTU that makes the kernel refuse addresses on
// n's ifb0 (and drop those it had), or gives it back its usual MTU.
func (n *node) refuseAddresses(t *testing.T, refuse bool) {
	t.Helper()
	mtu := 1500
	if refuse {
		mtu = 60 // below IPv4's 68 and IPv6's 1280
	}
	must(t, n.h.LinkSetMTU(n.link(t), mtu))
}

// renewalErrno is what the kernel answers a renewal on ifb0 with the low MTU:
// no IPv4 configuration on the device (ENOBUFS), or IPv6 refused (EINVAL).
func renewalErrno(vip netip.Addr) syscall.Errno {
	if vip.Is4() {
		return syscall.ENOBUFS
	}
	return syscall.EINVAL
}

// TestRenewalsFailingPastHalfTheLifetimeEndTheHold makes the kernel refuse
// every renewal of a held VIP: the hold must end with an error naming the
// VIP, the interface and the kernel's answer, so that the daemon reports
// itself unfit and leadership moves, rather than lead without the VIP.
func TestRenewalsFailingPastHalfTheLifetimeEndTheHold(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			n := newIfbNode(t)
			c := startChild(t, n, "hold", f.vip)
			c.waitFor(t, "holding", 10*time.Second, isEvent(eventHolding))
			refused := time.Now()
			n.refuseAddresses(t, true)
			end := c.waitFor(t, "Hold returned", 10*time.Second, isEvent(eventReturned))
			t.Logf("renewals refused to Hold returned: %v (lifetime %v)", end.Time.Sub(refused), testLifetime)
			for _, want := range []string{f.vip.String(), "ifb0", renewalErrno(f.vip).Error()} {
				if !strings.Contains(end.Error, want) {
					t.Errorf("Hold error %q does not name %q", end.Error, want)
				}
			}
			if end.Metrics["vipd_vip_renewal_failures_total"] < 2 || end.Metrics["vipd_vip_releases_total"] != 1 || end.Held {
				t.Errorf("after the hold ended: %+v, want two or more failed renewals counted and the VIP released", end)
			}
			c.waitExit(t)
		})
	}
}

// TestOneFailedRenewalDoesNotEndTheHold makes the kernel refuse renewals
// only until the first refusal is counted: the hold must live on, renew the
// address again and keep it for longer than the budget a lasting failure
// gets.
func TestOneFailedRenewalDoesNotEndTheHold(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			n := newIfbNode(t)
			c := startChild(t, n, "hold", f.vip)
			// After the claim burst, every successful renewal announces once.
			c.waitMetric(t, "vipd_vip_announcements_total", testAnnounceCount, 10*time.Second)
			n.refuseAddresses(t, true)
			failed := c.waitMetric(t, "vipd_vip_renewal_failures_total", 1, 10*time.Second)
			n.refuseAddresses(t, false)
			// Three renewals after the failure span three refresh periods,
			// past the budget (half the lifetime) a lasting failure gets.
			after := failed.Metrics["vipd_vip_announcements_total"] + 3
			e := c.waitFor(t, "three renewals after the failure", 10*time.Second, func(e helperEvent) bool {
				return e.Event == eventReturned || e.Metrics["vipd_vip_announcements_total"] >= after
			})
			if e.Event == eventReturned {
				t.Fatalf("the hold ended after a failed renewal that was followed by good ones: %+v", e)
			}
			if !e.Held || n.addrOf(t, f.vip) == nil {
				t.Fatalf("VIP not held after renewals work again: %+v", e)
			}
			t.Logf("still holding %v after the failed renewal", e.Time.Sub(failed.Time))
			must(t, c.cmd.Process.Signal(syscall.SIGTERM))
			if end := c.waitReturned(t); end.Error != "" {
				t.Fatalf("Hold ended with %q, want no error", end.Error)
			}
			c.waitExit(t)
		})
	}
}

// TestLinkWatchThatCannotStartIsRetried starts Watch in a helper that has
// no file descriptor left, so the watch's netlink sockets cannot open: the
// link must count as down (reported through OnLinkChange) until the test
// raises the helper's limit and the retried watch reads the link, up.
func TestLinkWatchThatCannotStartIsRetried(t *testing.T) {
	tb := newTestbed(t)
	c := startChild(t, tb.a, "watch", vip4)
	if e := c.waitFor(t, "link change", 10*time.Second, isEvent(eventLink)); e.Up || e.LinkUp {
		t.Fatalf("with the watch unable to start: %+v, want the link down", e)
	}
	var lim unix.Rlimit
	must(t, unix.Prlimit(c.cmd.Process.Pid, unix.RLIMIT_NOFILE, nil, &lim))
	lim.Cur = lim.Max
	must(t, unix.Prlimit(c.cmd.Process.Pid, unix.RLIMIT_NOFILE, &lim, nil))
	if e := c.waitFor(t, "link change", 10*time.Second, isEvent(eventLink)); !e.Up || !e.LinkUp {
		t.Fatalf("after the watch could start: %+v, want the link up", e)
	}
	c.stop(t)
}
