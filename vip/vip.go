// Package vip claims, holds and releases vipd's virtual IP addresses.
//
// A Manager adds each VIP to its interface as a /32 (IPv4) or /128 (IPv6,
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
	"errors"
	"fmt"
	"maps"
	"net/netip"
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

// ErrHoldActive is returned by Hold when another Hold of the same Manager is
// still running: two VIP loops must never overlap.
var ErrHoldActive = errors.New("vip: another Hold is already running")

// Config is one virtual IP and how it is held. The timings come from the
// config package, which owns their defaults and rules; New only refuses a
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
	VIPs       []Config
	Logger     *zap.Logger           // nil: no logs
	Registerer prometheus.Registerer // nil: metrics are not registered
	// OnLinkChange is called by Watch, from its goroutine, whenever LinkUp
	// changes, including when Watch loses sight of the links. It must not
	// block for long.
	OnLinkChange func(up bool)
	// OnHolding is called by Hold, from its goroutine, once every VIP is
	// claimed and announcing: from then on that Hold runs until its context
	// ends, unless a VIP's interface is deleted or recreated. It must not
	// block for long.
	OnHolding func()
}

// Status reports one VIP.
type Status struct {
	Address   string `json:"address"`
	Interface string `json:"interface"`
	Held      bool   `json:"held"`
}

// Manager holds a fixed set of VIPs. Its methods are safe for concurrent use;
// only one Hold may run at a time.
type Manager struct {
	vips         []*vipState
	log          *zap.Logger
	metrics      *metrics
	onLinkChange func(up bool)
	onHolding    func()

	holding atomic.Bool // a Hold is running

	mu       sync.Mutex
	linkUp   map[string]bool // interface name -> up, as last read by Watch
	linkLost bool            // Watch cannot see the links now: none counts as up
}

// vipState is one configured VIP and whether this node holds it now.
type vipState struct {
	cfg  Config
	held atomic.Bool
}

// New checks opts and registers the metrics. It touches neither the network
// nor the kernel.
func New(opts Options) (*Manager, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	m := &Manager{
		log:          log.Named("vip"),
		onLinkChange: opts.OnLinkChange,
		onHolding:    opts.OnHolding,
		linkUp:       make(map[string]bool),
	}
	seen := make(map[netip.Addr]bool)
	for _, c := range opts.VIPs {
		c, err := checkConfig(c)
		if err != nil {
			return nil, err
		}
		if seen[c.Address] {
			return nil, fmt.Errorf("vip %s: configured twice", c.Address)
		}
		seen[c.Address] = true
		m.vips = append(m.vips, &vipState{cfg: c})
	}
	met, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	m.metrics = met
	for _, v := range m.vips {
		met.initSeries(v.cfg.Address.String(), v.cfg.Interface)
	}
	return m, nil
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

// Status reports every configured VIP and whether this node holds it.
func (m *Manager) Status() []Status {
	out := make([]Status, len(m.vips))
	for i, v := range m.vips {
		out[i] = Status{Address: v.cfg.Address.String(), Interface: v.cfg.Interface, Held: v.held.Load()}
	}
	return out
}

// LinkUp reports whether every VIP interface is up, as last seen by Watch.
// Before Watch has read an interface it counts as up; while Watch cannot
// follow the links (its netlink watch failed to start or died, and is being
// retried) none counts as up.
func (m *Manager) LinkUp() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.allUpLocked()
}

// allUpLocked is LinkUp's answer; m.mu must be held.
func (m *Manager) allUpLocked() bool {
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

// setLinkState records the state of every VIP interface (name -> up), as
// read by Watch.
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

// updateLinks applies change under m.mu and calls OnLinkChange when LinkUp
// changes as a result.
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
