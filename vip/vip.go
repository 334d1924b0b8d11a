// Package vip claims, holds and releases vipd's virtual IP addresses.
//
// A Manager keeps the set of VIPs, which may change while it runs, and what
// they share (the link watch, the metrics); each VIP is held by a Hold of
// its own, which adds it to its interface as a /32 (IPv4) or /128 (IPv6,
// without duplicate address detection) with a short kernel lifetime, announces
// it with gratuitous ARP or unsolicited neighbour advertisements, and renews
// the lifetime on every refresh tick. If the process dies or freezes, the
// kernel drops the address by itself once the lifetime runs out
// (docs/architecture.md rule 3). Releasing deletes the address before
// anything else (rule 2).
//
// It needs CAP_NET_ADMIN (addresses) and CAP_NET_RAW (ARP and ICMPv6 sockets)
// and works inside a network namespace. Only Linux is supported; on other
// systems every operation reports ErrNotSupported.
//
// Metrics (vipd_vip_*): held, claims_total, releases_total, restores_total,
// renewal_failures_total, announcements_total, conflicts_total (labels
// address, interface) and the claim_to_announce_seconds histogram.
package vip

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// maxIfNameLen is the longest Linux interface name (IFNAMSIZ - 1); IPv4
// address labels have the same limit.
const maxIfNameLen = 15

// ErrNotSupported is returned on systems where vipd cannot manage addresses.
var ErrNotSupported = errors.New("vip: managing virtual IPs is only supported on Linux")

// ErrHoldActive is returned by Hold when another Hold of the same VIP is
// still running (two loops holding one VIP must never overlap), and by
// Remove while a Hold of the VIP runs.
var ErrHoldActive = errors.New("vip: another Hold of this VIP is already running")

// ErrRemoved is returned by Hold on a VIP its Manager no longer has.
var ErrRemoved = errors.New("vip: the VIP was removed from its Manager")

// Config is one virtual IP and how it is held. The timings come from the
// config package, which owns their defaults and rules; Add only refuses a
// timing that is not set.
type Config struct {
	Address   netip.Addr
	Interface string
	// Lifetime is the kernel valid_lft/preferred_lft of the address, rounded up
	// to whole seconds (the kernel's unit).
	Lifetime time.Duration
	// Refresh is the period of lifetime renewal and re-announcement.
	Refresh time.Duration
	// AnnounceCount and AnnounceInterval shape the burst of gratuitous ARP /
	// unsolicited NA sent on claim.
	AnnounceCount    int
	AnnounceInterval time.Duration
}

// Options configures a Manager.
type Options struct {
	Logger     *zap.Logger           // nil: no logs
	Registerer prometheus.Registerer // nil: metrics are not registered
	// OnLinkChange is called whenever LinkUp changes: by Watch, from its
	// goroutine, including when Watch loses sight of the links, and by Add
	// and Remove when the set of interfaces changes it. It must not block
	// for long.
	OnLinkChange func(up bool)
}

// Status reports one VIP.
type Status struct {
	Address   string `json:"address"`
	Interface string `json:"interface"`
	Held      bool   `json:"held"`
}

// Manager keeps what the VIPs of a node share: the link watch, the metrics
// and the logger. VIPs are added and removed while it runs; each is held by
// its own Hold. Its methods are safe for concurrent use.
type Manager struct {
	log          *zap.Logger
	metrics      *metrics
	onLinkChange func(up bool)
	rescan       chan struct{} // buffered 1: the set changed, Watch reads the links again

	mu       sync.Mutex
	vips     []*VIP          // the current set, in the order added
	linkUp   map[string]bool // interface name -> up, as last read by Watch
	linkLost bool            // Watch cannot see the links now: none counts as up
}

// The states of a VIP: at most one Hold runs at a time, and none after
// the VIP was removed.
const (
	vipIdle int32 = iota
	vipHolding
	vipRemoved
)

// VIP is one virtual IP of a Manager, from Add until Remove. Its Hold
// claims and holds it.
type VIP struct {
	m     *Manager
	cfg   Config
	log   *zap.Logger
	held  atomic.Bool  // this node holds the address now
	state atomic.Int32 // vipIdle, vipHolding or vipRemoved
}

// Config is the VIP as it was added (address normalised).
func (v *VIP) Config() Config { return v.cfg }

// New registers the metrics. It touches neither the network nor the
// kernel, and holds no VIP until one is added.
func New(opts Options) (*Manager, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	met, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Manager{
		log:          log.Named("vip"),
		metrics:      met,
		onLinkChange: opts.OnLinkChange,
		rescan:       make(chan struct{}, 1),
		linkUp:       make(map[string]bool),
	}, nil
}

// Add checks c and adds it to the set: its series are exported at zero,
// Status lists it and Watch follows its interface. It is not held until
// its Hold runs. An address already in the set is refused.
func (m *Manager) Add(c Config) (*VIP, error) {
	c, err := checkConfig(c)
	if err != nil {
		return nil, err
	}
	v := &VIP{m: m, cfg: c, log: m.log.With(zap.Stringer("address", c.Address), zap.String("interface", c.Interface))}
	var dup bool
	m.updateLinks(func() {
		dup = slices.ContainsFunc(m.vips, func(o *VIP) bool { return o.cfg.Address == c.Address })
		if !dup {
			m.vips = append(m.vips, v)
		}
	}, zap.String("added", c.Address.String()))
	if dup {
		return nil, fmt.Errorf("vip %s: configured twice", c.Address)
	}
	m.metrics.initSeries(c.Address.String(), c.Interface)
	m.kickWatch()
	return v, nil
}

// Remove takes v out of the set: Status no longer lists it, its series
// leave the metrics, and Hold refuses it from then on. The caller ends
// v's Hold first (which releases the address); while one runs, Remove
// refuses with ErrHoldActive and changes nothing.
func (m *Manager) Remove(v *VIP) error {
	if !v.state.CompareAndSwap(vipIdle, vipRemoved) {
		if v.state.Load() == vipRemoved {
			return nil
		}
		return fmt.Errorf("remove vip %s: %w", v.cfg.Address, ErrHoldActive)
	}
	m.updateLinks(func() {
		m.vips = slices.DeleteFunc(m.vips, func(o *VIP) bool { return o == v })
	}, zap.String("removed", v.cfg.Address.String()))
	m.metrics.deleteSeries(v.cfg.Address.String(), v.cfg.Interface)
	m.kickWatch()
	return nil
}

// beginHold marks v held by one Hold, or says why it cannot be.
func (v *VIP) beginHold() error {
	if v.state.CompareAndSwap(vipIdle, vipHolding) {
		return nil
	}
	if v.state.Load() == vipRemoved {
		return fmt.Errorf("hold %s: %w", v.cfg.Address, ErrRemoved)
	}
	return fmt.Errorf("hold %s: %w", v.cfg.Address, ErrHoldActive)
}

func (v *VIP) endHold() { v.state.Store(vipIdle) }

// kickWatch tells Watch the set changed; it never blocks.
func (m *Manager) kickWatch() {
	select {
	case m.rescan <- struct{}{}:
	default: // a re-read is already pending
	}
}

// snapshot is the current set.
func (m *Manager) snapshot() []*VIP {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.vips)
}

// waitForVIPs returns true once the set is not empty, false if ctx ends first.
func (m *Manager) waitForVIPs(ctx context.Context) bool {
	for len(m.snapshot()) == 0 {
		select {
		case <-ctx.Done():
			return false
		case <-m.rescan:
		}
	}
	return true
}

// checkConfig normalises c's address and rejects a VIP that cannot be held.
// The timings are config's to default and validate; a zero or negative one
// here is a caller that skipped config, refused by name.
func checkConfig(c Config) (Config, error) {
	if !c.Address.IsValid() {
		return c, errors.New("vip: address is missing")
	}
	fail := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("vip %s on %q: %s", c.Address, c.Interface, fmt.Sprintf(format, args...))
	}
	c.Address = c.Address.Unmap()
	switch {
	case c.Address.Zone() != "":
		return fail("address must not have a zone")
	case c.Address.IsUnspecified(), c.Address.IsMulticast(), c.Address.IsLoopback(), c.Address.IsLinkLocalUnicast():
		return fail("address must be a unicast, non-loopback, non-link-local address")
	case c.Interface == "":
		return fail("interface is missing")
	case len(c.Interface) > maxIfNameLen:
		return fail("interface name longer than %d bytes", maxIfNameLen)
	case c.Lifetime <= 0:
		return fail("Lifetime %s must be positive", c.Lifetime)
	case c.Refresh <= 0:
		return fail("Refresh %s must be positive", c.Refresh)
	case c.AnnounceCount <= 0:
		return fail("AnnounceCount %d must be positive", c.AnnounceCount)
	case c.AnnounceInterval <= 0:
		return fail("AnnounceInterval %s must be positive", c.AnnounceInterval)
	}
	return c, nil
}

// lifetimeSeconds is the kernel lifetime of c: Lifetime rounded up to seconds.
func (c Config) lifetimeSeconds() int {
	return int((c.Lifetime + time.Second - 1) / time.Second)
}

// label is the IPv4 address label "<ifname>:vip", or "" when it would not fit
// the kernel's 15 bytes or the VIP is IPv6 (labels are IPv4 only).
func (c Config) label() string {
	l := c.Interface + ":vip"
	if !c.Address.Is4() || len(l) > maxIfNameLen {
		return ""
	}
	return l
}

// Status reports every VIP of the set, in the order added, and whether
// this node holds it.
func (m *Manager) Status() []Status {
	vips := m.snapshot()
	out := make([]Status, len(vips))
	for i, v := range vips {
		out[i] = Status{Address: v.cfg.Address.String(), Interface: v.cfg.Interface, Held: v.held.Load()}
	}
	return out
}

// LinkUp reports whether every VIP interface is up, as last seen by Watch.
// Before Watch has read an interface it counts as up; while Watch cannot
// follow the links (its netlink watch failed to start or died, and is being
// retried) none counts as up. With no VIP there is no link to be down.
func (m *Manager) LinkUp() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.allUpLocked()
}

// allUpLocked is LinkUp's answer; m.mu must be held.
func (m *Manager) allUpLocked() bool {
	if len(m.vips) == 0 {
		return true
	}
	if m.linkLost {
		return false
	}
	for _, v := range m.vips {
		if up, ok := m.linkUp[v.cfg.Interface]; ok && !up {
			return false
		}
	}
	return true
}

// setLinkState records the state of VIP interfaces (name -> up), as read
// by Watch.
func (m *Manager) setLinkState(state map[string]bool) {
	m.updateLinks(func() {
		m.linkLost = false
		maps.Copy(m.linkUp, state)
	}, zap.Any("interfaces", state))
}

// setLinkLost records that Watch cannot see the links any more.
func (m *Manager) setLinkLost() {
	m.updateLinks(func() { m.linkLost = true }, zap.String("interfaces", "unknown: the link watch is down"))
}

// updateLinks applies change (to the link state or the set) under m.mu and
// calls OnLinkChange when LinkUp changes as a result.
func (m *Manager) updateLinks(change func(), detail zap.Field) {
	m.mu.Lock()
	before := m.allUpLocked()
	change()
	after := m.allUpLocked()
	m.mu.Unlock()
	if before == after {
		return
	}
	m.log.Info("vip link state changed", zap.Bool("up", after), detail)
	if m.onLinkChange != nil {
		m.onLinkChange(after)
	}
}

// needsCap adds the capability an operation lacked to a permission error, so
// an operator reads "operation not permitted (needs CAP_NET_ADMIN)".
func needsCap(err error, capability string) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w (needs %s)", err, capability)
	}
	return err
}
