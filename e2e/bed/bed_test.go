package bed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"

	"github.com/vipd/vipd/internal/testenv"
)

func TestMain(m *testing.M) {
	if child, code := RunChild(); child {
		os.Exit(code) // a load process started by a test here
	}
	goleak.VerifyTestMain(m)
}

// newBed builds the default bed for a test and removes it afterwards,
// printing the process logs when the test failed.
func newBed(t *testing.T) *Bed {
	t.Helper()
	testenv.NeedRoot(t, "builds network namespaces")
	if _, err := SweepStale(); err != nil {
		t.Logf("sweep stale namespaces: %v", err)
	}
	b, err := New(DefaultHosts(), t.TempDir())
	if err != nil {
		t.Fatalf("build bed: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("process logs:\n%s", b.Tails(30))
		}
		if err := b.Close(); err != nil {
			t.Errorf("close bed: %v", err)
		}
	})
	return b
}

func vipAddr(t *testing.T, lifetime int) *netlink.Addr {
	t.Helper()
	a := &netlink.Addr{IPNet: &net.IPNet{IP: VIP.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if lifetime > 0 {
		a.ValidLft, a.PreferedLft = lifetime, lifetime
	}
	return a
}

func addVIP(t *testing.T, h *Host, lifetime int) {
	t.Helper()
	l, err := h.nl.LinkByName(HostIface)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.nl.AddrReplace(l, vipAddr(t, lifetime)); err != nil {
		t.Fatalf("add VIP on %s: %v", h.Name, err)
	}
}

func delVIP(t *testing.T, h *Host) {
	t.Helper()
	l, err := h.nl.LinkByName(HostIface)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.nl.AddrDel(l, vipAddr(t, 0)); err != nil {
		t.Fatalf("delete VIP on %s: %v", h.Name, err)
	}
}

// garp announces the VIP from h as a vip package would: gratuitous request.
func garp(t *testing.T, h *Host) {
	t.Helper()
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(HostIface)
		if err != nil {
			return err
		}
		c, err := arp.Dial(ifi)
		if err != nil {
			return err
		}
		defer c.Close()
		p, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, VIP, ethernet.Broadcast, VIP)
		if err != nil {
			return err
		}
		return c.WriteTo(p, ethernet.Broadcast)
	})
	if err != nil {
		t.Fatalf("gratuitous ARP from %s: %v", h.Name, err)
	}
}

func TestBedConnectsHostsOnlyThroughTheBridge(t *testing.T) {
	b := newBed(t)
	srv, err := b.Host("b1").serve("198.18.0.21:9000", "b1")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	body, err := b.Host("c").Get(ctx, "198.18.0.21:9000", "/")
	if err != nil || body != "b1\n" {
		t.Fatalf("client GET backend: %q, %v", body, err)
	}
	// Nothing of the bed is in the caller's namespace (checked without
	// sending anything from it).
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, _ := netip.AddrFromSlice(a.IP); Subnet.Contains(ip.Unmap()) {
			t.Errorf("the caller's namespace has bed address %s", a.IPNet)
		}
	}
	for _, h := range b.Hosts() {
		if _, err := os.Stat(filepath.Join(netnsDir, h.NS)); err != nil {
			t.Errorf("namespace of %s: %v", h.Name, err)
		}
	}
}

func TestCloseKillsProcessesAndRemovesNamespaces(t *testing.T) {
	testenv.NeedRoot(t, "builds network namespaces")
	b, err := New(DefaultHosts(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.Start(b.Host("n1"), "standin", "sh", "-c", "ip -o -4 addr show dev eth0; exec sleep 60")
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(p.Tail(5), "198.18.0.11/24") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(p.Tail(5), "198.18.0.11/24") {
		t.Errorf("stand-in did not run in n1's namespace; log:\n%s", p.Tail(5))
	}
	if err := b.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if !p.Exited() {
		t.Error("process still running after Close")
	}
	if err := syscall.Kill(p.Pid(), 0); err == nil {
		t.Errorf("pid %d still exists", p.Pid())
	}
	for _, h := range b.Hosts() {
		if _, err := os.Stat(filepath.Join(netnsDir, h.NS)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left behind: %v", h.NS, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestProcSignalsReachTheCommand(t *testing.T) {
	b := newBed(t)
	p, err := b.Start(b.Host("n2"), "sleeper", "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = p.Wait(2 * time.Second)
	var ee interface{ Sys() any }
	if !errors.As(err, &ee) {
		t.Fatalf("want an exit by signal, got %v", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("want SIGTERM exit status, got %v", err)
	}
}

func TestSamplerFlagsTwoLiveHoldersButNotAnExemptOne(t *testing.T) {
	b := newBed(t)
	n1, n2 := b.Host("n1"), b.Host("n2")
	s, err := NewSampler(VIP, 10*time.Millisecond, n1, n2, b.Host("n3"))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	addVIP(t, n1, 0)
	if h, err := s.WaitSingle(ctx, 50*time.Millisecond, ""); err != nil || h != "n1" {
		t.Fatalf("single holder: %q, %v", h, err)
	}
	if v := s.Violations(); len(v) != 0 {
		t.Fatalf("violations with one holder: %v", v)
	}
	if lft, held := s.MaxLifetime("n1"); !held || lft != InfiniteLifetime {
		t.Errorf("address without lifetime: sampler saw valid_lft %d (held %t)", lft, held)
	}
	addVIP(t, n2, 0)
	time.Sleep(60 * time.Millisecond)
	v := s.Violations()
	if len(v) != 1 || strings.Join(v[0].Holders, ",") != "n1,n2" {
		t.Fatalf("want one violation n1+n2, got %v", v)
	}
	exemptAt := time.Now()
	s.Exempt("n1", exemptAt)
	time.Sleep(60 * time.Millisecond)
	if got := s.Violations(); len(got) != 1 || got[0].To.After(exemptAt) {
		t.Fatalf("exempt n1 still counted: %v", got)
	}
	delVIP(t, n1)
	time.Sleep(30 * time.Millisecond)
	d, gone := s.Leftover("n1", exemptAt)
	if !gone || d <= 0 {
		t.Fatalf("leftover of n1: %s gone=%t", d, gone)
	}
	if h, err := s.WaitSingle(ctx, 30*time.Millisecond, "n1"); err != nil || h != "n2" {
		t.Fatalf("holder after move: %q, %v", h, err)
	}
	if errs := s.Errors(); len(errs) != 0 {
		t.Fatalf("read errors: %v", errs)
	}
}

// The kernel removes an address whose lifetime ran out; the sampler measures
// how long after the last renewal it went (what the SIGKILL scenario relies on).
func TestSamplerMeasuresKernelLifetimeExpiry(t *testing.T) {
	b := newBed(t)
	n3 := b.Host("n3")
	s, err := NewSampler(VIP, 10*time.Millisecond, n3)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Stop()
	const lifetime = 2
	addVIP(t, n3, lifetime)
	added := time.Now()
	s.Exempt("n3", added)
	deadline := time.Now().Add(lifetime*time.Second + 3*time.Second)
	for {
		d, gone := s.Leftover("n3", added)
		if gone {
			t.Logf("address with valid_lft %ds stayed %s", lifetime, d)
			if lft, held := s.MaxLifetime("n3"); !held || lft != lifetime {
				t.Errorf("sampler saw valid_lft %d (held %t), want %d", lft, held, lifetime)
			}
			if d < lifetime*time.Second-100*time.Millisecond {
				t.Fatalf("address went after %s, before its %ds lifetime", d, lifetime)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("address still there %s after adding with lifetime %ds", d, lifetime)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A VIP moved by hand (delete, pause, add elsewhere, gratuitous ARP) shows
// up in the client as an outage at least as long as the pause, and the
// client's neighbour entry follows the new holder's MAC.
func TestClientMeasuresOutageOfAVIPMove(t *testing.T) {
	b := newBed(t)
	n1, n2, c := b.Host("n1"), b.Host("n2"), b.Host("c")
	for _, h := range []*Host{n1, n2} {
		srv, err := h.serve("0.0.0.0:8080", h.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
	}
	addVIP(t, n1, 0)
	garp(t, n1)
	cl := NewClient(c, netip.AddrPortFrom(VIP, 8080).String())
	cl.Start()
	defer cl.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cl.WaitFlowing(ctx, time.Now(), 10); err != nil {
		t.Fatal(err)
	}
	const pause = 150 * time.Millisecond
	fault := time.Now()
	delVIP(t, n1)
	time.Sleep(pause)
	addVIP(t, n2, 0)
	garp(t, n2)
	if err := cl.WaitFlowing(ctx, time.Now(), 10); err != nil {
		t.Fatal(err)
	}
	o, err := cl.Outage(fault, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pause %s: measured outage %s", pause, o)
	if o.Gap < pause {
		t.Fatalf("measured outage %s shorter than the %s the VIP was gone", o.Gap, pause)
	}
	if o.Failed == 0 {
		t.Fatal("no failed requests counted during the pause")
	}
	if got := cl.Backends(o.To, time.Now()); got["n2"] == 0 || got["n1"] != 0 {
		t.Fatalf("answers after the move: %v", got)
	}
	mac, state, err := c.Neighbour(VIP)
	if err != nil {
		t.Fatal(err)
	}
	if mac.String() != n2.MAC.String() {
		t.Fatalf("client neighbour for VIP: %s (%s), want n2's %s", mac, state, n2.MAC)
	}
}

func TestSweepStaleRemovesNamespacesOfDeadRuns(t *testing.T) {
	testenv.NeedRoot(t, "builds network namespaces")
	// A pid that cannot be alive: above the kernel's pid_max ceiling.
	name := namePrefix + "-4194305-1-x"
	h, err := newNamedNS(name)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	removed, err := SweepStale()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range removed {
		found = found || r == name
	}
	if !found {
		_ = os.Remove(filepath.Join(netnsDir, name))
		t.Fatalf("stale namespace %s not removed (removed %v)", name, removed)
	}
}

// listen opens a TCP listener inside the host's namespace.
func (h *Host) listen(addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// serve answers HTTP on a listener in the host's namespace like
// bin/demo-backend: GET / gives name+"\n", /readyz 200. It is the stand-in
// backend of the bed's own tests. Close the returned server to stop it.
func (h *Host) serve(addr, name string) (*http.Server, error) {
	ln, err := h.listen(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s in %s: %w", addr, h.NS, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, name) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}
