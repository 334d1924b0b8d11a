package vip

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vipd/vipd/internal/testenv"
)

// Test bed: three network namespaces. "nbr" (the neighbour) owns bridge br0
// with 198.18.0.1/24 and 2001:2::1/64; nodes "a" and "b" each have eth0
// (198.18.0.2 and .3, 2001:2::2 and ::3), a veth whose peer is a port of br0.
// Addresses are only 198.18.0.0/15 and, for IPv6, the benchmarking prefix
// 2001:2::/48, and only inside these namespaces.

var (
	vip4 = netip.MustParseAddr("198.18.0.100")
	vip6 = netip.MustParseAddr("2001:2::100")
)

// families runs a test once per address family.
// ownA and ownB are nodes a's and b's own addresses in the family, and
// bits the family's subnet prefix.
var families = []struct {
	name       string
	vip        netip.Addr
	ownA, ownB netip.Addr
	bits       int
}{
	{"ipv4", vip4, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"), 24},
	{"ipv6", vip6, netip.MustParseAddr("2001:2::2"), netip.MustParseAddr("2001:2::3"), 64},
}

func needRoot(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "builds network namespaces, a bridge and veth links")
	testenv.NeedProgram(t, "ip", "iproute2's ip starts the helpers in a namespace")
}

var nsSeq atomic.Int64

// node is one namespace of the test bed.
type node struct {
	name   string // named namespace, for "ip netns exec"
	ns     netns.NsHandle
	h      *netlink.Handle
	ifname string
	mac    net.HardwareAddr
}

type testbed struct{ nbr, a, b *node }

// inNS runs fn on a locked OS thread switched into ns (netns.None(): left
// where it is, for fn to switch). The thread's namespace is restored after;
// if that fails it stays locked, so Go discards it with the goroutine.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if ns.IsOpen() {
			if err := netns.Set(ns); err != nil {
				runtime.UnlockOSThread()
				errc <- err
				return
			}
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restore namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func newNode(t *testing.T, role, ifname string) *node {
	t.Helper()
	n := &node{name: fmt.Sprintf("vipt-%d-%d-%s", os.Getpid(), nsSeq.Add(1), role), ifname: ifname}
	err := inNS(netns.None(), func() error { // NewNamed switches the thread: do it on a throwaway one
		ns, err := netns.NewNamed(n.name)
		n.ns = ns
		return err
	})
	if err != nil {
		t.Fatalf("create namespace %s: %v", n.name, err)
	}
	t.Cleanup(func() {
		n.ns.Close()
		if err := netns.DeleteNamed(n.name); err != nil {
			t.Errorf("delete namespace %s: %v", n.name, err)
		}
	})
	if n.h, err = netlink.NewHandleAt(n.ns); err != nil {
		t.Fatalf("netlink handle in %s: %v", n.name, err)
	}
	t.Cleanup(n.h.Close)
	lo, err := n.h.LinkByName("lo")
	must(t, err)
	must(t, n.h.LinkSetUp(lo))
	return n
}

// addAddr adds a permanent address (IPv6 without DAD) to n's interface.
func (n *node) addAddr(t *testing.T, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	must(t, err)
	if a.IP.To4() == nil {
		a.Flags = unix.IFA_F_NODAD
	}
	must(t, n.h.AddrAdd(n.link(t), a))
}

func (n *node) link(t *testing.T) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(n.ifname)
	if err != nil {
		t.Fatalf("%s in %s: %v", n.ifname, n.name, err)
	}
	return l
}

func newTestbed(t *testing.T) *testbed {
	t.Helper()
	needRoot(t)
	tb := &testbed{nbr: newNode(t, "nbr", "br0"), a: newNode(t, "a", "eth0"), b: newNode(t, "b", "eth0")}
	off := false
	must(t, tb.nbr.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}, MulticastSnooping: &off}))
	br := tb.nbr.link(t)
	for i, n := range []*node{tb.a, tb.b} {
		tb.plug(t, n, i)
	}
	tb.nbr.addAddr(t, "198.18.0.1/24")
	tb.nbr.addAddr(t, "2001:2::1/64")
	must(t, tb.nbr.h.LinkSetUp(br))
	return tb
}

// plug connects n (the i-th node) to the bridge with a new veth pair whose
// end in n is eth0, with n's own addresses, and brings it up.
func (tb *testbed) plug(t *testing.T, n *node, i int) {
	t.Helper()
	port := "p" + n.name[strings.LastIndex(n.name, "-")+1:]
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(n.ns))}
	if err := tb.nbr.h.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", port, err)
	}
	p, err := tb.nbr.h.LinkByName(port)
	must(t, err)
	must(t, tb.nbr.h.LinkSetMaster(p, tb.nbr.link(t)))
	must(t, tb.nbr.h.LinkSetUp(p))
	n.addAddr(t, fmt.Sprintf("198.18.0.%d/24", 2+i))
	n.addAddr(t, fmt.Sprintf("2001:2::%d/64", 2+i))
	must(t, n.h.LinkSetUp(n.link(t)))
	n.mac = n.link(t).Attrs().HardwareAddr
}

// addrOf returns ip as configured on n's interface, or nil.
func (n *node) addrOf(t *testing.T, ip netip.Addr) *netlink.Addr {
	t.Helper()
	addrs, err := n.h.AddrList(n.link(t), netlink.FAMILY_ALL)
	must(t, err)
	for _, a := range addrs {
		if got, _ := netip.AddrFromSlice(a.IP); got.Unmap() == ip {
			return &a
		}
	}
	return nil
}

// countDeletions follows n's address notifications until the test ends
// and returns a function that counts the deletions of ip seen so far.
func (n *node) countDeletions(t *testing.T, ip netip.Addr) func() int {
	t.Helper()
	ch := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	ns := n.ns
	must(t, netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: &ns}))
	var deleted atomic.Int64
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for u := range ch {
			if a, ok := netip.AddrFromSlice(u.LinkAddress.IP); ok && !u.NewAddr && a.Unmap() == ip {
				deleted.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-finished
	})
	return func() int { return int(deleted.Load()) }
}

// neighMAC is the link-layer address n's neighbour table has for ip, or nil.
func (n *node) neighMAC(t *testing.T, ip netip.Addr) net.HardwareAddr {
	t.Helper()
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := n.h.NeighList(n.link(t).Attrs().Index, family)
	must(t, err)
	for _, ne := range neighs {
		if ne.IP.Equal(ip.AsSlice()) && ne.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
			return ne.HardwareAddr
		}
	}
	return nil
}

// sendUDP sends one datagram from n to ip:9, which makes n resolve ip.
func (n *node) sendUDP(t *testing.T, ip netip.Addr) {
	t.Helper()
	err := inNS(n.ns, func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 9)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("vipd test"))
		return err
	})
	if err != nil {
		t.Fatalf("send from %s to %s: %v", n.name, ip, err)
	}
}

// eventually polls cond every 10ms until it holds and returns how long that
// took; after timeout (a bound against hanging, not a performance limit) the
// test fails with what.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// child is a helper process (TestHelperProcess) running a Manager inside a
// namespace. It reports what the Manager does as helperEvents on stdout,
// derived from the Manager's callbacks, Status, LinkUp and metrics; its logs
// go to stderr and are only shown when a test fails, so no test depends on
// their wording.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser // commands of mode "live"; closed by stop
	events chan helperEvent
	exit   chan error // the exit status, once stdout is drained

	mu  sync.Mutex
	out strings.Builder // everything it printed, for failure messages
}

// startChild runs the helper in n with one VIP on n's interface, optionally
// behind a wrapper command (setpriv) that runs between "ip netns exec" and
// the helper.
func startChild(t *testing.T, n *node, mode string, vip netip.Addr, wrapper ...string) *child {
	t.Helper()
	exe, err := os.Executable()
	must(t, err)
	args := append([]string{"netns", "exec", n.name}, wrapper...)
	args = append(args, exe, "-test.run=^TestHelperProcess$")
	c := &child{cmd: exec.Command("ip", args...), events: make(chan helperEvent, 10000), exit: make(chan error, 1)}
	c.cmd.Env = append(os.Environ(), "VIPD_VIP_HELPER="+mode, "VIPD_VIP_ADDR="+vip.String(), "VIPD_VIP_IF="+n.ifname)
	stdout, err := c.cmd.StdoutPipe()
	must(t, err)
	c.stdin, err = c.cmd.StdinPipe()
	must(t, err)
	c.cmd.Stderr = &lockedWriter{c: c}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start helper in %s: %v", n.name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			c.mu.Lock()
			c.out.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			var e helperEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Event != "" {
				c.events <- e
			}
		}
		close(c.events)
		c.exit <- c.cmd.Wait()
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exit
		if t.Failed() {
			t.Logf("helper in %s printed:\n%s", n.name, c.output())
		}
	})
	return c
}

// lockedWriter adds the helper's stderr (its logs) to the child's output.
type lockedWriter struct{ c *child }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	return w.c.out.Write(p)
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// waitFor returns the next event (skipping others) for which match is true;
// the test fails if none comes within timeout or the helper exits first.
func (c *child) waitFor(t *testing.T, what string, timeout time.Duration, match func(helperEvent) bool) helperEvent {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case e, ok := <-c.events:
			if !ok {
				t.Fatalf("helper exited before %s", what)
			}
			if match(e) {
				return e
			}
		case <-deadline.C:
			t.Fatalf("helper: not %s within %s", what, timeout)
		}
	}
}

// waitMetric waits for a state in which the VIP's series name has reached
// at least min.
func (c *child) waitMetric(t *testing.T, name string, min float64, timeout time.Duration) helperEvent {
	t.Helper()
	return c.waitFor(t, fmt.Sprintf("%s >= %g", name, min), timeout, func(e helperEvent) bool {
		return e.Metrics[name] >= min
	})
}

// waitAnnounced waits for the first announcement of the VIP.
func (c *child) waitAnnounced(t *testing.T) helperEvent {
	t.Helper()
	return c.waitMetric(t, "vipd_vip_announcements_total", 1, 10*time.Second)
}

// waitReturned waits for the helper's Hold (or RemoveStale) to return.
func (c *child) waitReturned(t *testing.T) helperEvent {
	t.Helper()
	return c.waitFor(t, "returned", 10*time.Second, func(e helperEvent) bool { return e.Event == eventReturned })
}

// send writes one command to a helper of mode "live".
func (c *child) send(t *testing.T, command string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, command+"\n"); err != nil {
		t.Fatalf("send %q to the helper: %v", command, err)
	}
}

// stop closes stdin, sends SIGTERM and waits for a clean exit (which
// includes the child's own goroutine leak check).
func (c *child) stop(t *testing.T) {
	t.Helper()
	c.stdin.Close()
	must(t, c.cmd.Process.Signal(syscall.SIGTERM))
	c.waitExit(t)
}

func (c *child) waitExit(t *testing.T) {
	t.Helper()
	for range c.events { // drain so the reader can finish
	}
	if err := <-c.exit; err != nil {
		t.Fatalf("helper exit: %v", err)
	}
	c.exit <- nil // for the cleanup
}

// kill sends SIGKILL: the helper dies without releasing anything.
func (c *child) kill(t *testing.T) {
	t.Helper()
	must(t, c.cmd.Process.Signal(syscall.SIGKILL))
	for range c.events {
	}
	err := <-c.exit
	c.exit <- err
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("killed helper: %v", err)
	}
}
