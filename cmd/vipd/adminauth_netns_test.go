//go:build linux

package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zapcore"
)

// nonLoopback is an address that is not loopback: it lives on a veth
// interface in a network namespace the test creates.
const nonLoopback = "198.18.0.1"

const netnsTestEnv = "VIPD_TEST_IN_NETNS"

// inOwnNetns runs the calling test again, in a child process inside a new
// network namespace where lo is up and nonLoopback/24 is on one end of a
// veth pair. It returns true in the child, which runs the test's body, and
// false in the parent once the child passed.
func inOwnNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsTestEnv) == t.Name() {
		for _, step := range []func() error{
			func() error {
				lo, err := netlink.LinkByName("lo")
				if err != nil {
					return err
				}
				return netlink.LinkSetUp(lo)
			},
			func() error { // a veth pair: no module beyond what the e2e bed needs
				veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vipd-admin0"}, PeerName: "vipd-admin1"}
				if err := netlink.LinkAdd(veth); err != nil {
					return err
				}
				addr, err := netlink.ParseAddr(nonLoopback + "/24")
				if err != nil {
					return err
				}
				if err := netlink.AddrAdd(veth, addr); err != nil {
					return err
				}
				peer, err := netlink.LinkByName("vipd-admin1")
				if err != nil {
					return err
				}
				if err := netlink.LinkSetUp(peer); err != nil {
					return err
				}
				return netlink.LinkSetUp(veth)
			},
		} {
			if err := step(); err != nil {
				t.Fatalf("set up the test's network namespace: %v", err)
			}
		}
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs in a network namespace of its own, with " + nonLoopback + " on a veth interface")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), netnsTestEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("in its own network namespace: %v\n%s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "--- ") || strings.Contains(line, "_test.go:") {
			t.Logf("in its own network namespace: %s", strings.TrimSpace(line))
		}
	}
	return false
}

// freePortOn returns an address on host that was free a moment ago.
func freePortOn(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// An admin API on a non-loopback address: without authentication the daemon
// refuses to start and says what to set; admin.insecure starts it with a
// warning; with a token, reads are closed by default and every mutating call
// is refused without it.
func TestNonLoopbackAdminNeedsAuthentication(t *testing.T) {
	if !inOwnNetns(t) {
		return
	}
	t.Run("refuses to start without authentication", func(t *testing.T) {
		addr := freePortOn(t, nonLoopback)
		path := filepath.Join(t.TempDir(), "vipd.yaml")
		doc := fmt.Sprintf("cluster: {raft_bind: %s, gossip_bind: %s, data_dir: %s}\nadmin: {listen: %s}\n",
			freePort(t), freePort(t), t.TempDir(), addr)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errOut strings.Builder
		exit := make(chan int, 1)
		go func() { exit <- run([]string{"--config", path}, &out, &errOut) }()
		select {
		case code := <-exit:
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("vipd started with an open admin API on " + addr)
		}
		for _, w := range []string{"admin.listen", addr, "admin.token_file", "admin.tls", "client_ca_file", "admin.insecure"} {
			if !strings.Contains(errOut.String(), w) {
				t.Errorf("the error does not mention %q: %s", w, errOut.String())
			}
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("something listens on %s after the refused start", addr)
		}
	})
	t.Run("insecure starts open and warns", func(t *testing.T) {
		n := startNode(t, fastHealth, fmt.Sprintf("admin: {listen: %s, insecure: true, open_reads: true}", freePortOn(t, nonLoopback)))
		warned := false
		for _, e := range n.logs.FilterLevelExact(zapcore.WarnLevel).All() {
			if e.ContextMap()["listen"] == n.admin {
				warned = true
			}
		}
		if !warned {
			t.Error("no warning naming the open admin listener at start")
		}
		if code, out := plainCaller.call("POST", n.admin, "/v1/drain", callBodies(n)["/v1/drain"]); code != 200 {
			t.Errorf("drain on the insecure admin API: HTTP %d %s", code, out)
		}
	})
	t.Run("a token closes reads by default and guards every mutating call", func(t *testing.T) {
		n, cfg := newTestNode(t, "solo", "bootstrap_expect: 1", fastHealth, fmt.Sprintf("admin: {listen: %s, token_file: %s}", freePortOn(t, nonLoopback), writeSecret(t, testToken, 0o600)))
		if cfg.Admin.OpenReads {
			t.Fatal("open_reads defaults to true on a non-loopback listener")
		}
		n.caller = plainCaller.withToken(testToken)
		n.start(t, cfg)
		for _, path := range []string{"/status", "/metrics", "/healthz", "/readyz"} {
			if code, _ := plainCaller.call("GET", n.admin, path, ""); code != http.StatusUnauthorized {
				t.Errorf("GET %s without the token: HTTP %d, want 401", path, code)
			}
		}
		bodies := callBodies(n)
		for _, route := range mutatingRoutes(t) {
			method, path, _ := strings.Cut(route, " ")
			if code, out := plainCaller.call(method, n.admin, path, bodies[path]); code != http.StatusUnauthorized {
				t.Errorf("%s without the token: HTTP %d %s, want 401", route, code, out)
			}
		}
		requireUnchanged(t, n)
		if code, out := n.caller.call("POST", n.admin, "/v1/drain", bodies["/v1/drain"]); code != 200 {
			t.Errorf("drain with the token: HTTP %d %s", code, out)
		}
	})
}
