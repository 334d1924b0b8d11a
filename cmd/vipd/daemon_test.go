package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/vipd/vipd/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// freePort returns a loopback address that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// namedBackend answers every connection with its name and closes. Closing
// its listener (stop) makes it a dead backend: connects are refused.
func namedBackend(t testing.TB, name string) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, name)
			c.Close()
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }
}

type testNode struct {
	d               *daemon
	frontend, admin string
	raft, gossip    string
	backends        []string
	killBackend     []func()
	stop            func() error
	configPath      string         // the file the daemon was started from
	hup             chan os.Signal // stands in for SIGHUP
}

const fastHealth = "{type: tcp, interval: 100ms, rise: 1, fall: 1, initial: healthy}"

// startNode runs a single-node daemon on loopback, in process, with two
// backends "a" and "b" checked as health says.
func startNode(t testing.TB, health string) *testNode {
	t.Helper()
	n := &testNode{frontend: freePort(t), admin: freePort(t), raft: freePort(t), gossip: freePort(t)}
	for _, name := range []string{"a", "b"} {
		addr, kill := namedBackend(t, name)
		n.backends = append(n.backends, addr)
		n.killBackend = append(n.killBackend, kill)
	}
	doc := fmt.Sprintf(`
node: {name: solo, shutdown_grace: 1s}
cluster: {raft_bind: %s, gossip_bind: %s, bootstrap_expect: 1, data_dir: %s}
frontends: [{name: web, listen: %s, pool: web}]
pools:
  - name: web
    backends: [{address: %s}, {address: %s}]
    health: %s
admin: {listen: %s}
`, n.raft, n.gossip, t.TempDir(), n.frontend, n.backends[0], n.backends[1], health, n.admin)
	n.configPath = filepath.Join(t.TempDir(), "vipd.yaml")
	if err := os.WriteFile(n.configPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(n.configPath)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	d, err := newDaemon(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("newDaemon: %v", err)
	}
	n.hup = make(chan os.Signal)
	d.configPath, d.hup = n.configPath, n.hup
	n.d = d
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.run(ctx) }()
	var once bool
	n.stop = func() error {
		if once {
			return nil
		}
		once = true
		cancel()
		return <-errc
	}
	t.Cleanup(func() { n.stop() })
	waitFor(t, "leader and ready", func() bool {
		var st Status
		return n.getJSON(t, "/status", &st) == 200 && st.Ready && st.State == "leader"
	})
	return n
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *testNode) getJSON(t testing.TB, path string, v any) int {
	t.Helper()
	resp, err := http.Get("http://" + n.admin + path)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v", path, err)
	}
	return resp.StatusCode
}

func (n *testNode) post(t *testing.T, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+n.admin+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return resp.StatusCode, e.Error
	}
	return resp.StatusCode, string(data)
}

// answer makes one connection through the frontend and returns what the
// backend said.
func (n *testNode) answer(t *testing.T) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", n.frontend, time.Second)
	if err != nil {
		t.Fatalf("dial frontend: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	data, _ := io.ReadAll(c)
	return string(data)
}

func TestStatusCarriesTheContractFields(t *testing.T) {
	n := startNode(t, fastHealth)
	resp, err := http.Get("http://" + n.admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	for _, key := range []string{"node", "state", "leader", "term", "vips", "members", "pools"} {
		if _, ok := raw[key]; !ok {
			t.Errorf("/status lacks %q: %v", key, raw)
		}
	}
	var st Status
	n.getJSON(t, "/status", &st)
	if st.Node != "solo" || st.Leader != "solo" || len(st.Members) != 1 || !st.Members[0].Voter {
		t.Errorf("status = %+v", st)
	}
	if len(st.Pools) != 1 || len(st.Pools[0].Backends) != 2 {
		t.Fatalf("pools = %+v", st.Pools)
	}
	for _, b := range st.Pools[0].Backends {
		if !b.Healthy {
			t.Errorf("backend %s not healthy", b.Address)
		}
	}
}

func TestTrafficFlowsAndDrainIsApplied(t *testing.T) {
	n := startNode(t, fastHealth)
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		seen[n.answer(t)]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("round robin over two backends gave %v", seen)
	}
	body := fmt.Sprintf(`{"pool":"web","backend":%q}`, n.backends[0])
	if code, out := n.post(t, "/v1/drain", body); code != 200 {
		t.Fatalf("drain: HTTP %d %s", code, out)
	}
	waitFor(t, "drain applied", func() bool {
		var st Status
		n.getJSON(t, "/status", &st)
		return st.Pools[0].Backends[0].Drained
	})
	for i := 0; i < 6; i++ {
		if got := n.answer(t); got != "b" {
			t.Fatalf("connection %d after draining a went to %q", i, got)
		}
	}
	if code, out := n.post(t, "/v1/undrain", body); code != 200 {
		t.Fatalf("undrain: HTTP %d %s", code, out)
	}
	waitFor(t, "undrain applied", func() bool {
		var st Status
		n.getJSON(t, "/status", &st)
		return !st.Pools[0].Backends[0].Drained
	})
}

func TestBadAdminCallsAreRefusedWithAReason(t *testing.T) {
	n := startNode(t, fastHealth)
	cases := []struct {
		path, body string
		code       int
		want       string
	}{
		{"/v1/drain", `{"pool":"web","backend":"198.18.0.99:1"}`, 400, `no backend "198.18.0.99:1" in pool "web"`},
		{"/v1/drain", `{"pool":"web",`, 400, "request body"},
		{"/v1/drain", `{"pool":"web","backend":"x","colour":1}`, 400, `unknown field "colour"`},
		{"/v1/maintenance", `{"node":"solo"}`, 400, "node and on are required"},
		{"/v1/remove", `{}`, 400, "name is required"},
		{"/v1/drain", strings.Repeat(" ", maxAdminBody+1), 413, "too large"},
	}
	for _, tc := range cases {
		code, out := n.post(t, tc.path, tc.body)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("POST %s %.40q: HTTP %d %s; want %d with %q", tc.path, tc.body, code, out, tc.code, tc.want)
		}
	}
	resp, err := http.Get("http://" + n.admin + "/v1/drain")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/drain: HTTP %d, want 405", resp.StatusCode)
	}
	// Nothing changed.
	var st Status
	n.getJSON(t, "/status", &st)
	if len(st.Intent.Drained) != 0 {
		t.Errorf("bad calls changed the intent: %+v", st.Intent)
	}
}

func TestMetricsExposeProxyCounters(t *testing.T) {
	n := startNode(t, fastHealth)
	n.answer(t)
	resp, err := http.Get("http://" + n.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	io.Copy(&buf, resp.Body)
	for _, name := range []string{"vipd_", "go_goroutines", "process_open_fds"} {
		if !strings.Contains(buf.String(), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestLeaveStopsTheDaemon(t *testing.T) {
	n := startNode(t, fastHealth)
	if code, out := n.post(t, "/v1/leave", ""); code != http.StatusAccepted {
		t.Fatalf("leave: HTTP %d %s", code, out)
	}
	done := make(chan error, 1)
	go func() { done <- n.stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after leave: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop after /v1/leave")
	}
	if _, err := net.DialTimeout("tcp", n.frontend, time.Second); err == nil {
		t.Error("frontend still accepts after leave")
	}
}

func TestCheckFlagValidatesOnly(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--check"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "config ok") {
		t.Errorf("--check of the default: exit %d, %q %q", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"--check", "--config", "/nonexistent.yaml"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "nonexistent.yaml") {
		t.Errorf("--check of a missing file: exit %d, %q", code, errOut.String())
	}
}

// SIGHUP is keepalived's and HAProxy's reload signal. vipd checks the config
// file instead: it says whether a restart would change anything, refuses an
// invalid file, and changes nothing in the running daemon either way.
func TestSIGHUPChecksTheConfigFileAndChangesNothing(t *testing.T) {
	n := startNode(t, fastHealth)
	orig, err := os.ReadFile(n.configPath)
	if err != nil {
		t.Fatal(err)
	}
	weighted := strings.Replace(string(orig), "{address: "+n.backends[1]+"}", "{address: "+n.backends[1]+", weight: 3}", 1)
	if weighted == string(orig) {
		t.Fatal("test bug: the edit did not apply")
	}
	counts := map[configCheck]float64{}
	for _, step := range []struct {
		file    string
		doc     string
		result  configCheck
		pending float64
	}{
		{"the file it started from", string(orig), configUnchanged, 0},
		{"a backend weight edited", weighted, configChanged, 1},
		{"an invalid file", string(orig) + "bogus: 1\n", configInvalid, 1}, // pending stays as it was
		{"the original again", string(orig), configUnchanged, 0},
	} {
		if err := os.WriteFile(n.configPath, []byte(step.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		n.hup <- syscall.SIGHUP
		counts[step.result]++
		waitFor(t, step.file+" checked", func() bool {
			return n.metric(t, "vipd_config_checks_total", "result", string(step.result)) == counts[step.result]
		})
		if got := n.metric(t, "vipd_config_restart_pending", "", ""); got != step.pending {
			t.Errorf("%s: vipd_config_restart_pending = %v, want %v", step.file, got, step.pending)
		}
	}
	var st Status
	if n.getJSON(t, "/status", &st) != 200 || st.State != "leader" || !st.Ready {
		t.Fatalf("after the checks: state %q ready %v", st.State, st.Ready)
	}
	for _, p := range st.Pools {
		for _, b := range p.Backends {
			if b.Weight != 1 {
				t.Errorf("backend %s has weight %d: a SIGHUP changed the running config", b.Address, b.Weight)
			}
		}
	}
	if got := n.answer(t); got == "" {
		t.Error("no answer through the frontend after the checks")
	}
}

func TestChangedSectionsNamesWhatARestartWouldChange(t *testing.T) {
	running, err := config.Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	next, err := config.Parse([]byte("log: {level: debug}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := changedSections(running, running); len(got) != 0 {
		t.Errorf("a config against itself: %v", got)
	}
	if got := strings.Join(changedSections(running, next), ","); got != "log" {
		t.Errorf("log level changed: sections %q, want log", got)
	}
	keyed := *running
	keyed.Cluster.SecretKey = []byte("another key")
	if got := strings.Join(changedSections(running, &keyed), ","); got != "cluster" {
		t.Errorf("secret content changed: sections %q, want cluster", got)
	}
}

// metric reads a counter or gauge from the daemon's registry: the series
// whose label has value, or the unlabelled one when label is "".
func (n *testNode) metric(t *testing.T, name, label, value string) float64 {
	t.Helper()
	families, err := n.d.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || (l.GetName() == label && l.GetValue() == value)
			}
			if match {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}

// A backend dies under traffic: clients never see a failed connection (a
// refused connect is retried on the next backend), and once health marked it
// down after `fall` failures the proxy stops dialling it.
func TestBackendDeathUnderTrafficCostsClientsNothing(t *testing.T) {
	const fall = 3
	// Active checks are slow here, so the proxy's own failed connects
	// (passive health) are what takes the backend out.
	n := startNode(t, fmt.Sprintf("{type: tcp, interval: 10s, timeout: 1s, rise: 1, fall: %d, initial: healthy}", fall))
	dead := n.backends[0]
	n.killBackend[0]()

	for i := 0; i < 60; i++ {
		if got := n.answer(t); got != "b" {
			t.Fatalf("connection %d after a died got %q, want b's answer", i, got)
		}
	}
	var st Status
	n.getJSON(t, "/status", &st)
	if st.Pools[0].Backends[0].Healthy {
		t.Errorf("dead backend %s still healthy after 60 connections", dead)
	}
	if errs := n.metric(t, "vipd_backend_connect_errors_total", "backend", dead); errs != fall {
		t.Errorf("proxy dialled the dead backend %v times; want exactly fall=%d, then never again", errs, fall)
	}
	if st.Health.HealthyPools != 1 || !st.Health.Fit {
		t.Errorf("health summary = %+v; the pool still has b", st.Health)
	}
}

// Garbage on every port the daemon listens on is dropped; the node keeps
// leading and serving.
func TestGarbageOnEveryPortChangesNothing(t *testing.T) {
	n := startNode(t, fastHealth)
	garbage := bytes.Repeat([]byte("\x00\xff GARBAGE \r\n\x16\x03\x01"), 512)
	for _, addr := range []string{n.raft, n.gossip, n.admin} {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(garbage)
		io.Copy(io.Discard, c) // until the daemon closes it or the deadline
		c.Close()
	}
	if u, err := net.Dial("udp", n.gossip); err == nil {
		u.Write(garbage[:1024])
		u.Close()
	}
	var st Status
	if code := n.getJSON(t, "/status", &st); code != 200 || st.State != "leader" || !st.Ready {
		t.Fatalf("after garbage: HTTP %d, status %+v", code, st)
	}
	if got := n.answer(t); got != "a" && got != "b" {
		t.Errorf("after garbage the frontend answered %q", got)
	}
}
