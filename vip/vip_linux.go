package vip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// netlinkTimeout bounds every netlink request, so that not even the kernel
// can stall a release for long.
const netlinkTimeout = 2 * time.Second

// newHandle opens the netlink handle one Hold or RemoveStale uses.
func newHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("set netlink timeout: %w", err)
	}
	return h, nil
}

// prefix is the host prefix the VIP is held as: /32 or /128.
func prefix(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

// RemoveStale deletes every VIP of the set found on its interface (see
// VIP.RemoveStale): docs/architecture.md rule 4, a restarted node starts
// clean.
func (m *Manager) RemoveStale() error {
	h, err := newHandle()
	if err != nil {
		return needsCap(err, "CAP_NET_ADMIN")
	}
	defer h.Close()
	var errs []error
	for _, v := range m.snapshot() {
		if err := removeStale(h, v.cfg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemoveStale deletes v's address from its interface, whatever its prefix
// length, when no Hold of v runs: what an operator or an earlier process
// left there is not this node's to keep (rule 4, also for a VIP added
// while the daemon runs). A missing interface holds nothing and is skipped.
func (v *VIP) RemoveStale() error {
	if err := v.beginHold(); err != nil {
		return fmt.Errorf("remove stale VIP: %w", err)
	}
	defer v.endHold()
	h, err := newHandle()
	if err != nil {
		return needsCap(err, "CAP_NET_ADMIN")
	}
	defer h.Close()
	return removeStale(h, v.cfg)
}

func removeStale(h *netlink.Handle, c Config) error {
	link, err := h.LinkByName(c.Interface)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("remove stale VIP %s: find interface %s: %w", c.Address, c.Interface, err)
	}
	family := netlink.FAMILY_V4
	if c.Address.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := h.AddrList(link, family)
	if err != nil {
		return fmt.Errorf("remove stale VIP %s: list addresses of %s: %w", c.Address, c.Interface, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); !ok || ip.Unmap() != c.Address {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale VIP %s from %s: %w", a.IPNet, c.Interface, needsCap(err, "CAP_NET_ADMIN"))
		}
	}
	return nil
}

// held is one VIP during one Hold: its link, socket and announcement loop.
type held struct {
	*VIP
	h       *netlink.Handle
	link    netlink.Link
	addr    netlink.Addr
	ann     announcer
	claimed bool // the address was added by this Hold: release deletes it
	linkUp  bool

	// The outcome of adding or renewing the address; Hold's goroutine only.
	renewed  time.Time // the last success: the kernel drops the address a lifetime later
	renewErr error     // the latest attempt's error, nil if it succeeded
	failures int       // attempts failed in a row

	kick      chan struct{} // wakes the announcement loop
	wantBurst atomic.Bool   // the next wake-up sends a full burst
	lastKick  time.Time     // last conflict-driven re-announcement; Hold's goroutine only
}

// trigger asks the announcement loop for one announcement, or a burst.
// It never blocks.
func (v *held) trigger(burst bool) {
	if burst {
		v.wantBurst.Store(true)
	}
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// Hold claims the VIP, announces it, renews and re-announces it each
// Refresh, puts it back and announces a burst at once if it vanishes or its
// link comes back up, and watches for other hosts claiming it, until ctx is
// done. It then releases the VIP — the address deletion comes first and
// nothing waits before it — and returns only after that, with every
// goroutine it started ended. Once the VIP is claimed and announcing it
// calls holding (if not nil), from its goroutine; it must not block for
// long. It returns an error when the VIP cannot be claimed or announced
// (after releasing what it claimed; a permission error names the missing
// capability), when its interface is deleted or recreated while held, when
// its renewals keep failing for longer than its renewalBudget, when another
// Hold of it runs, or when it was removed. A renewal that fails and is
// followed by one that succeeds within the budget, and failed sends, are
// logged, not fatal. Holds of different VIPs run side by side and never
// touch each other's address.
func (v *VIP) Hold(ctx context.Context, holding func()) error {
	if err := v.beginHold(); err != nil {
		return err
	}
	defer v.endHold()
	start := time.Now()
	if ctx.Err() != nil {
		return nil
	}
	h, err := newHandle()
	if err != nil {
		return needsCap(err, "CAP_NET_ADMIN")
	}
	hv := &held{VIP: v, h: h, kick: make(chan struct{}, 1)}
	cfg := v.cfg
	// Subscriptions start before the claim so no deletion goes unseen.
	subCtx, stopSubs := context.WithCancel(ctx)
	addrs := startStream(subCtx, v.log, "address", subscribeAddrs)
	links := startStream(subCtx, v.log, "link", subscribeLinks)
	// Announcing stops the moment ctx ends, without waiting for anything.
	annCtx, stopAnn := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		hv.release() // first: nothing may delay the deletion
		stopAnn()
		if hv.ann != nil {
			hv.ann.close() // unblocks readConflicts
		}
		stopSubs()
		wg.Wait()
		addrs.wait()
		links.wait()
		h.Close()
	}()

	if err := hv.claim(); err != nil {
		return err
	}
	ifi, err := net.InterfaceByIndex(hv.link.Attrs().Index)
	if err != nil {
		return fmt.Errorf("claim %s on %s: %w", cfg.Address, cfg.Interface, err)
	}
	ann, err := openAnnouncer(ifi, cfg.Address)
	if err != nil { // hv.ann stays a nil interface, not a typed nil
		return fmt.Errorf("claim %s on %s: %w", cfg.Address, cfg.Interface, err)
	}
	hv.ann = ann
	conflicts := make(chan net.HardwareAddr)
	wg.Go(func() { hv.announceLoop(annCtx, start) })
	wg.Go(func() {
		hv.ann.readConflicts(func(mac net.HardwareAddr) {
			select {
			case conflicts <- mac:
			case <-annCtx.Done():
			}
		})
	})

	tick := time.NewTicker(cfg.Refresh)
	defer tick.Stop()
	// giveUp fires when the budget of failing renewals ends: one more try
	// then, and the hold ends if that fails.
	giveUp := time.NewTimer(0)
	giveUp.Stop()
	defer giveUp.Stop()
	v.log.Info("vip hold started")
	if holding != nil {
		holding()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			hv.renew()
		case u := <-addrs.C:
			if !u.NewAddr && u.LinkIndex == hv.link.Attrs().Index && u.LinkAddress.IP.Equal(hv.addr.IP) {
				hv.restore("address vanished")
			}
		case <-links.C:
			// Re-read the interface, as Watch does: immune to lost
			// messages, and it sees an interface deleted or recreated under
			// the same name, which this Hold's address and announcer no
			// longer reach. Ending the Hold makes the caller claim anew.
			link, err := h.LinkByName(cfg.Interface)
			var notFound netlink.LinkNotFoundError
			switch {
			case errors.As(err, &notFound) || (err == nil && link.Attrs().Index != hv.link.Attrs().Index):
				return fmt.Errorf("hold %s: interface %s was deleted or recreated: the VIP must be claimed again",
					cfg.Address, cfg.Interface)
			case err != nil:
				v.log.Warn("vip interface re-read failed", zap.Error(err))
				continue
			}
			up := isUp(link.Attrs())
			if up && !hv.linkUp {
				hv.restore("link came up")
			}
			hv.linkUp = up
		case mac := <-conflicts:
			hv.conflict(mac)
		case <-giveUp.C:
			if hv.renewErr != nil {
				hv.renew()
			}
		}
		end, err := hv.renewalFailed(time.Now())
		if err != nil {
			return err
		}
		giveUp.Stop()
		if !end.IsZero() {
			giveUp.Reset(time.Until(end))
		}
	}
}

// renewalBudget is how long after its last successful renewal a VIP whose
// renewals fail is still held: half its lifetime. The kernel drops the
// address one lifetime after that success, so by then it is lost whatever
// happens next; ending the hold at half leaves the other half for the daemon
// to learn it and act (report itself unfit, hand over, claim anew) while the
// address may still work, instead of leading without it. A single failure
// never ends the hold: the budget allows a second try, on the next tick
// (Refresh is at most half the lifetime, config's rule) or at its end.
func (c Config) renewalBudget() time.Duration { return c.Lifetime / 2 }

// renewalFailed returns an error naming the VIP when its renewals have
// failed at least twice in a row and for longer than its budget; otherwise
// the end of the budget still running (zero if the last renewal succeeded).
func (v *held) renewalFailed(now time.Time) (time.Time, error) {
	if v.renewErr == nil {
		return time.Time{}, nil
	}
	cfg := v.cfg
	end := v.renewed.Add(cfg.renewalBudget())
	if v.failures >= 2 && !now.Before(end) {
		return time.Time{}, fmt.Errorf("hold %s on %s: no renewal succeeded for %s, over half the %s lifetime: %w",
			cfg.Address, cfg.Interface, now.Sub(v.renewed).Round(time.Millisecond), cfg.Lifetime, v.renewErr)
	}
	return end, nil
}

// labels are the VIP's metric labels.
func (v *held) labels() []string { return []string{v.cfg.Address.String(), v.cfg.Interface} }

// conflict logs and counts another host's claim and re-announces, at most
// once per Refresh so two holders cannot drive each other into a storm.
func (v *held) conflict(mac net.HardwareAddr) {
	v.m.metrics.conflicts.WithLabelValues(v.labels()...).Inc()
	v.log.Warn("vip conflict: another host claims the VIP", zap.Stringer("mac", mac))
	if time.Since(v.lastKick) >= v.cfg.Refresh {
		v.lastKick = time.Now()
		v.trigger(false)
	}
}

// claim adds the address for the first time in this Hold.
func (v *held) claim() error {
	cfg := v.cfg
	link, err := v.h.LinkByName(cfg.Interface)
	if err != nil {
		return fmt.Errorf("claim %s: find interface %s: %w", cfg.Address, cfg.Interface, err)
	}
	v.link = link
	v.linkUp = isUp(link.Attrs())
	v.addr = netlink.Addr{
		IPNet:       prefix(cfg.Address),
		Label:       cfg.label(),
		ValidLft:    cfg.lifetimeSeconds(),
		PreferedLft: cfg.lifetimeSeconds(),
	}
	if cfg.Address.Is6() {
		v.addr.Flags = unix.IFA_F_NODAD
	}
	if err := v.addAddr(); err != nil {
		return err
	}
	v.claimed, v.renewed = true, time.Now()
	v.held.Store(true)
	v.m.metrics.claims.WithLabelValues(v.labels()...).Inc()
	v.m.metrics.held.WithLabelValues(v.labels()...).Set(1)
	v.log.Info("vip claimed", zap.Int("lifetime_s", v.addr.ValidLft))
	return nil
}

// addAddr adds or renews the address with its lifetime (idempotent).
func (v *held) addAddr() error {
	a := v.addr // AddrReplace fills in fields of what it is given
	if err := v.h.AddrReplace(v.link, &a); err != nil {
		return fmt.Errorf("add address %s to %s: %w", v.addr.IPNet, v.cfg.Interface, needsCap(err, "CAP_NET_ADMIN"))
	}
	return nil
}

// putAddr adds or renews the address of a held VIP and records the outcome
// for renewalFailed.
func (v *held) putAddr() error {
	if err := v.addAddr(); err != nil {
		v.renewErr = err
		v.failures++
		v.held.Store(false)
		v.m.metrics.renewFailures.WithLabelValues(v.labels()...).Inc()
		return err
	}
	v.renewed, v.renewErr, v.failures = time.Now(), nil, 0
	v.held.Store(true)
	return nil
}

// renew extends the lifetime and asks for one announcement.
func (v *held) renew() {
	if err := v.putAddr(); err != nil {
		v.log.Error("vip renew failed", zap.Int("failures_in_a_row", v.failures), zap.Error(err))
		return
	}
	v.trigger(false)
}

// restore puts the address back at once and announces a full burst.
func (v *held) restore(why string) {
	if err := v.putAddr(); err != nil {
		v.log.Error("vip restore failed", zap.String("reason", why), zap.Int("failures_in_a_row", v.failures), zap.Error(err))
		return
	}
	v.m.metrics.restores.WithLabelValues(v.labels()...).Inc()
	v.log.Warn("vip restored", zap.String("reason", why))
	v.trigger(true)
}

// release deletes the address if this Hold added it. It runs before
// anything else on the way out of Hold.
func (v *held) release() {
	if !v.claimed {
		return
	}
	a := v.addr
	err := v.h.AddrDel(v.link, &a)
	v.held.Store(false)
	v.m.metrics.held.WithLabelValues(v.labels()...).Set(0)
	v.m.metrics.releases.WithLabelValues(v.labels()...).Inc()
	switch {
	case err == nil, errors.Is(err, syscall.EADDRNOTAVAIL):
		v.log.Info("vip released")
	case errors.Is(err, syscall.ENODEV):
		v.log.Info("vip released with its interface") // deleted along with it
	default:
		v.log.Error("vip release failed; the kernel drops it when its lifetime ends",
			zap.Error(needsCap(err, "CAP_NET_ADMIN")))
	}
}

// announceLoop sends the claim burst, then one announcement per trigger (or
// a burst when asked), until ctx is done. Sends carry deadlines; a failure is
// logged when it starts and when it ends, not on every tick.
func (v *held) announceLoop(ctx context.Context, start time.Time) {
	cfg := v.cfg
	announcements := v.m.metrics.announcements.WithLabelValues(v.labels()...)
	first, failing := true, false
	send := func() {
		if ctx.Err() != nil {
			return // releasing: an announcement now would point neighbours back here
		}
		err := v.ann.announce()
		switch {
		case err != nil && !failing:
			v.log.Warn("vip announcement failed", zap.Error(err))
		case err == nil && failing:
			v.log.Info("vip announcements work again")
		}
		failing = err != nil
		if err != nil {
			return
		}
		announcements.Inc()
		if first {
			first = false
			d := time.Since(start)
			v.m.metrics.claimToAnnounce.Observe(d.Seconds())
			v.log.Info("vip announced", zap.Duration("claim_to_announce", d))
		}
	}
	burst := func() {
		t := time.NewTimer(0)
		defer t.Stop()
		for i := 0; i < cfg.AnnounceCount; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			send()
			t.Reset(cfg.AnnounceInterval)
		}
	}
	burst()
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.kick:
			if v.wantBurst.Swap(false) {
				burst()
			} else {
				send()
			}
		}
	}
}

// isUp reports whether a link can carry traffic: administratively up and
// not reported down by its driver (veth and dummy links say "unknown").
func isUp(a *netlink.LinkAttrs) bool {
	return a.Flags&net.FlagUp != 0 && (a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown)
}

// Watch follows the interfaces of the set with a netlink link
// subscription, keeps LinkUp accurate and calls OnLinkChange on every
// change, until ctx is done; it reads the interfaces again whenever a VIP
// is added or removed. A missing interface counts as down. If the watch
// cannot start or dies, LinkUp turns false (the links are not known, so not
// known to be up) and the watch is retried, with a growing pause, until it
// works again and the links are read afresh. It opens nothing until the
// set has a VIP.
func (m *Manager) Watch(ctx context.Context) { m.watch(ctx, subscribeLinks) }

// watch is Watch with the subscription given, so tests can make it fail.
func (m *Manager) watch(ctx context.Context, sub subscribeFunc[netlink.LinkUpdate]) {
	if !m.waitForVIPs(ctx) {
		return
	}
	keepRunning(ctx, m.log, "link watch", func(started func()) error {
		err := m.watchOnce(ctx, sub, started)
		if err != nil {
			m.setLinkLost()
		}
		return err
	})
}

// watchOnce runs one link watch until ctx ends (nil) or it fails.
func (m *Manager) watchOnce(ctx context.Context, sub subscribeFunc[netlink.LinkUpdate], started func()) error {
	h, err := newHandle()
	if err != nil {
		return needsCap(err, "CAP_NET_ADMIN")
	}
	defer h.Close()
	// Any update (or a resubscription, or a change of the set) re-reads
	// every interface: fresher than the update itself and immune to lost
	// messages.
	return follow(ctx, m.log, "link", sub, m.rescan, started, func(netlink.LinkUpdate) error {
		return m.readLinks(h)
	})
}

// readLinks reads every interface of the set into the link state. A
// missing interface is down; failing to read one is an error (the watch
// then fails).
func (m *Manager) readLinks(h *netlink.Handle) error {
	vips := m.snapshot()
	state := make(map[string]bool, len(vips))
	for _, v := range vips {
		link, err := h.LinkByName(v.cfg.Interface)
		var notFound netlink.LinkNotFoundError
		switch {
		case errors.As(err, &notFound):
			state[v.cfg.Interface] = false
		case err != nil:
			return fmt.Errorf("read interface %s: %w", v.cfg.Interface, err)
		default:
			state[v.cfg.Interface] = isUp(link.Attrs())
		}
	}
	m.setLinkState(state)
	return nil
}
