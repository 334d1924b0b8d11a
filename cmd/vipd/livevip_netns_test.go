//go:build linux

package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/reconcile"
)

// vipIface is the veth interface inOwnNetns sets up; the test's VIPs are
// held on it.
const vipIface = "vipd-admin0"

// liveVIPs edits a test node's config file: its vips line and a frontend
// per VIP, on the same port, beside the loopback frontend "web".
type liveVIPs struct {
	base string // the file as newTestNode wrote it
	port string // every VIP's frontend port
	web  string // the loopback frontend's line
}

func newLiveVIPs(t *testing.T, n *testNode) *liveVIPs {
	t.Helper()
	doc, err := os.ReadFile(n.configPath)
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(freePort(t))
	if err != nil {
		t.Fatal(err)
	}
	return &liveVIPs{base: string(doc), port: port, web: fmt.Sprintf("{name: web, listen: %s, pool: web}", n.frontend)}
}

// doc is the config with these VIPs (YAML flow entries) and their frontends.
func (l *liveVIPs) doc(t *testing.T, vips ...string) string {
	t.Helper()
	frontends := []string{l.web}
	for i, v := range vips {
		addr := strings.TrimSpace(strings.TrimPrefix(strings.Split(v, ",")[0], "{address:"))
		frontends = append(frontends, fmt.Sprintf("{name: vip%d, listen: '%s', pool: web}", i, net.JoinHostPort(addr, l.port)))
	}
	line := "frontends: [" + l.web + "]"
	if !strings.Contains(l.base, line) {
		t.Fatal("test bug: no frontends line in the config")
	}
	doc := strings.Replace(l.base, line, "frontends: ["+strings.Join(frontends, ", ")+"]", 1)
	return doc + "vips: [" + strings.Join(vips, ", ") + "]\n"
}

// vipEntry is a VIP on vipIface with the given lifetime.
func vipEntry(addr string, lifetime time.Duration) string {
	return fmt.Sprintf("{address: %s, interface: %s, lifetime: %s, refresh: 500ms}", addr, vipIface, lifetime)
}

// addrWatch follows this namespace's address notifications for the test's
// VIPs: when each was last added or renewed, deleted, and how often deleted.
type addrWatch struct {
	mu      sync.Mutex
	added   map[string][]time.Time // every notification of the address present
	deleted map[string][]time.Time
}

func watchAddrs(t *testing.T) *addrWatch {
	t.Helper()
	w := &addrWatch{added: map[string][]time.Time{}, deleted: map[string][]time.Time{}}
	ch, done := make(chan netlink.AddrUpdate, 256), make(chan struct{})
	if err := netlink.AddrSubscribe(ch, done); err != nil {
		t.Fatal(err)
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for u := range ch {
			a, _ := netip.AddrFromSlice(u.LinkAddress.IP)
			w.mu.Lock()
			if u.NewAddr {
				w.added[a.String()] = append(w.added[a.String()], time.Now())
			} else {
				w.deleted[a.String()] = append(w.deleted[a.String()], time.Now())
			}
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-finished
	})
	return w
}

// firstAdded is the first notification of addr present after since.
func (w *addrWatch) firstAdded(addr string, since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, at := range w.added[addr] {
		if at.After(since) {
			return at, true
		}
	}
	return time.Time{}, false
}

func (w *addrWatch) deletions(addr string) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.deleted[addr]...)
}

// onInterface reports whether addr is on vipIface now.
func onInterface(t *testing.T, addr string) bool {
	t.Helper()
	link, err := netlink.LinkByName(vipIface)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.String() == addr {
			return true
		}
	}
	return false
}

// vipStatus is the node's /status entry of addr, if it lists it.
func (n *testNode) vipStatus(t *testing.T, addr string) (VIPStatus, bool) {
	t.Helper()
	var st Status
	if n.getJSON(t, "/status", &st) != 200 {
		t.Fatal("no /status")
	}
	for _, v := range st.VIPs {
		if v.Address == addr {
			return v, true
		}
	}
	return VIPStatus{}, false
}

// prober connects through one address again and again, as a client would,
// and counts the connections that got no backend's answer.
type prober struct {
	ok, failed atomic.Int64
	lastErr    atomic.Value
	stop       chan struct{}
	done       chan struct{}
	stopOnce   sync.Once
}

func probe(addr string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if got, err := ask(addr); err != nil || (got != "a" && got != "b") {
				p.failed.Add(1)
				p.lastErr.Store(fmt.Sprintf("answer %q, error %v", got, err))
			} else {
				p.ok.Add(1)
			}
		}
	}()
	return p
}

// end stops the prober and waits for it; safe to call twice.
func (p *prober) end() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
}

// ask makes one connection to addr and returns what the backend said.
func ask(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 16)
	k, err := c.Read(buf)
	return string(buf[:k]), err
}

// On a leader, reloads add a VIP (claimed at once, answering through its
// frontend), change one (released, then claimed with the new settings) and
// remove one (released before the reload returns, its series gone), while
// a client through another VIP sees no failure and that VIP's address is
// never deleted; a reload with a VIP this node cannot hold, or an invalid
// one, changes nothing; the last VIP removed leaves no address behind.
func TestReloadAddsChangesAndRemovesVIPsLive(t *testing.T) {
	if !inOwnNetns(t) {
		return
	}
	const vip1, vip2 = "198.18.0.100", "198.18.0.101"
	n, _ := newTestNode(t, "solo", "bootstrap_expect: 1", fastHealth)
	l := newLiveVIPs(t, n)
	start := l.doc(t, vipEntry(vip1, 3*time.Second))
	if err := os.WriteFile(n.configPath, []byte(start), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(n.configPath)
	if err != nil {
		t.Fatal(err)
	}
	addrs := watchAddrs(t)
	n.start(t, cfg)
	waitFor(t, "VIP1 held", func() bool { v, _ := n.vipStatus(t, vip1); return v.Held && v.Holder == "solo" })
	client := probe(net.JoinHostPort(vip1, l.port))
	defer client.end()
	waitFor(t, "the client through VIP1 answered", func() bool { return client.ok.Load() > 0 })

	reload := func(what, doc string, wantCode int, wantResult reconcile.Outcome) (time.Time, time.Duration) {
		t.Helper()
		sent := time.Now()
		code, res := n.reloadFile(t, doc)
		took := time.Since(sent)
		if code != wantCode || (wantCode == 200 && res.Result != wantResult) {
			t.Fatalf("%s: HTTP %d %+v, want %d %s", what, code, res, wantCode, wantResult)
		}
		return sent, took
	}

	// Add VIP2.
	sent, took := reload("add VIP2", l.doc(t, vipEntry(vip1, 3*time.Second), vipEntry(vip2, 3*time.Second)), 200, reconcile.Applied)
	waitFor(t, "VIP2 held", func() bool { v, _ := n.vipStatus(t, vip2); return v.Held && v.Holder == "solo" })
	// The kernel's notification may reach the watch after /status says held.
	waitFor(t, "VIP2's address added", func() bool { _, ok := addrs.firstAdded(vip2, sent); return ok })
	claimed, _ := addrs.firstAdded(vip2, sent)
	t.Logf("add: reload sent to VIP2's address added %v (the reload answered after %v)", claimed.Sub(sent), took)
	if got, err := ask(net.JoinHostPort(vip2, l.port)); err != nil || (got != "a" && got != "b") {
		t.Fatalf("through VIP2: %q %v, want a backend's answer", got, err)
	}

	// Change VIP2's lifetime: released, then claimed anew.
	sent, _ = reload("change VIP2", l.doc(t, vipEntry(vip1, 3*time.Second), vipEntry(vip2, 4*time.Second)), 200, reconcile.Applied)
	waitFor(t, "VIP2 held again", func() bool { v, _ := n.vipStatus(t, vip2); return v.Held })
	waitFor(t, "VIP2's address deleted and added again", func() bool {
		dels := addrs.deletions(vip2)
		if len(dels) == 0 {
			return false
		}
		_, ok := addrs.firstAdded(vip2, dels[len(dels)-1])
		return ok
	})
	dels := addrs.deletions(vip2)
	if len(dels) != 1 || dels[0].Before(sent) {
		t.Fatalf("VIP2 deleted at %v, want once, by the change", dels)
	}
	back, ok := addrs.firstAdded(vip2, dels[0])
	if !ok {
		t.Fatal("VIP2 not added again after the change released it")
	}
	t.Logf("change: VIP2 without its address for %v", back.Sub(dels[0]))
	if lft := n.metric(t, "vipd_vip_claims_total", "address", vip2); lft != 1 {
		t.Errorf("VIP2's claims after the change = %v, want 1: a changed VIP's series start afresh", lft)
	}

	// A VIP on an interface this node lacks, and an invalid VIP: nothing
	// changes, not even the backend the same files drop.
	digest := n.digest(t)
	oneBackend := func(doc string) string {
		return strings.Replace(doc, fmt.Sprintf("{address: %s}, {address: %s}", n.backends[0], n.backends[1]), fmt.Sprintf("{address: %s}", n.backends[0]), 1)
	}
	for _, c := range []struct {
		what, vip, key string
		code           int
	}{
		{"a VIP on a missing interface", "{address: 198.18.0.102, interface: vipd-nosuch0}", "vips[2].interface", 500},
		{"an invalid VIP address", "{address: 198.18.0.300, interface: " + vipIface + "}", "vips[2].address", 400},
	} {
		doc := oneBackend(l.doc(t, vipEntry(vip1, 3*time.Second), vipEntry(vip2, 4*time.Second), c.vip))
		code, res := n.reloadFile(t, doc)
		if code != c.code || !strings.Contains(res.Error, c.key) {
			t.Errorf("%s: HTTP %d %q, want %d naming %s", c.what, code, res.Error, c.code, c.key)
		}
		if got := len(n.backendsOf(t)); got != 2 || n.digest(t) != digest {
			t.Errorf("%s: %d backends, digest %s (was %s): the reload changed something", c.what, got, n.digest(t), digest)
		}
		if _, listed := n.vipStatus(t, "198.18.0.102"); listed {
			t.Errorf("%s: the refused VIP is listed in /status", c.what)
		}
	}

	// Remove VIP2: its address is gone when the reload answers.
	reload("remove VIP2", l.doc(t, vipEntry(vip1, 3*time.Second)), 200, reconcile.Applied)
	if onInterface(t, vip2) {
		t.Fatal("VIP2 still on the interface when the reload that removed it answered")
	}
	if _, listed := n.vipStatus(t, vip2); listed {
		t.Error("VIP2 still listed in /status after its removal")
	}
	n.eachSeries(t, "vipd_vip_held", func(labels map[string]string, _ float64) {
		if labels["address"] == vip2 {
			t.Error("VIP2's series still exported after its removal")
		}
	})

	// VIP1 went through all of it untouched.
	client.end()
	if f := client.failed.Load(); f != 0 {
		t.Errorf("the client through VIP1 failed %d of %d times while VIP2 came, changed and went; last: %v", f, f+client.ok.Load(), client.lastErr.Load())
	}
	t.Logf("client through VIP1: %d answers, %d failures", client.ok.Load(), client.failed.Load())
	if d := addrs.deletions(vip1); len(d) != 0 {
		t.Errorf("VIP1's address was deleted at %v while other VIPs changed", d)
	}
	if c, r := n.metric(t, "vipd_vip_claims_total", "address", vip1), n.metric(t, "vipd_vip_restores_total", "address", vip1); c != 1 || r != 0 {
		t.Errorf("VIP1 claimed %v times, restored %v times; want 1 and 0", c, r)
	}

	// The last VIP removed: nothing left on the interface.
	reload("remove VIP1", l.doc(t), 200, reconcile.Applied)
	if onInterface(t, vip1) {
		t.Fatal("VIP1 still on the interface when the reload that removed it answered")
	}
	var st Status
	if n.getJSON(t, "/status", &st) != 200 || len(st.VIPs) != 0 {
		t.Errorf("/status vips = %+v, want none", st.VIPs)
	}
}
