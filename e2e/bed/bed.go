// Package bed builds the multi-node test bed of vipd's end-to-end tests: one
// network namespace per host (nodes, backends, a client) joined by a bridge that
// lives in a namespace of its own, so nothing touches the caller's namespace.
// It starts processes inside those namespaces, samples who holds the VIP, drives
// client traffic at it, and injects faults (link down, nftables drops, signals).
//
// Everything here needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN). Addresses are from
// 198.18.0.0/24 only: nodes .11 .12 .13, backends .21 .22, client .2, VIP .100.
package bed

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The bed's fixed addresses, all inside 198.18.0.0/24.
var (
	Subnet      = netip.MustParsePrefix("198.18.0.0/24")
	VIP         = netip.MustParseAddr("198.18.0.100")
	ClientAddr  = netip.MustParseAddr("198.18.0.2")
	NodeAddrs   = []netip.Addr{netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12"), netip.MustParseAddr("198.18.0.13")}
	BackendAddr = []netip.Addr{netip.MustParseAddr("198.18.0.21"), netip.MustParseAddr("198.18.0.22")}
	// ControlPlaneAddr is the host of the Kubernetes control plane (StartControlPlane).
	ControlPlaneAddr = netip.MustParseAddr("198.18.0.30")
)

// HostIface is the name of every host's interface inside its namespace.
const HostIface = "eth0"

// netnsDir is where named namespaces live (the place `ip netns` uses).
const netnsDir = "/run/netns"

// namePrefix starts every namespace this package creates; the stale sweep
// (SweepStale) relies on it together with the creating pid.
const namePrefix = "vipde2e"

// HostSpec names one host of the bed and its address.
type HostSpec struct {
	Name string // short, used in namespace and bridge-port names (at most 6 bytes)
	Addr netip.Addr
}

// DefaultHosts is the bed of the issue: three nodes, two backends, a client.
func DefaultHosts() []HostSpec {
	return []HostSpec{
		{"n1", NodeAddrs[0]}, {"n2", NodeAddrs[1]}, {"n3", NodeAddrs[2]},
		{"b1", BackendAddr[0]}, {"b2", BackendAddr[1]},
		{"c", ClientAddr},
	}
}

// Host is one namespace of the bed with its interface HostIface.
type Host struct {
	Name   string
	Addr   netip.Addr
	NS     string           // namespace name, for `ip netns exec`
	MAC    net.HardwareAddr // of HostIface
	handle netns.NsHandle
	nl     *netlink.Handle
	port   string // the host's port on the bridge (in the bridge namespace)
}

// Bed is a set of hosts on one bridge plus the processes started in them.
type Bed struct {
	// Prefix is unique per bed (pid and a random tag): namespaces are
	// Prefix+"-"+host.
	Prefix string
	// LogDir receives one log file per started process.
	LogDir string
	// ChildBin is the program StartLoad and StartSpin run (e2e/cmd/bedchild,
	// built without the race detector, so a load costs what a real client
	// costs); empty: this test binary, whose TestMain must call RunChild.
	ChildBin string

	hosts    map[string]*Host
	order    []string
	bridgeNS string
	bridge   *netlink.Handle
	brHandle netns.NsHandle

	mu     sync.Mutex
	procs  []*Proc // every process started, guarded by mu
	closed bool    // guarded by mu
}

// New creates the namespaces, the bridge and one veth per host, all up, with
// the hosts' addresses as /24. On error everything made so far is removed.
// logDir must exist; process logs go there.
func New(hosts []HostSpec, logDir string) (b *Bed, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the test bed needs root (network namespaces)")
	}
	var tag [3]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return nil, fmt.Errorf("bed name: %w", err)
	}
	b = &Bed{
		Prefix: fmt.Sprintf("%s-%d-%x", namePrefix, os.Getpid(), tag),
		LogDir: logDir,
		hosts:  map[string]*Host{},
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.Close())
			b = nil
		}
	}()
	b.bridgeNS = b.Prefix + "-br"
	if b.brHandle, err = newNamedNS(b.bridgeNS); err != nil {
		return b, err
	}
	if b.bridge, err = netlink.NewHandleAt(b.brHandle); err != nil {
		return b, fmt.Errorf("netlink handle in %s: %w", b.bridgeNS, err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err = b.bridge.LinkAdd(br); err != nil {
		return b, fmt.Errorf("add bridge in %s: %w", b.bridgeNS, err)
	}
	if err = b.bridge.LinkSetUp(br); err != nil {
		return b, fmt.Errorf("bridge up: %w", err)
	}
	for _, spec := range hosts {
		if err = b.addHost(spec, br); err != nil {
			return b, err
		}
	}
	return b, nil
}

// addHost makes the host's namespace and its veth: one end "eth0" in the host,
// the other end, named after the host, a port of br0 in the bridge namespace.
func (b *Bed) addHost(spec HostSpec, br *netlink.Bridge) error {
	if len(spec.Name) == 0 || len(spec.Name) > 6 || !Subnet.Contains(spec.Addr) {
		return fmt.Errorf("host %q %s: want a name of 1-6 bytes and an address in %s", spec.Name, spec.Addr, Subnet)
	}
	if _, dup := b.hosts[spec.Name]; dup {
		return fmt.Errorf("host %q twice", spec.Name)
	}
	h := &Host{Name: spec.Name, Addr: spec.Addr, NS: b.Prefix + "-" + spec.Name, port: spec.Name}
	var err error
	if h.handle, err = newNamedNS(h.NS); err != nil {
		return err
	}
	b.hosts[h.Name] = h
	b.order = append(b.order, h.Name)
	if h.nl, err = netlink.NewHandleAt(h.handle); err != nil {
		return fmt.Errorf("netlink handle in %s: %w", h.NS, err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: h.port, MasterIndex: br.Attrs().Index},
		PeerName:      HostIface,
		PeerNamespace: netlink.NsFd(h.handle),
	}
	if err := b.bridge.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s/%s for %s: %w", h.port, HostIface, h.Name, err)
	}
	if err := b.bridge.LinkSetUp(veth); err != nil {
		return fmt.Errorf("bridge port %s up: %w", h.port, err)
	}
	lo, err := h.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo in %s: %w", h.NS, err)
	}
	if err := h.nl.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up in %s: %w", h.NS, err)
	}
	eth, err := h.nl.LinkByName(HostIface)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", HostIface, h.NS, err)
	}
	h.MAC = eth.Attrs().HardwareAddr
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: h.Addr.AsSlice(), Mask: net.CIDRMask(Subnet.Bits(), 32)}}
	if err := h.nl.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", h.Addr, h.NS, err)
	}
	if err := h.nl.LinkSetUp(eth); err != nil {
		return fmt.Errorf("%s up in %s: %w", HostIface, h.NS, err)
	}
	return nil
}

// Host returns the named host; it panics on a name the bed does not have,
// which is a bug in the caller.
func (b *Bed) Host(name string) *Host {
	h, ok := b.hosts[name]
	if !ok {
		panic(fmt.Sprintf("bed: no host %q", name))
	}
	return h
}

// Hosts returns the hosts in creation order.
func (b *Bed) Hosts() []*Host {
	out := make([]*Host, 0, len(b.order))
	for _, n := range b.order {
		out = append(out, b.hosts[n])
	}
	return out
}

// Close kills every process the bed started (SIGKILL, then waits) and deletes
// every namespace it made. Safe to call twice.
func (b *Bed) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	procs := b.procs
	b.mu.Unlock()
	var errs []error
	for _, p := range procs {
		p.Kill()
	}
	for _, p := range procs {
		<-p.done
	}
	for _, h := range b.hosts {
		if h.nl != nil {
			h.nl.Close()
		}
		h.handle.Close()
		if err := netns.DeleteNamed(h.NS); err != nil {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", h.NS, err))
		}
	}
	if b.bridge != nil {
		b.bridge.Close()
	}
	if b.brHandle.IsOpen() {
		b.brHandle.Close()
		if err := netns.DeleteNamed(b.bridgeNS); err != nil {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", b.bridgeNS, err))
		}
	}
	return errors.Join(errs...)
}

// newNamedNS creates a named namespace without leaving the calling thread in it.
func newNamedNS(name string) (netns.NsHandle, error) {
	var h netns.NsHandle
	err := inThread(func() error {
		var err error
		h, err = netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("create namespace %s: %w", name, err)
		}
		return nil
	})
	return h, err
}

// inThread runs fn on a locked OS thread and afterwards puts that thread back
// into the namespace it started in. If that fails the thread stays locked, so
// the runtime discards it with the goroutine instead of reusing it elsewhere.
func inThread(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current namespace: %w", err)
	}
	defer orig.Close()
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("restore namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Do runs fn on a locked OS thread inside the host's namespace. Sockets made by
// fn stay in that namespace and may be used from any goroutine afterwards.
func (h *Host) Do(fn func() error) error {
	return inThread(func() error {
		if err := netns.Set(h.handle); err != nil {
			return fmt.Errorf("enter %s: %w", h.NS, err)
		}
		return fn()
	})
}

// SweepStale deletes namespaces left behind by earlier runs of this package
// whose process is gone (a run killed before its cleanup), after killing the
// processes still inside them. It returns what it removed.
func SweepStale() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", netnsDir, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		parts := strings.SplitN(e.Name(), "-", 4)
		if len(parts) != 4 || parts[0] != namePrefix {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		killNamespacePids(filepath.Join(netnsDir, e.Name()))
		if err := netns.DeleteNamed(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("delete stale namespace %s: %w", e.Name(), err))
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// killNamespacePids SIGKILLs every process whose network namespace is the one
// bound at path (what `ip netns pids` does), so a stale namespace can go.
func killNamespacePids(path string) {
	var want syscall.Stat_t
	if err := syscall.Stat(path, &want); err != nil {
		return
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil {
			continue
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
