package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vipd/vipd/reconcile"
)

// holdingBackend sends its name and keeps the connection open until the
// peer closes it.
func holdingBackend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.WriteString(c, name)
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.Copy(io.Discard, c)
			})
		}
	})
	return ln.Addr().String()
}

// withBackends is the node's config file with the web pool's backends
// replaced by addrs.
func (n *testNode) withBackends(t *testing.T, addrs ...string) string {
	t.Helper()
	orig, err := os.ReadFile(n.configPath)
	if err != nil {
		t.Fatal(err)
	}
	var list []string
	for _, a := range addrs {
		list = append(list, "{address: "+a+"}")
	}
	s := string(orig)
	start := strings.Index(s, "    backends: [")
	end := strings.Index(s[start:], "]\n")
	if start < 0 || end < 0 {
		t.Fatal("test bug: no backends line in the config")
	}
	return s[:start] + "    backends: [" + strings.Join(list, ", ") + s[start+end:]
}

// reloadFile writes doc as the node's config file and reloads it through
// POST /v1/reload.
func (n *testNode) reloadFile(t *testing.T, doc string) (int, reconcile.Result) {
	t.Helper()
	if err := os.WriteFile(n.configPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, body := n.post(t, "/v1/reload", "")
	var res reconcile.Result
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &res); err != nil {
			t.Fatalf("reload answer %q: %v", body, err)
		}
	} else {
		res.Error = body
	}
	return code, res
}

func (n *testNode) backendsOf(t *testing.T) map[string]BackendStatus {
	t.Helper()
	var st Status
	if n.getJSON(t, "/status", &st) != 200 {
		t.Fatal("no /status")
	}
	out := map[string]BackendStatus{}
	for _, p := range st.Pools {
		for _, b := range p.Backends {
			out[b.Address] = b
		}
	}
	return out
}

func (n *testNode) digest(t *testing.T) string {
	t.Helper()
	var st Status
	if n.getJSON(t, "/status", &st) != 200 {
		t.Fatal("no /status")
	}
	return st.ConfigDigest
}

// A reload that replaces a pool's backends leaves a relaying connection on
// its old backend until node.shutdown_grace (1s here), then closes it; new
// connections go to the new backend at once.
func TestReloadReplacesBackendsAndDrainsTheOldOnes(t *testing.T) {
	n := startNode(t, "{type: none}")
	old := holdingBackend(t, "old")
	newer, _ := namedBackend(t, "new")
	digest0 := n.digest(t)
	if code, res := n.reloadFile(t, n.withBackends(t, old)); code != 200 || res.Result != reconcile.Applied {
		t.Fatalf("reload to the old backend: %d %+v", code, res)
	}
	live, err := net.DialTimeout("tcp", n.frontend, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	buf := make([]byte, 3)
	live.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(live, buf); err != nil || string(buf) != "old" {
		t.Fatalf("live connection read %q, %v", buf, err)
	}

	code, res := n.reloadFile(t, n.withBackends(t, newer))
	if code != 200 || res.Result != reconcile.Applied || res.ConfigDigest == digest0 || res.ConfigDigest != n.digest(t) {
		t.Fatalf("reload to the new backend: %d %+v (digest at start %s, /status %s)", code, res, digest0, n.digest(t))
	}
	if got := n.answer(t); got != "new" {
		t.Errorf("a new connection after the reload reached %q, want new", got)
	}
	if _, ok := n.backendsOf(t)[old]; ok {
		t.Error("the removed backend is still in /status")
	}
	// Still open within the grace: a write goes through and a short read times out.
	if _, err := live.Write([]byte("x")); err != nil {
		t.Fatalf("live connection closed at the reload: %v", err)
	}
	live.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := live.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("live connection within the grace: %v, want it open", err)
	}
	// Then closed once shutdown_grace ran out.
	live.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := live.Read(buf); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("live connection after the grace: %v, want it closed", err)
	}
}

// Ten reloads through SIGHUP while clients open new connections without a
// pause: not one is refused or reset, and each reload is applied. The
// reloads swap a backend in and out; a connection to a removed one may
// finish for shutdown_grace, long enough here for any under load. Checks
// are off (type none): on this shared machine a 100ms check times out under
// load and takes both backends down, which is not what this test is about.
func TestTenReloadsUnderLoadRefuseNoConnection(t *testing.T) {
	n := startNode(t, "{type: none}")
	third, _ := namedBackend(t, "c")
	var docs []string
	for _, set := range [][]string{{n.backends[0], third}, {n.backends[0], n.backends[1]}} {
		doc := strings.Replace(n.withBackends(t, set...), "shutdown_grace: 1s", "shutdown_grace: 10s", 1)
		if !strings.Contains(doc, "shutdown_grace: 10s") {
			t.Fatal("test bug: the grace edit did not apply")
		}
		docs = append(docs, doc)
	}

	stop := make(chan struct{})
	var ok, failed atomic.Int64
	var errMu sync.Mutex
	var firstErr error // guarded by errMu
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", n.frontend, 2*time.Second)
				if err == nil {
					c.SetDeadline(time.Now().Add(2 * time.Second))
					var data []byte
					data, err = io.ReadAll(c)
					c.Close()
					if err == nil && len(data) == 0 {
						err = errors.New("empty answer")
					}
				}
				if err != nil {
					if failed.Add(1) == 1 {
						errMu.Lock()
						firstErr = err
						errMu.Unlock()
					}
					continue
				}
				ok.Add(1)
			}
		})
	}
	start := time.Now()
	for i := range 10 {
		if err := os.WriteFile(n.configPath, []byte(docs[i%2]), 0o600); err != nil {
			t.Fatal(err)
		}
		n.hup <- syscall.SIGHUP
		waitFor(t, "reload applied", func() bool {
			return n.metric(t, "vipd_config_reloads_total", "result", "applied") == float64(i+1)
		})
		before := ok.Load()
		waitFor(t, "connections after the reload", func() bool { return ok.Load() > before+20 })
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("10 reloads in %s: %d connections (%.0f/s), %d failed", elapsed.Round(time.Millisecond), ok.Load(), float64(ok.Load())/elapsed.Seconds(), failed.Load())
	if failed.Load() != 0 {
		errMu.Lock()
		t.Errorf("%d connections failed across the reloads, first: %v", failed.Load(), firstErr)
		errMu.Unlock()
	}
}

// A file that does not validate changes nothing: the answer names the key
// and its line, the metric counts it, traffic goes on.
func TestInvalidReloadChangesNothing(t *testing.T) {
	n := startNode(t, fastHealth)
	digest := n.digest(t)
	orig, err := os.ReadFile(n.configPath)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(n.withBackends(t, n.backends[0]), "    health:", "    algorithm: fastest\n    health:", 1)
	code, res := n.reloadFile(t, bad)
	if code != 400 || !strings.Contains(res.Error, "pools[0].algorithm") || !strings.Contains(res.Error, "line ") {
		t.Fatalf("invalid reload: %d %q, want 400 naming pools[0].algorithm and its line", code, res.Error)
	}
	if got := n.metric(t, "vipd_config_reloads_total", "result", "invalid"); got != 1 {
		t.Errorf("reloads{invalid} = %v", got)
	}
	if len(n.backendsOf(t)) != 2 || n.digest(t) != digest {
		t.Errorf("after an invalid reload: backends %v, digest %s (was %s)", n.backendsOf(t), n.digest(t), digest)
	}
	if got := n.answer(t); got != "a" && got != "b" {
		t.Errorf("frontend after an invalid reload answered %q", got)
	}
	if code, res := n.reloadFile(t, string(orig)); code != 200 || res.Result != reconcile.Unchanged {
		t.Errorf("the original file again: %d %+v", code, res)
	}
}

// A reload that changes a key only a restart can apply is refused naming
// it, and nothing else in the same file is applied.
func TestRestartOnlyKeysRefuseTheWholeReload(t *testing.T) {
	n := startNode(t, fastHealth)
	oneBackend := n.withBackends(t, n.backends[0])
	for _, c := range []struct{ key, from, to string }{
		{"cluster.raft_bind", "raft_bind: " + n.raft, "raft_bind: " + freePort(t)},
		{"node.name", "name: solo", "name: other"},
	} {
		doc := strings.Replace(oneBackend, c.from, c.to, 1)
		if doc == oneBackend {
			t.Fatalf("test bug: %s edit did not apply", c.key)
		}
		code, res := n.reloadFile(t, doc)
		if code != 400 || !strings.Contains(res.Error, c.key) {
			t.Errorf("%s changed: %d %q, want 400 naming it", c.key, code, res.Error)
		}
		if got := len(n.backendsOf(t)); got != 2 {
			t.Errorf("%s changed: %d backends run, want the 2 of before", c.key, got)
		}
	}
	if got := n.metric(t, "vipd_config_restart_pending"); got != 1 {
		t.Errorf("restart pending = %v after refused reloads", got)
	}
	if got := n.metric(t, "vipd_config_reloads_total", "result", "refused"); got != 2 {
		t.Errorf("reloads{refused} = %v", got)
	}
}

// A backend that stays keeps its health record. Backend b dies and is
// marked down by the proxy's failed connects; checks are an hour apart and
// new backends start healthy, so a fresh record would show b up again.
func TestHealthOfUnchangedBackendsSurvivesAReload(t *testing.T) {
	n := startNode(t, "{type: tcp, interval: 1h, rise: 1, fall: 1, initial: healthy}")
	n.killBackend[1]()
	waitFor(t, "b marked down by failed connects", func() bool {
		n.answer(t)
		return !n.backendsOf(t)[n.backends[1]].Healthy
	})
	before := n.backendsOf(t)
	third, _ := namedBackend(t, "c")
	if code, res := n.reloadFile(t, n.withBackends(t, n.backends[0], n.backends[1], third)); code != 200 || res.Result != reconcile.Applied {
		t.Fatalf("reload: %d %+v", code, res)
	}
	after := n.backendsOf(t)
	for _, a := range n.backends {
		if after[a].Healthy != before[a].Healthy || len(after[a].Transitions) != len(before[a].Transitions) {
			t.Errorf("backend %s: healthy %v with %d transitions before the reload, %v with %d after",
				a, before[a].Healthy, len(before[a].Transitions), after[a].Healthy, len(after[a].Transitions))
		}
	}
	if c, ok := after[third]; !ok || !c.Healthy {
		t.Errorf("the new backend in /status: %+v (present %v), want it in its initial state, healthy", c, ok)
	}
}

// The digest of the running config travels in gossip: every member's
// config_digest follows a reload.
func TestMembersGossipTheirConfigDigest(t *testing.T) {
	n := startNode(t, fastHealth)
	third, _ := namedBackend(t, "c")
	if code, res := n.reloadFile(t, n.withBackends(t, third)); code != 200 || res.Result != reconcile.Applied {
		t.Fatalf("reload: %d %+v", code, res)
	}
	waitFor(t, "the member's gossiped digest to follow the reload", func() bool {
		var st Status
		return n.getJSON(t, "/status", &st) == 200 && len(st.Members) == 1 && st.Members[0].ConfigDigest == st.ConfigDigest
	})
}

// systemd sees RELOADING=1 then READY=1 around a reload.
func TestSystemdSeesReloadingThenReady(t *testing.T) {
	sock := listenNotify(t)
	n := startNode(t, fastHealth)
	ready := sock.waitMessage(t, "READY=1 at start", isLine("READY=1"))
	third, _ := namedBackend(t, "c")
	if code, res := n.reloadFile(t, n.withBackends(t, third)); code != 200 || res.Result != reconcile.Applied {
		t.Fatalf("reload: %d %+v", code, res)
	}
	reloading := sock.waitMessage(t, "RELOADING=1", isLine("RELOADING=1"))
	if reloading < ready || !strings.Contains(sock.messages()[reloading], "\nMONOTONIC_USEC=") {
		t.Fatalf("RELOADING=1 at %d (READY=1 at %d): %q", reloading, ready, sock.messages())
	}
	waitFor(t, "READY=1 after RELOADING=1", func() bool {
		for _, m := range sock.messages()[reloading+1:] {
			if strings.HasPrefix(m, "READY=1") {
				return true
			}
		}
		return false
	})
}

// The replicated drain intent follows the backend set: a drained backend
// that a reload removes and a later reload lists again is drained again,
// though the balancer gives a new backend no drain mark of its own.
func TestDrainIntentIsReappliedAfterAReload(t *testing.T) {
	n := startNode(t, fastHealth)
	drained := n.backends[1]
	if code, out := n.post(t, "/v1/drain", fmt.Sprintf(`{"pool":"web","backend":%q}`, drained)); code != 200 {
		t.Fatalf("drain: HTTP %d %s", code, out)
	}
	waitFor(t, "drain applied", func() bool { return n.backendsOf(t)[drained].Drained })
	if code, res := n.reloadFile(t, n.withBackends(t, n.backends[0])); code != 200 || res.Result != reconcile.Applied {
		t.Fatalf("reload without b: %d %+v", code, res)
	}
	if code, res := n.reloadFile(t, n.withBackends(t, n.backends[0], drained)); code != 200 || res.Result != reconcile.Applied {
		t.Fatalf("reload with b again: %d %+v", code, res)
	}
	waitFor(t, "b drained again after the reload", func() bool { return n.backendsOf(t)[drained].Drained })
	for i := range 4 {
		if got := n.answer(t); got != "a" {
			t.Fatalf("connection %d went to %q; b is drained", i, got)
		}
	}
}
