package config

import (
	"encoding/base64"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const validDoc = `
node:
  name: lb-1
cluster:
  raft_bind: 198.18.0.11:7000
  gossip_bind: 198.18.0.11:7001
  join: [198.18.0.12:7001, 198.18.0.13:7001]
  bootstrap_expect: 3
  data_dir: /tmp/vipd
  timing: lan
vips:
  - address: 198.18.0.100
    interface: eth0
frontends:
  - name: web
    listen: 198.18.0.100:8080
    pool: web
pools:
  - name: web
    algorithm: least_conn
    backends:
      - address: 198.18.0.21:9000
        weight: 3
      - address: 198.18.0.22:9000
    health:
      type: http
      path: /readyz
      expect_status: [200, "300-302"]
      interval: 1s
      timeout: 500ms
`

func TestParseValidConfigAppliesDefaults(t *testing.T) {
	cfg, err := Parse([]byte(validDoc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Cluster.Timing.Profile != TimingLAN || cfg.Cluster.Role != RoleVoter {
		t.Errorf("timing/role = %+v/%q", cfg.Cluster.Timing, cfg.Cluster.Role)
	}
	vip := cfg.VIPs[0]
	if vip.Lifetime != DefaultVIPLifetime || vip.Refresh != DefaultVIPRefresh || vip.AnnounceCount != DefaultAnnounceCount {
		t.Errorf("vip defaults not applied: %+v", vip)
	}
	fe := cfg.Frontends[0]
	if fe.MaxConnections != DefaultMaxConnections || fe.IdleTimeout != DefaultIdleTimeout {
		t.Errorf("frontend defaults not applied: %+v", fe)
	}
	p := cfg.Pools[0]
	if p.Backends[0].Weight != 3 || p.Backends[1].Weight != 1 {
		t.Errorf("weights = %d, %d; want 3, 1", p.Backends[0].Weight, p.Backends[1].Weight)
	}
	want := []StatusRange{{200, 200}, {300, 302}}
	if len(p.Health.ExpectStatus) != 2 || p.Health.ExpectStatus[0] != want[0] || p.Health.ExpectStatus[1] != want[1] {
		t.Errorf("expect_status = %v, want %v", p.Health.ExpectStatus, want)
	}
	if p.Health.Rise != DefaultRise || p.Health.Fall != DefaultFall || p.Health.FastInterval != 500*time.Millisecond {
		t.Errorf("health defaults not applied: %+v", p.Health)
	}
	if p.Health.Initial != InitialUnhealthy {
		t.Errorf("initial = %q, want unhealthy for an active check", p.Health.Initial)
	}
}

func TestEmptyDocumentIsTheSingleNodeDefault(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatalf("Parse(empty): %v", err)
	}
	if cfg.Cluster.BootstrapExpect != 1 || len(cfg.VIPs) != 0 || cfg.Admin.Listen != DefaultAdminListen {
		t.Errorf("default config = %+v", cfg)
	}
}

func TestExplicitTimings(t *testing.T) {
	cfg, err := Parse([]byte("cluster:\n  timing: {heartbeat: 200ms, election: 300ms, lease: 100ms}\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Timing{Heartbeat: 200 * time.Millisecond, Election: 300 * time.Millisecond, Lease: 100 * time.Millisecond}
	if cfg.Cluster.Timing != want {
		t.Errorf("timing = %+v, want %+v", cfg.Cluster.Timing, want)
	}
}

func TestSecretFileIsRead(t *testing.T) {
	dir := t.TempDir()
	key := []byte("0123456789abcdef0123456789abcdef")
	good := filepath.Join(dir, "good.key")
	os.WriteFile(good, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	cfg, err := Parse([]byte("cluster:\n  secret_file: " + good + "\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(cfg.Cluster.SecretKeys) != 1 || string(cfg.Cluster.SecretKeys[0]) != string(key) {
		t.Errorf("secret key not decoded")
	}
}

// Each kind of mistake gives an error that names the line, the key path, the
// value and what is wrong.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	shortKey := filepath.Join(dir, "short.key")
	os.WriteFile(shortKey, []byte(base64.StdEncoding.EncodeToString([]byte("short"))), 0o600)

	pool := "pools:\n  - name: p\n    backends: [{address: 127.0.0.1:9000}]\n"
	cases := []struct {
		name string
		doc  string
		want []string
	}{
		{"unknown top-level key", "colour: blue\n",
			[]string{"line 1", "colour", "unknown key", "frontends"}},
		{"unknown nested key", "admin:\n  listen: 127.0.0.1:9900\n  lisen: x\n",
			[]string{"line 3", "admin.lisen", "unknown key"}},
		{"bad duration", pool + "    connect_timeout: 5 seconds\n",
			[]string{"line 4", "pools[0].connect_timeout", `"5 seconds"`, "not a duration"}},
		{"negative duration", "node:\n  shutdown_grace: -1s\n",
			[]string{"line 2", "node.shutdown_grace", "negative"}},
		{"bad backend address", "pools:\n  - name: p\n    backends:\n      - address: 198.18.0.21\n",
			[]string{"line 4", "pools[0].backends[0].address", `"198.18.0.21"`, "missing port"}},
		{"backend host not an IP", "pools:\n  - name: p\n    backends:\n      - address: web.example:80\n",
			[]string{"line 4", "pools[0].backends[0].address", "must be an IP address"}},
		{"bad VIP", "vips:\n  - address: 198.18.0.300\n    interface: eth0\n",
			[]string{"line 2", "vips[0].address", `"198.18.0.300"`, "not an IP address"}},
		{"VIP with prefix", "vips:\n  - address: 198.18.0.100/32\n    interface: eth0\n",
			[]string{"vips[0].address", "without a prefix"}},
		{"duplicate pool", pool + "  - name: p\n    backends: [{address: 127.0.0.1:9001}]\n",
			[]string{"line 4", "pools[1].name", `"p"`, "duplicate pool name"}},
		{"duplicate frontend", pool + "frontends:\n  - {name: f, listen: 127.0.0.1:80, pool: p}\n  - {name: f, listen: 127.0.0.1:81, pool: p}\n",
			[]string{"line 6", "frontends[1].name", "duplicate frontend name"}},
		{"frontend names a missing pool", pool + "frontends:\n  - name: f\n    listen: 127.0.0.1:80\n    pool: nope\n",
			[]string{"line 7", "frontends[0].pool", `"nope"`, "no pool of that name"}},
		{"duplicate key", "admin:\n  listen: 127.0.0.1:1\n  listen: 127.0.0.1:2\n",
			[]string{"line 3", "admin.listen", "twice"}},
		{"bad enum", pool + "    algorithm: fastest\n",
			[]string{"line 4", "pools[0].algorithm", `"fastest"`, "round_robin, least_conn, random2, source_hash"}},
		{"bad number", pool + "frontends:\n  - {name: f, listen: 127.0.0.1:80, pool: p, max_connections: lots}\n",
			[]string{"line 5", "frontends[0].max_connections", "not a whole number"}},
		{"negative per-source limit", pool + "frontends:\n  - {name: f, listen: 127.0.0.1:80, pool: p, max_connections_per_source: -1}\n",
			[]string{"line 5", "frontends[0].max_connections_per_source", `"-1"`, "at least 0"}},
		{"bad accept_proxy CIDR", pool + "frontends:\n  - name: f\n    listen: 127.0.0.1:80\n    pool: p\n    accept_proxy: {from: [198.18.0.0/24, 198.18.0.0/33]}\n",
			[]string{"line 8", "frontends[0].accept_proxy.from[1]", `"198.18.0.0/33"`, "not a CIDR prefix"}},
		{"accept_proxy from not a list", pool + "frontends:\n  - {name: f, listen: 127.0.0.1:80, pool: p, accept_proxy: {from: 198.18.0.0/24}}\n",
			[]string{"line 5", "frontends[0].accept_proxy.from", "expected a list of CIDR prefixes"}},
		{"accept_proxy without from", pool + "frontends:\n  - {name: f, listen: 127.0.0.1:80, pool: p, accept_proxy: {timeout: 1s}}\n",
			[]string{"frontends[0].accept_proxy.from", "required"}},
		{"accept_proxy zero timeout", pool + "frontends:\n  - {name: f, listen: 127.0.0.1:80, pool: p, accept_proxy: {from: [198.18.0.0/24], timeout: 0s}}\n",
			[]string{"line 5", "frontends[0].accept_proxy.timeout", `"0s"`, "greater than zero"}},
		{"zero weight", "pools:\n  - name: p\n    backends: [{address: 127.0.0.1:9000, weight: 0}]\n",
			[]string{"line 3", "pools[0].backends[0].weight", "1-256"}},
		{"bad status range", pool + "    health: {type: http, expect_status: [\"299-200\"]}\n",
			[]string{"line 4", "pools[0].health.expect_status[0]", "low to high"}},
		{"timeout longer than interval", pool + "    health: {interval: 1s, timeout: 2s}\n",
			[]string{"pools[0].health.timeout", "must not exceed interval"}},
		{"tls option on tcp check", pool + "    health: {type: tcp, tls_skip_verify: true}\n",
			[]string{"pools[0].health.tls_skip_verify", "only used by type https"}},
		// type none runs no check: a starting state would be a second,
		// contradicting answer to "may this backend take connections".
		{"initial unhealthy with type none", pool + "    health: {type: none, initial: unhealthy}\n",
			[]string{"line 4", "pools[0].health.initial", `"unhealthy"`, "not used by type none"}},
		{"initial healthy with type none", pool + "    health: {type: none, initial: healthy}\n",
			[]string{"line 4", "pools[0].health.initial", `"healthy"`, "not used by type none"}},
		{"missing ca file", pool + "    health: {type: https, ca_file: /nonexistent/ca.pem}\n",
			[]string{"pools[0].health.ca_file", "/nonexistent/ca.pem", "cannot read"}},
		{"lease not shorter than heartbeat", "cluster:\n  timing: {heartbeat: 100ms, election: 100ms, lease: 100ms}\n",
			[]string{"cluster.timing.lease", "shorter than heartbeat"}},
		{"unknown timing profile", "cluster:\n  timing: moon\n",
			[]string{"line 2", "cluster.timing", `"moon"`, "fast, lan, wan"}},
		{"join without bootstrap_expect", "cluster:\n  join: [198.18.0.12:7001]\n",
			[]string{"cluster.bootstrap_expect", "required when cluster.join is set"}},
		{"wildcard raft bind", "cluster:\n  raft_bind: 0.0.0.0:7000\n",
			[]string{"line 2", "cluster.raft_bind", "concrete IP"}},
		{"bad secret", "cluster:\n  secret_file: " + shortKey + "\n",
			[]string{"line 2", "cluster.secret_file", "5 bytes"}},
		{"refresh too slow for lifetime", "vips:\n  - {address: 198.18.0.100, interface: eth0, lifetime: 2s, refresh: 1500ms}\n",
			[]string{"vips[0].refresh", "half the lifetime"}},
		// The rules of vip and election, owned here (issue 9).
		{"lifetime under the kernel's whole seconds", "vips:\n  - {address: 198.18.0.100, interface: eth0, lifetime: 1500ms, refresh: 500ms}\n",
			[]string{"line 2", "vips[0].lifetime", `"1.5s"`, "at least 2s"}},
		{"no announcement", "vips:\n  - {address: 198.18.0.100, interface: eth0, announce_count: 0}\n",
			[]string{"line 2", "vips[0].announce_count", `"0"`, "at least 1"}},
		{"announce interval zero", "vips:\n  - {address: 198.18.0.100, interface: eth0, announce_interval: 0s}\n",
			[]string{"line 2", "vips[0].announce_interval", "greater than zero"}},
		{"loopback VIP", "vips:\n  - {address: 127.0.0.2, interface: lo}\n",
			[]string{"line 2", "vips[0].address", `"127.0.0.2"`, "unicast"}},
		{"link-local VIP", "vips:\n  - {address: \"fe80::1\", interface: eth0}\n",
			[]string{"vips[0].address", `"fe80::1"`, "link-local"}},
		{"VIP with zone", "vips:\n  - {address: \"2001:2::1%eth0\", interface: eth0}\n",
			[]string{"vips[0].address", "zone"}},
		{"timing below raft's minimum", "cluster:\n  timing: {heartbeat: 4ms, election: 100ms, lease: 2ms}\n",
			[]string{"line 2", "cluster.timing.heartbeat", `"4ms"`, "at least 5ms", "cluster.timing.lease", `"2ms"`}},
		{"timing without lease", "cluster:\n  timing: {heartbeat: 100ms, election: 100ms}\n",
			[]string{"cluster.timing.lease", "required, at least 5ms"}},
		{"heartbeat beyond election", "cluster:\n  timing: {heartbeat: 200ms, election: 100ms, lease: 50ms}\n",
			[]string{"cluster.timing.heartbeat", `"200ms"`, "must not exceed election"}},
		{"open admin on the node's address", "admin:\n  listen: 198.18.0.11:9900\n",
			[]string{"line 2", "admin.listen", `"198.18.0.11:9900"`, "admin.token_file", "admin.tls", "client_ca_file", "admin.insecure: true"}},
		{"open admin on every address", "admin:\n  listen: 0.0.0.0:9900\n",
			[]string{"admin.listen", "not a loopback address", "admin.token_file"}},
		{"admin tls without a key", "admin:\n  tls: {cert_file: /etc/vipd/admin.crt}\n",
			[]string{"line 2", "admin.tls.cert_file", "both cert_file and key_file"}},
		{"list where a value belongs", "log:\n  level: [info]\n",
			[]string{"line 2", "log.level", "expected a single value"}},
		{"not YAML", "pools: [\n", []string{"not valid YAML"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { parseFails(t, tc.doc, tc.want...) })
	}
}

// parseFails checks that Parse rejects doc with an error that mentions
// every string of want, and returns the error.
func parseFails(t *testing.T, doc string, want ...string) error {
	t.Helper()
	_, err := Parse([]byte(doc))
	if err == nil {
		t.Fatalf("Parse accepted:\n%s", doc)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	return err
}

func TestAllErrorsAreReportedAtOnce(t *testing.T) {
	_, err := Parse([]byte("log:\n  level: loud\n  format: xml\n"))
	if err == nil {
		t.Fatal("Parse accepted a bad log section")
	}
	for _, w := range []string{"log.level", "log.format"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %s", err, w)
		}
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vipd.yaml")
	os.WriteFile(path, []byte("bogus: 1\n"), 0o644)
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Load error %v does not name %s", err, path)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}

func TestDefaultIsValidSingleNode(t *testing.T) {
	cfg := Default()
	if cfg.Cluster.BootstrapExpect != 1 || len(cfg.VIPs) != 0 || len(cfg.Frontends) != 1 || len(cfg.Pools[0].Backends) != 2 {
		t.Errorf("default is not the single-node load balancer: %+v", cfg)
	}
}

func TestTypeNoneHasNoStartingState(t *testing.T) {
	cfg, err := Parse([]byte("pools:\n  - {name: p, backends: [{address: 127.0.0.1:9000}], health: {type: none}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if h := cfg.Pools[0].Health; h.Initial != "" {
		t.Errorf("type none loaded with initial %q; its backends always take connections", h.Initial)
	}
}

// The default announcement burst must outlast Linux's arp locktime (1 s by
// default): a neighbour ignores ARP updates for a locktime after it last
// changed an entry, so a burst that ends sooner can leave it on the old
// holder's MAC until the next refresh.
func TestDefaultBurstOutlastsARPLocktime(t *testing.T) {
	const arpLocktime = time.Second
	if span := time.Duration(DefaultAnnounceCount-1) * DefaultAnnounceInterval; span < arpLocktime {
		t.Errorf("default burst spans %s (%d × %s apart), shorter than the %s arp locktime",
			span, DefaultAnnounceCount, DefaultAnnounceInterval, arpLocktime)
	}
}

func TestAdminLoopbackIsOnlyThisHost(t *testing.T) {
	for listen, want := range map[string]bool{
		"127.0.0.1:9900": true, "127.0.0.2:9900": true, "127.255.255.254:9900": true,
		"[::1]:9900": true, "localhost:9900": true,
		"0.0.0.0:9900": false, "[::]:9900": false, ":9900": false,
		"198.18.0.11:9900": false, "[2001:2::1]:9900": false, "[::ffff:127.0.0.1]:9900": true, // IPv4-mapped loopback is loopback
	} {
		if got := (Admin{Listen: listen}).Loopback(); got != want {
			t.Errorf("Loopback(%s) = %v, want %v", listen, got, want)
		}
	}
}

// A non-loopback admin listener needs authentication or an explicit opt-out;
// reads are open by default exactly on loopback.
func TestAdminAuthenticationRule(t *testing.T) {
	for _, tc := range []struct {
		admin     string
		ok        bool
		openReads bool
	}{
		{"{listen: 127.0.0.1:9900}", true, true},
		{"{listen: 127.0.0.1:9900, token_file: /t, open_reads: false}", true, false},
		{"{listen: 198.18.0.11:9900}", false, false},
		{"{listen: 198.18.0.11:9900, tls: {cert_file: /c, key_file: /k}}", false, false}, // TLS alone authenticates no one
		{"{listen: 198.18.0.11:9900, token_file: /t}", true, false},
		{"{listen: 198.18.0.11:9900, tls: {cert_file: /c, key_file: /k, client_ca_file: /ca}}", true, false},
		{"{listen: 198.18.0.11:9900, token_file: /t, open_reads: true}", true, true},
		{"{listen: 198.18.0.11:9900, insecure: true}", true, false},
		{"{listen: 0.0.0.0:9900, insecure: true, open_reads: true}", true, true},
	} {
		cfg, err := Parse([]byte("admin: " + tc.admin + "\n"))
		switch {
		case tc.ok && err != nil:
			t.Errorf("admin %s: %v", tc.admin, err)
		case !tc.ok && err == nil:
			t.Errorf("admin %s: accepted a non-loopback listener without authentication", tc.admin)
		case tc.ok && cfg.Admin.OpenReads != tc.openReads:
			t.Errorf("admin %s: open_reads = %v, want %v", tc.admin, cfg.Admin.OpenReads, tc.openReads)
		}
	}
}

// accept_proxy's sources parse to masked prefixes (a bare address is its
// own host prefix) and its timeout defaults to 3s.
func TestAcceptProxyParses(t *testing.T) {
	cfg, err := Parse([]byte(`
pools: [{name: p, backends: [{address: 127.0.0.1:9000}]}]
frontends:
  - {name: f, listen: 127.0.0.1:80, pool: p, max_connections_per_source: 5,
     accept_proxy: {from: [198.18.0.9/24, "2001:2::1"]}}
`))
	if err != nil {
		t.Fatal(err)
	}
	fe := cfg.Frontends[0]
	want := Prefixes{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:2::1/128")}
	if !slices.Equal(fe.AcceptProxy.From, want) || fe.AcceptProxy.Timeout != 3*time.Second || fe.MaxConnectionsPerSource != 5 {
		t.Fatalf("accept_proxy %+v, per source %d; want from %v, timeout 3s, 5", fe.AcceptProxy, fe.MaxConnectionsPerSource, want)
	}
}
