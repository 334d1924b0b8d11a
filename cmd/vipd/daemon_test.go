package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/testenv"
)

// TestMain fails on leaked goroutines, except memberlist's probe of a peer:
// memberlist.Shutdown does not wait for one in flight, which ends on its own
// within a few probe intervals (tests with two nodes gossip; see
// election/helpers_test.go).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).sendPingAndWaitForAck"))
}

// freePort returns a loopback address for the daemon to bind
// (testenv.FreePort: below the ephemeral range, free for TCP and UDP).
func freePort(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
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
	stop            func() error   // cancels run's context and returns its result
	exited          chan struct{}  // closed when run has returned
	runErr          error          // what run returned; read after exited
	configPath      string         // the file the daemon was started from
	hup             chan os.Signal // stands in for SIGHUP
	caller          *adminCaller   // how the helpers call the admin API; plain HTTP, no credentials by default
	logs            *observer.ObservedLogs
}

const fastHealth = "{type: tcp, interval: 100ms, rise: 1, fall: 1, initial: healthy}"

// absentVIP is a VIP on an interface that does not exist: the daemon lists
// it in /status and fails to claim it, and nothing on the host changes.
const absentVIP = "vips: [{address: 198.18.0.100, interface: vipd-absent0}]"

// startNode runs a single-node daemon on loopback, in process, with two
// backends "a" and "b" checked as health says, and the extra top-level
// config sections given; it returns once the node leads. An extra section
// starting with "admin:" replaces the default admin section (admin on a
// free loopback port, no credentials).
func startNode(t testing.TB, health string, extra ...string) *testNode {
	t.Helper()
	n, cfg := newTestNode(t, "solo", "bootstrap_expect: 1", health, extra...)
	n.start(t, cfg)
	return n
}

// launchNode starts a daemon like startNode's, named name, with cluster
// settings added to its own binds and data_dir, and returns at once.
func launchNode(t testing.TB, name, cluster, health string) *testNode {
	t.Helper()
	n, cfg := newTestNode(t, name, cluster, health)
	n.launch(t, cfg)
	return n
}

// newTestNode writes and loads the config that startNode and launchNode run.
func newTestNode(t testing.TB, name, cluster, health string, extra ...string) (*testNode, *config.Config) {
	t.Helper()
	n := &testNode{frontend: freePort(t), admin: freePort(t), raft: freePort(t), gossip: freePort(t), caller: plainCaller}
	admin := fmt.Sprintf("admin: {listen: %s}", n.admin)
	extra = slices.DeleteFunc(slices.Clone(extra), func(e string) bool {
		if strings.HasPrefix(e, "admin:") {
			admin = e
			return true
		}
		return false
	})
	for _, backend := range []string{"a", "b"} {
		addr, kill := namedBackend(t, backend)
		n.backends = append(n.backends, addr)
		n.killBackend = append(n.killBackend, kill)
	}
	doc := fmt.Sprintf(`
node: {name: %s, shutdown_grace: 1s}
cluster: {raft_bind: %s, gossip_bind: %s, %s, data_dir: %s}
frontends: [{name: web, listen: %s, pool: web}]
pools:
  - name: web
    backends: [{address: %s}, {address: %s}]
    health: %s
%s
%s
`, name, n.raft, n.gossip, cluster, t.TempDir(), n.frontend, n.backends[0], n.backends[1], health, admin, strings.Join(extra, "\n"))
	n.configPath = filepath.Join(t.TempDir(), "vipd.yaml")
	if err := os.WriteFile(n.configPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(n.configPath)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	n.admin = cfg.Admin.Listen
	return n, cfg
}

// start runs the daemon until the test ends and waits until it leads.
func (n *testNode) start(t testing.TB, cfg *config.Config) {
	t.Helper()
	n.launch(t, cfg)
	waitFor(t, "leader and ready", func() bool {
		var st Status
		return n.getJSON(t, "/status", &st) == 200 && st.Ready && st.State == "leader"
	})
}

// launch runs the daemon until the test ends. Its logs go to n.logs, and
// to the test's output if the test failed: never to t directly, because a
// peer's memberlist may still log a probe after its Shutdown returned, when
// t no longer takes logs. A node that stops by itself (e.g. a port taken
// since freePort) fails the test with its error.
func (n *testNode) launch(t testing.TB, cfg *config.Config) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	n.logs = logs
	t.Cleanup(func() { // registered before the stop below, so it runs after it
		if t.Failed() {
			for _, e := range logs.All() {
				t.Logf("%s %s %s %s %v", e.Time.Format("15:04:05.000"), e.Level, e.LoggerName, e.Message, e.ContextMap())
			}
		}
	})
	d, err := newDaemon(cfg, n.configPath, zap.New(core), nil)
	if err != nil {
		t.Fatalf("newDaemon: %v", err)
	}
	n.hup = make(chan os.Signal)
	d.hup = n.hup
	n.d = d
	ctx, cancel := context.WithCancel(context.Background())
	n.exited = make(chan struct{})
	go func() {
		defer close(n.exited)
		n.runErr = d.run(ctx)
		if n.runErr != nil && ctx.Err() == nil {
			t.Errorf("node %s stopped by itself: %v", cfg.Node.Name, n.runErr)
		}
	}()
	n.stop = func() error {
		cancel()
		<-n.exited
		return n.runErr
	}
	t.Cleanup(func() { n.stop() })
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
	resp, err := n.caller.do("GET", n.admin, path, "")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v", path, err)
	}
	return resp.StatusCode
}

func (n *testNode) post(t testing.TB, path, body string) (int, string) {
	t.Helper()
	resp, err := n.caller.do("POST", n.admin, path, body)
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
func (n *testNode) answer(t testing.TB) string {
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

// statusContract is /status as DESIGN.md's "Admin API" promises it: every
// field must be in the answer under exactly this key and with this JSON
// type, so renaming a field of the Go structs behind /status fails
// TestStatusKeepsItsContract.
type statusContract struct {
	Node   string `json:"node"`
	State  string `json:"state"`
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	Digest string `json:"config_digest"`
	VIPs   []struct {
		Address   string `json:"address"`
		Interface string `json:"interface"`
		Held      bool   `json:"held"`
		Placement string `json:"placement"`
		Holder    string `json:"holder"`
	} `json:"vips"`
	Members []struct {
		Name     string `json:"name"`
		RaftAddr string `json:"raft_addr"`
		Voter    bool   `json:"voter"`
		Alive    bool   `json:"alive"`
		Digest   string `json:"config_digest"`
	} `json:"members"`
	Pools []struct {
		Name     string `json:"name"`
		Backends []struct {
			Address           string `json:"address"`
			Healthy           bool   `json:"healthy"`
			ActiveConnections int64  `json:"active_connections"`
		} `json:"backends"`
	} `json:"pools"`
}

// requireContract checks that v (decoded JSON) has every field of typ under
// its exact key (encoding/json would match keys case-insensitively) with the
// JSON type of the Go field, recursing into objects and every array element.
// Arrays must not be empty, or their elements would go unchecked.
func requireContract(t testing.TB, path string, v any, typ reflect.Type) {
	t.Helper()
	switch typ.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			t.Errorf("/status %s is %T, want an object", path, v)
			return
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			key := strings.Split(f.Tag.Get("json"), ",")[0]
			fv, ok := obj[key]
			if !ok {
				t.Errorf("/status %s lacks %q", path, key)
				continue
			}
			requireContract(t, path+"."+key, fv, f.Type)
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok || len(arr) == 0 {
			t.Errorf("/status %s is %v, want a non-empty array", path, v)
			return
		}
		for i, e := range arr {
			requireContract(t, fmt.Sprintf("%s[%d]", path, i), e, typ.Elem())
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			t.Errorf("/status %s is %T, want a string", path, v)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			t.Errorf("/status %s is %T, want a boolean", path, v)
		}
	default: // numbers
		if _, ok := v.(float64); !ok {
			t.Errorf("/status %s is %T, want a number", path, v)
		}
	}
}

// keyPaths lists every object key of v by its path ("pools[].backends[].address").
func keyPaths(prefix string, v any, out map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			out[prefix+"."+k] = true
			keyPaths(prefix+"."+k, e, out)
		}
	case []any:
		for _, e := range v {
			keyPaths(prefix+"[]", e, out)
		}
	}
}

var updateStatusGolden = flag.Bool("update-status-golden", false, "rewrite "+statusGolden+" from a real daemon's /status")

// statusGolden is a real /status that vipctl's tests read: vipctl is tested
// against what the daemon answers, not against a hand-written fixture.
const statusGolden = "../vipctl/testdata/status.json"

// A real daemon's /status carries every field of the contract, under its
// exact name, with the values of this node; and every key vipctl's tests
// rely on (the golden file, a real answer) is still there. Extending /status
// passes; renaming a field fails here.
func TestStatusKeepsItsContract(t *testing.T) {
	n := startNode(t, fastHealth, absentVIP)
	var body []byte
	waitFor(t, "an active check of every backend", func() bool {
		resp, err := http.Get("http://" + n.admin + "/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if body, err = io.ReadAll(resp.Body); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /status: HTTP %d %v", resp.StatusCode, err)
		}
		var st Status
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("decode /status: %v", err)
		}
		return len(st.Pools) == 1 && st.Pools[0].Backends[0].LastCheck != "" && st.Pools[0].Backends[1].LastCheck != ""
	})
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("decode /status: %v", err)
	}
	requireContract(t, "", raw, reflect.TypeFor[statusContract]())

	var st statusContract
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("decode /status: %v", err)
	}
	if st.Node != "solo" || st.State != "leader" || st.Leader != "solo" || st.Term == 0 {
		t.Errorf("node %q state %q leader %q term %d; want solo, leader, solo, a term", st.Node, st.State, st.Leader, st.Term)
	}
	if len(st.VIPs) != 1 || st.VIPs[0].Address != "198.18.0.100" || st.VIPs[0].Interface != "vipd-absent0" || st.VIPs[0].Held ||
		st.VIPs[0].Placement != "leader" || st.VIPs[0].Holder != "" {
		t.Errorf("vips = %+v; want 198.18.0.100 on vipd-absent0, placement leader, not held and no holder (the interface does not exist)", st.VIPs)
	}
	if len(st.Members) != 1 || st.Members[0].Name != "solo" || st.Members[0].RaftAddr != n.raft || !st.Members[0].Voter || !st.Members[0].Alive {
		t.Errorf("members = %+v; want solo at %s, voter, alive", st.Members, n.raft)
	}
	if len(st.Pools) != 1 || st.Pools[0].Name != "web" || len(st.Pools[0].Backends) != 2 {
		t.Fatalf("pools = %+v; want web with two backends", st.Pools)
	}
	for i, b := range st.Pools[0].Backends {
		if b.Address != n.backends[i] || !b.Healthy || b.ActiveConnections != 0 {
			t.Errorf("backend %d = %+v; want %s healthy, no connection", i, b, n.backends[i])
		}
	}

	if *updateStatusGolden {
		if err := os.WriteFile(statusGolden, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(statusGolden)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/vipd -run TestStatusKeepsItsContract -update-status-golden writes it)", err)
	}
	var old any
	if err := json.Unmarshal(golden, &old); err != nil {
		t.Fatalf("%s: %v", statusGolden, err)
	}
	want, got := map[string]bool{}, map[string]bool{}
	keyPaths("", old, want)
	keyPaths("", raw, got)
	for k := range want {
		if !got[k] {
			t.Errorf("/status lost %s, which %s (a real answer) has: a field was renamed or removed", k, statusGolden)
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
		{"/v1/remove", `{"name":"solo"}`, 400, "local node; use leave"},
		{"/v1/remove", `{"name":"lb-9"}`, 400, "lb-9: not in the raft configuration"},
		{"/v1/transfer", ``, 409, "no alive voter peer"},
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

// One connection through the frontend shows in /metrics, read as
// Prometheus reads it, as exactly that: one accepted, one relayed by the
// backend that answered, the bytes it sent, nothing on the other backend.
func TestMetricsExposeProxyCounters(t *testing.T) {
	n := startNode(t, fastHealth)
	answered := n.answer(t)
	addr := map[string]string{"a": n.backends[0], "b": n.backends[1]}
	used, idle := addr[answered], addr[map[string]string{"a": "b", "b": "a"}[answered]]
	if used == "" {
		t.Fatalf("the frontend answered %q", answered)
	}
	// The relay ends just after the client sees EOF: wait until it has.
	waitFor(t, "the connection to end", func() bool {
		return n.metric(t, "vipd_frontend_active_connections", "frontend", "web") == 0
	})
	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"vipd_frontend_connections_total", []string{"frontend", "web"}, 1},
		{"vipd_backend_connections_total", []string{"pool", "web", "backend", used}, 1},
		{"vipd_backend_connections_total", []string{"pool", "web", "backend", idle}, 0},
		{"vipd_backend_connect_duration_seconds", []string{"pool", "web", "backend", used}, 1}, // a histogram: its count
		{"vipd_backend_bytes_total", []string{"backend", used, "direction", "backend_to_client"}, float64(len(answered))},
		{"vipd_backend_bytes_total", []string{"backend", used, "direction", "client_to_backend"}, 0},
		{"vipd_backend_active_connections", []string{"backend", used}, 0},
		{"vipd_backend_connect_errors_total", []string{"backend", used}, 0},
		{"vipd_frontend_refused_connections_total", []string{"frontend", "web", "reason", "no_backend"}, 0},
		{"vipd_election_is_leader", nil, 1},
	} {
		if got := n.metric(t, m.name, m.labels...); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if got := n.metric(t, name); got <= 0 {
			t.Errorf("%s = %v", name, got)
		}
	}
}

// /v1/leave alone stops the daemon: nothing cancels run's context.
func TestLeaveStopsTheDaemon(t *testing.T) {
	n := startNode(t, fastHealth)
	if code, out := n.post(t, "/v1/leave", ""); code != http.StatusAccepted {
		t.Fatalf("leave: HTTP %d %s", code, out)
	}
	select {
	case <-n.exited:
		if n.runErr != nil {
			t.Errorf("run after leave: %v", n.runErr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop after /v1/leave")
	}
	for _, addr := range []string{n.frontend, n.admin, n.raft} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts after leave", addr)
		}
	}
}

// A daemon that fails to build or to start leaves no goroutine behind (the
// election's event goroutine was the one left) and reports what failed.
func TestAFailedStartLeavesNothingRunning(t *testing.T) {
	occupy := func(t *testing.T, addr string) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, n *testNode, cfg *config.Config)
		want  string
	}{
		{"raft_bind taken", func(t *testing.T, n *testNode, _ *config.Config) { occupy(t, n.raft) }, "start election"},
		{"admin listen taken", func(t *testing.T, n *testNode, _ *config.Config) { occupy(t, n.admin) }, "admin listener"},
		{"vip.New refuses the VIP", func(_ *testing.T, _ *testNode, cfg *config.Config) {
			cfg.VIPs[0].Refresh = 0 // a value config never hands on: vip.New refuses it
		}, "vip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, before) }) // last: after the backends stop
			n, cfg := newTestNode(t, "solo", "bootstrap_expect: 1", fastHealth, absentVIP)
			tc.setup(t, n, cfg)
			d, err := newDaemon(cfg, "", zaptest.NewLogger(t), nil)
			if err == nil {
				err = d.run(context.Background())
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start: %v; want an error about %q", err, tc.want)
			}
		})
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

// scrape reads /metrics as Prometheus does.
func (n *testNode) scrape(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := n.caller.do("GET", n.admin, "/metrics", "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// metric is the value of the one series of name in /metrics whose labels
// include the given name, value pairs (a histogram's value: its count).
func (n *testNode) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	var found []float64
	n.eachSeries(t, name, func(l map[string]string, v float64) {
		for i := 0; i+1 < len(labels); i += 2 {
			if l[labels[i]] != labels[i+1] {
				return
			}
		}
		found = append(found, v)
	})
	if len(found) != 1 {
		t.Fatalf("%d series %s%v in /metrics, want one", len(found), name, labels)
	}
	return found[0]
}

// eachSeries calls f with the labels and value of every series of name.
func (n *testNode) eachSeries(t testing.TB, name string, f func(labels map[string]string, value float64)) {
	t.Helper()
	fam := n.scrape(t)[name]
	if fam == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	for _, m := range fam.GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue() + float64(m.GetHistogram().GetSampleCount())
		f(l, v)
	}
}

// A backend dies under traffic: clients never see a failed connection (a
// refused connect is retried on the next backend), and once health marked it
// down after `fall` failures the proxy stops dialling it.
func TestBackendDeathUnderTrafficCostsClientsNothing(t *testing.T) {
	const fall = 3
	// Active checks are slow here, so the proxy's own failed connects
	// (passive health) are what takes the backend out. The first active
	// check comes at a random offset within the interval: wait for it while
	// the backend lives, so the next one is 0.9 intervals away.
	n := startNode(t, fmt.Sprintf("{type: tcp, interval: 5s, timeout: 1s, rise: 1, fall: %d, initial: healthy}", fall))
	dead := n.backends[0]
	waitFor(t, "the first active check of "+dead, func() bool {
		return n.metric(t, "vipd_health_check_duration_seconds", "backend", dead) >= 1
	})
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
	dials := n.metric(t, "vipd_backend_connect_errors_total", "backend", dead)
	passive := n.metric(t, "vipd_health_check_failures_total", "backend", dead, "reason", "passive")
	var active float64 // failed active checks: should a slow run reach the next one
	n.eachSeries(t, "vipd_health_check_failures_total", func(l map[string]string, v float64) {
		if l["backend"] == dead && l["reason"] != "passive" {
			active += v
		}
	})
	switch {
	case passive != dials:
		t.Errorf("the proxy failed %v connects but health heard of %v", dials, passive)
	case active == 0 && dials != fall:
		t.Errorf("proxy dialled the dead backend %v times; want exactly fall=%d, then never again", dials, fall)
	case dials > fall || dials < fall-active:
		t.Errorf("proxy dialled the dead backend %v times beside %v failed active checks; want fall=%d failures in all, then no dial", dials, active, fall)
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
