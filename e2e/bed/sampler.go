package bed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// Sample is one reading of every watched namespace.
type Sample struct {
	At      time.Time
	Holders []string // hosts whose namespace has the VIP (the sample's last round), in watch order
	Both    []string // hosts found holding in both rounds of the sample: at one instant
	Err     error    // a namespace could not be read
}

// Sampler reads which namespaces hold an address every Interval and keeps the
// whole timeline. A host can be exempted from a point in time on (a daemon
// killed with SIGKILL, a dead node): its address no longer counts as a live
// holder, and the sampler measures how long it stayed.
type Sampler struct {
	vip      netip.Addr
	interval time.Duration
	names    []string
	handles  []*netlink.Handle // own handles: the bed's are not shared between goroutines

	mu      sync.Mutex
	samples []Sample          // guarded by mu
	exempt  map[string][]span // per host, guarded by mu
	maxLft  map[string]uint32 // per host: largest remaining valid lifetime seen (s), guarded by mu

	cancel context.CancelFunc
	done   chan struct{}
}

type span struct{ from, to time.Time } // to zero: still open

// NewSampler watches hosts for vip, reading every interval (10 ms in the tests).
func NewSampler(vip netip.Addr, interval time.Duration, hosts ...*Host) (*Sampler, error) {
	s := &Sampler{vip: vip, interval: interval, exempt: map[string][]span{}, maxLft: map[string]uint32{}}
	for _, h := range hosts {
		nh, err := netlink.NewHandleAt(h.handle)
		if err != nil {
			s.closeHandles()
			return nil, fmt.Errorf("sampler handle in %s: %w", h.NS, err)
		}
		s.names = append(s.names, h.Name)
		s.handles = append(s.handles, nh)
	}
	return s, nil
}

// Start begins sampling in a goroutine that Stop ends.
func (s *Sampler) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan struct{})
	go s.run(ctx)
}

// Stop ends sampling, waits for the sampling goroutine and closes the
// handles. Safe to call twice.
func (s *Sampler) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.cancel = nil
	s.closeHandles()
}

func (s *Sampler) closeHandles() {
	for _, h := range s.handles {
		h.Close()
	}
	s.handles = nil
}

func (s *Sampler) run(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Sampler) sample() {
	at := time.Now() // before reading: a sample stamped t shows the state after t
	// Two rounds: namespaces are read one after another, so one round alone
	// can see a VIP that moved during the round on both nodes. A host found
	// in both rounds held the VIP across the gap between them, so two such
	// hosts held it at the same instant.
	first, _, err1 := s.read()
	holders, lfts, err2 := s.read()
	var both []string
	for _, h := range holders {
		if slices.Contains(first, h) {
			both = append(both, h)
		}
	}
	smp := Sample{At: at, Holders: holders, Both: both, Err: errors.Join(err1, err2)}
	s.mu.Lock()
	s.samples = append(s.samples, smp)
	for name, lft := range lfts {
		if cur, ok := s.maxLft[name]; !ok || lft > cur {
			s.maxLft[name] = lft
		}
	}
	s.mu.Unlock()
}

// read reads every namespace once and returns the holders, in watch order,
// with their addresses' remaining valid lifetimes.
func (s *Sampler) read() ([]string, map[string]uint32, error) {
	var holders []string
	var errs []error
	lfts := map[string]uint32{}
	for i, h := range s.handles {
		held, lft, err := findAddr(h, s.vip)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.names[i], err))
		}
		if held {
			holders = append(holders, s.names[i])
			lfts[s.names[i]] = lft
		}
	}
	return holders, lfts, errors.Join(errs...)
}

// findAddr reports whether any interface of the handle's namespace has addr,
// and its remaining valid lifetime in seconds (InfiniteLifetime: none).
func findAddr(h *netlink.Handle, addr netip.Addr) (bool, uint32, error) {
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := h.AddrList(nil, family)
	if err != nil {
		return false, 0, err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			return true, uint32(a.ValidLft), nil
		}
	}
	return false, 0, nil
}

// InfiniteLifetime is the kernel's valid_lft of an address without a lifetime.
const InfiniteLifetime = ^uint32(0)

// MaxLifetime returns the largest remaining valid lifetime, in whole seconds
// as the kernel reports it, that host's VIP ever had (InfiniteLifetime for an
// address added without one), and whether host ever held the VIP.
func (s *Sampler) MaxLifetime(host string) (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lft, ok := s.maxLft[host]
	return lft, ok
}

// Exempt stops counting host as a live holder from at on (its daemon was
// killed or the node died). Unexempt ends the exemption (the node is back).
func (s *Sampler) Exempt(host string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exempt[host] = append(s.exempt[host], span{from: at})
}

// Unexempt counts host as live again from at on.
func (s *Sampler) Unexempt(host string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	iv := s.exempt[host]
	if n := len(iv); n > 0 && iv[n-1].to.IsZero() {
		iv[n-1].to = at
	}
}

func (s *Sampler) exemptLocked(host string, at time.Time) bool {
	for _, iv := range s.exempt[host] {
		if !at.Before(iv.from) && (iv.to.IsZero() || at.Before(iv.to)) {
			return true
		}
	}
	return false
}

// liveLocked returns the holders of smp that are not exempt at its time.
func (s *Sampler) liveLocked(smp Sample) []string { return s.notExemptLocked(smp.Holders, smp.At) }

// notExemptLocked returns the hosts that are not exempt at at.
func (s *Sampler) notExemptLocked(hosts []string, at time.Time) []string {
	var live []string
	for _, h := range hosts {
		if !s.exemptLocked(h, at) {
			live = append(live, h)
		}
	}
	return live
}

// Last returns the latest sample (zero before the first).
func (s *Sampler) Last() Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return Sample{}
	}
	return s.samples[len(s.samples)-1]
}

// Violation is a run of samples in which more than one live host held the VIP.
type Violation struct {
	From, To time.Time
	Holders  []string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s held by %s for %s", v.From.Format("15:04:05.000"), strings.Join(v.Holders, "+"), v.To.Sub(v.From))
}

// Violations returns every run of samples in which two or more live hosts
// held the VIP at the same instant (in both rounds of a sample).
func (s *Sampler) Violations() []Violation {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Violation
	for _, smp := range s.samples {
		live := s.notExemptLocked(smp.Both, smp.At)
		if len(live) < 2 {
			continue
		}
		if n := len(out); n > 0 && slices.Equal(out[n-1].Holders, live) && out[n-1].To.Add(3*s.interval).After(smp.At) {
			out[n-1].To = smp.At
			continue
		}
		out = append(out, Violation{From: smp.At, To: smp.At, Holders: live})
	}
	return out
}

// Errors returns the distinct read errors the sampler met.
func (s *Sampler) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []error
	seen := map[string]bool{}
	for _, smp := range s.samples {
		if smp.Err != nil && !seen[smp.Err.Error()] {
			seen[smp.Err.Error()] = true
			out = append(out, smp.Err)
		}
	}
	return out
}

// Leftover returns how long host kept the VIP after since: from since to the
// first later sample without it. gone is false when every sample since then
// still showed it (the duration is then a lower bound, up to the last sample).
func (s *Sampler) Leftover(host string, since time.Time) (d time.Duration, gone bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last time.Time
	for _, smp := range s.samples {
		if smp.At.Before(since) {
			continue
		}
		last = smp.At
		if !slices.Contains(smp.Holders, host) {
			return smp.At.Sub(since), true
		}
	}
	if last.IsZero() {
		return 0, false
	}
	return last.Sub(since), false
}

// Change is a point of the timeline where the set of live holders changed.
type Change struct {
	At      time.Time
	Holders []string // live holders from At on
}

// Timeline lists the live holder changes in [from, to] (zero to: up to
// now), one per line, with the time relative to from.
func (s *Sampler) Timeline(from, to time.Time) string {
	var sb strings.Builder
	for _, c := range s.Changes(from, to) {
		fmt.Fprintf(&sb, "  +%-8s %v\n", c.At.Sub(from).Round(time.Millisecond), c.Holders)
	}
	return sb.String()
}

// Changes returns the moments the live holder set changed in [from, to]
// (zero to: up to now).
func (s *Sampler) Changes(from, to time.Time) []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Change
	var prev []string
	first := true
	for _, smp := range s.samples {
		if smp.At.Before(from) || (!to.IsZero() && smp.At.After(to)) {
			continue
		}
		live := s.liveLocked(smp)
		if first || !slices.Equal(prev, live) {
			out = append(out, Change{At: smp.At, Holders: live})
		}
		prev, first = live, false
	}
	return out
}

// FirstHeld returns the first sample time at or after since when host held
// the VIP; ok false if it never did.
func (s *Sampler) FirstHeld(host string, since time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, smp := range s.samples {
		if !smp.At.Before(since) && slices.Contains(smp.Holders, host) {
			return smp.At, true
		}
	}
	return time.Time{}, false
}

// LastHeld returns the last sample time at or after since at which host held
// the VIP, and whether there was one.
func (s *Sampler) LastHeld(host string, since time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last time.Time
	for _, smp := range s.samples {
		if !smp.At.Before(since) && slices.Contains(smp.Holders, host) {
			last = smp.At
		}
	}
	return last, !last.IsZero()
}

// WaitSingle waits until exactly one live host has held the VIP for stable
// (consecutive samples) and returns it. other, when non-empty, must differ
// from the holder (waiting for a failover away from it).
func (s *Sampler) WaitSingle(ctx context.Context, stable time.Duration, other string) (string, error) {
	var cur string
	var since time.Time
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.mu.Lock()
		var live []string
		var at time.Time
		if n := len(s.samples); n > 0 {
			live = s.liveLocked(s.samples[n-1])
			at = s.samples[n-1].At
		}
		s.mu.Unlock()
		switch {
		case len(live) == 1 && live[0] != other:
			if live[0] != cur {
				cur, since = live[0], at
			}
			if at.Sub(since) >= stable {
				return cur, nil
			}
		default:
			cur = ""
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for a single VIP holder (not %q): last live holders %v: %w", other, live, ctx.Err())
		case <-t.C:
		}
	}
}
