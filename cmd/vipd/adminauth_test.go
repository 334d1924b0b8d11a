package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/testpki"
)

// adminCaller calls admin APIs as one client: plain HTTP or TLS (with its
// client certificate, if any), with an Authorization header or none.
type adminCaller struct {
	scheme string
	client *http.Client
	auth   string // the Authorization header; none when empty
}

// plainCaller is an anonymous HTTP client. No keep-alive: nothing of it
// outlives a test.
var plainCaller = &adminCaller{scheme: "http", client: &http.Client{
	Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true},
}}

func (c *adminCaller) do(method, addr, path, body string) (*http.Response, error) {
	req, err := http.NewRequest(method, c.scheme+"://"+addr+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.auth != "" {
		req.Header.Set(authorizationName, c.auth)
	}
	return c.client.Do(req)
}

// call is do for a test: the status code and the body (0 and the error's
// text when the request failed, as in a refused TLS handshake).
func (c *adminCaller) call(method, addr, path, body string) (int, string) {
	resp, err := c.do(method, addr, path, body)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func (c *adminCaller) withAuth(header string) *adminCaller {
	cc := *c
	cc.auth = header
	return &cc
}

func (c *adminCaller) withToken(token string) *adminCaller { return c.withAuth("Bearer " + token) }

// tlsCaller verifies the server against caFile and presents certFile and
// keyFile as its client certificate (none when certFile is empty), even
// when the server asks for certificates of other CAs.
func tlsCaller(t *testing.T, caFile, certFile, keyFile string) *adminCaller {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: roots}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return &adminCaller{scheme: "https", client: &http.Client{
		Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true},
	}}
}

// writeSecret writes data into a new file of the given mode.
func writeSecret(t *testing.T, data string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path
}

const (
	testToken  = "s3cret-token-0123456789abcdef"
	wrongToken = "not-the-token-0123456789abcdef"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// mutatingRoutes lists every route of this package's admin API registered
// for a method other than GET or HEAD, from the source: a route added later
// is in the list without anyone editing a test.
func mutatingRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	pattern := regexp.MustCompile(`^(POST|PUT|PATCH|DELETE) /`)
	var routes []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && pattern.MatchString(s) {
					routes = append(routes, s)
				}
			}
			return true
		})
	}
	if len(routes) < 6 {
		t.Fatalf("found only %v in the source; the scan no longer finds the admin routes", routes)
	}
	return routes
}

// callBodies are bodies that would succeed, so that a call the guard let
// through would show: a drain would drain, a leave would stop the node.
func callBodies(n *testNode) map[string]string {
	backend := fmt.Sprintf(`{"pool":"web","backend":%q}`, n.backends[0])
	return map[string]string{
		"/v1/drain": backend, "/v1/undrain": backend,
		"/v1/maintenance": `{"node":"solo","on":true}`, "/v1/remove": `{"name":"lb-9"}`,
	}
}

// requireUnchanged fails unless n still leads, runs, and has no drain and no
// node in maintenance.
func requireUnchanged(t *testing.T, n *testNode) {
	t.Helper()
	select {
	case <-n.exited:
		t.Fatal("the daemon stopped: a refused call went through")
	default:
	}
	var st Status
	if code := n.getJSON(t, "/status", &st); code != 200 || st.State != "leader" ||
		len(st.Intent.Drained) != 0 || len(st.Intent.Maintenance) != 0 || st.Pools[0].Backends[0].Drained {
		t.Fatalf("refused calls changed the node %s: HTTP %d, state %q, intent %+v %+v", n.admin, code, st.State, st.Intent, st)
	}
}

// Every mutating call, every route found in the source, plus routes and
// methods that do not exist yet, is refused with 401 and a Bearer challenge
// without the token, with a wrong one, or with another scheme; nothing
// changes; each refusal is counted and logged with the caller's address and
// never the token. With the token the same calls work.
func TestEveryMutatingCallNeedsTheToken(t *testing.T) {
	n, cfg := newTestNode(t, "solo", "bootstrap_expect: 1", fastHealth, fmt.Sprintf("admin: {listen: %s, token_file: %s}", freePort(t), writeSecret(t, testToken, 0o600)))
	n.start(t, cfg) // reads are open on loopback: start's wait needs no token
	bodies := callBodies(n)
	routes := append(mutatingRoutes(t), "POST /v1/reload", "POST /v1/move", "POST /v1/not-a-route", "PUT /v1/drain", "DELETE /status", "PATCH /")
	callers := []struct {
		name   string
		caller *adminCaller
		reason string
	}{
		{"no credentials", plainCaller, refusedNoToken},
		{"a wrong token", plainCaller.withToken(wrongToken), refusedBadToken},
		{"the token with the Basic scheme", plainCaller.withAuth("Basic " + testToken), refusedNoToken},
		{"a bare token", plainCaller.withAuth(testToken), refusedNoToken},
	}
	want := map[string]float64{}
	for _, c := range callers {
		for _, route := range routes {
			method, path, _ := strings.Cut(route, " ")
			resp, err := c.caller.do(method, n.admin, path, bodies[path])
			if err != nil {
				t.Fatalf("%s %s: %v", route, c.name, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s with %s: HTTP %d, WWW-Authenticate %q; want 401 with a Bearer challenge",
					route, c.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
			want[c.reason]++
		}
	}
	requireUnchanged(t, n)
	for reason, count := range want {
		if got := n.metric(t, "vipd_admin_auth_failures_total", "reason", reason); got != count {
			t.Errorf("vipd_admin_auth_failures_total{reason=%q} = %v, want %v", reason, got, count)
		}
	}
	refusals := 0
	for _, e := range n.logs.All() {
		fields := e.ContextMap()
		for k, v := range fields {
			if s := fmt.Sprint(v); strings.Contains(s, testToken) || strings.Contains(s, wrongToken) {
				t.Errorf("log %q field %s carries a token: %s", e.Message, k, s)
			}
		}
		if strings.Contains(e.Message, testToken) || strings.Contains(e.Message, wrongToken) {
			t.Errorf("log message carries a token: %q", e.Message)
		}
		if _, ok := fields["reason"]; ok && e.LoggerName == "admin" {
			refusals++
			if remote, _ := fields["remote"].(string); !strings.HasPrefix(remote, "127.0.0.1:") || fields["request"] == "" {
				t.Errorf("refusal logged without the caller's address and request: %v", fields)
			}
		}
	}
	if total := len(callers) * len(routes); refusals != total {
		t.Errorf("%d refusals logged, want %d", refusals, total)
	}

	authed := plainCaller.withToken(testToken)
	if code, out := authed.call("POST", n.admin, "/v1/drain", bodies["/v1/drain"]); code != 200 {
		t.Fatalf("drain with the token: HTTP %d %s", code, out)
	}
	waitFor(t, "drain applied", func() bool {
		var st Status
		n.getJSON(t, "/status", &st)
		return st.Pools[0].Backends[0].Drained
	})
	if code, out := authed.withAuth("bearer  "+testToken+" ").call("POST", n.admin, "/v1/undrain", bodies["/v1/undrain"]); code != 200 {
		t.Fatalf("undrain with the token (scheme in lower case, extra spaces): HTTP %d %s", code, out)
	}
	if code, out := authed.call("POST", n.admin, "/v1/leave", ""); code != http.StatusAccepted {
		t.Fatalf("leave with the token: HTTP %d %s", code, out)
	}
	select {
	case <-n.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not stop after an authorized leave")
	}
}

// With open_reads off, every read needs the token as well.
func TestReadsNeedTheTokenUnlessOpen(t *testing.T) {
	n, cfg := newTestNode(t, "solo", "bootstrap_expect: 1", fastHealth, fmt.Sprintf("admin: {listen: %s, token_file: %s, open_reads: false}", freePort(t), writeSecret(t, testToken, 0o600)))
	n.caller = plainCaller.withToken(testToken) // for start's wait
	n.start(t, cfg)
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/status", "/"} {
		for _, method := range []string{"GET", "HEAD"} {
			if code, _ := plainCaller.call(method, n.admin, path, ""); code != http.StatusUnauthorized {
				t.Errorf("%s %s without the token: HTTP %d, want 401", method, path, code)
			}
		}
		if code, _ := n.caller.call("GET", n.admin, path, ""); code == http.StatusUnauthorized {
			t.Errorf("GET %s with the token: HTTP 401", path)
		}
	}
}

// With reads open (the default on loopback) they need no credentials, even
// with a token configured.
func TestOpenReadsNeedNoCredentials(t *testing.T) {
	n := startNode(t, fastHealth, fmt.Sprintf("admin: {listen: %s, token_file: %s}", freePort(t), writeSecret(t, testToken, 0o600)))
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/status"} {
		if code, out := plainCaller.call("GET", n.admin, path, ""); code != 200 {
			t.Errorf("GET %s without credentials: HTTP %d %.80s", path, code, out)
		}
	}
}

// adminPKI is a CA for the cluster, one foreign CA, and certificates.
type adminPKI struct {
	ca, foreign             *testpki.CA
	nodeCert, nodeKey       string // from ca, serves 127.0.0.1
	clientCert, clientKey   string // from ca: an operator
	foreignCert, foreignKey string // from foreign
}

func newAdminPKI(t *testing.T) adminPKI {
	p := adminPKI{ca: testpki.NewCA(t, "vipd-test"), foreign: testpki.NewCA(t, "elsewhere")}
	p.nodeCert, p.nodeKey = p.ca.Issue(t, "node", loopback)
	p.clientCert, p.clientKey = p.ca.Issue(t, "operator")
	p.foreignCert, p.foreignKey = p.foreign.Issue(t, "intruder", loopback)
	return p
}

func (p adminPKI) tlsSection(addr string, extra string) string {
	return fmt.Sprintf("admin: {listen: %s, tls: {cert_file: %s, key_file: %s, client_ca_file: %s}%s}", addr, p.nodeCert, p.nodeKey, p.ca.CertFile, extra)
}

// Mutual TLS with reads closed: no handshake completes without a client
// certificate from client_ca_file; a certificate from another CA is refused
// too; both are counted. The right certificate reads and drains.
func TestMutualTLSRefusesAnyOtherCertificate(t *testing.T) {
	p := newAdminPKI(t)
	n, cfg := newTestNode(t, "solo", "bootstrap_expect: 1", fastHealth, p.tlsSection(freePort(t), ", open_reads: false"))
	n.caller = tlsCaller(t, p.ca.CertFile, p.clientCert, p.clientKey)
	n.start(t, cfg)
	bodies := callBodies(n)
	for _, c := range []struct {
		name   string
		caller *adminCaller
		reason string
	}{
		{"no client certificate", tlsCaller(t, p.ca.CertFile, "", ""), refusedNoCert},
		{"a certificate from another CA", tlsCaller(t, p.ca.CertFile, p.foreignCert, p.foreignKey), refusedBadCert},
	} {
		for _, route := range append(mutatingRoutes(t), "GET /status", "GET /metrics") {
			method, path, _ := strings.Cut(route, " ")
			if code, out := c.caller.call(method, n.admin, path, bodies[path]); code != 0 {
				t.Errorf("%s with %s: HTTP %d %.80s; want the handshake refused", route, c.name, code, out)
			}
		}
		if got := n.metric(t, "vipd_admin_auth_failures_total", "reason", c.reason); got == 0 {
			t.Errorf("vipd_admin_auth_failures_total{reason=%q} = 0 after refusing %s", c.reason, c.name)
		}
	}
	if code, _ := plainCaller.call("GET", n.admin, "/status", ""); code != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS listener: HTTP %d, want 400", code)
	}
	requireUnchanged(t, n)
	if code, out := n.caller.call("POST", n.admin, "/v1/drain", bodies["/v1/drain"]); code != 200 {
		t.Fatalf("drain with the right certificate: HTTP %d %s", code, out)
	}
	waitFor(t, "drain applied", func() bool {
		var st Status
		n.getJSON(t, "/status", &st)
		return st.Pools[0].Backends[0].Drained
	})
}

// Token and client certificates together, reads open: a reader needs
// neither, a mutating call needs both (403 without the certificate, 401
// without the token); a certificate from another CA is refused even to read.
func TestTokenAndClientCertificateAreBothRequired(t *testing.T) {
	p := newAdminPKI(t)
	n, cfg := newTestNode(t, "solo", "bootstrap_expect: 1", fastHealth, p.tlsSection(freePort(t), ", token_file: "+writeSecret(t, testToken, 0o600)+", open_reads: true"))
	n.caller = tlsCaller(t, p.ca.CertFile, p.clientCert, p.clientKey).withToken(testToken)
	n.start(t, cfg)
	bodies := callBodies(n)
	anonymous := tlsCaller(t, p.ca.CertFile, "", "")
	if code, out := anonymous.call("GET", n.admin, "/status", ""); code != 200 {
		t.Errorf("GET /status without credentials, reads open: HTTP %d %s", code, out)
	}
	if code, _ := tlsCaller(t, p.ca.CertFile, p.foreignCert, p.foreignKey).call("GET", n.admin, "/status", ""); code != 0 {
		t.Errorf("GET /status with a certificate from another CA: HTTP %d; want the handshake refused", code)
	}
	for _, c := range []struct {
		name   string
		caller *adminCaller
		code   int
	}{
		{"the token but no certificate", anonymous.withToken(testToken), http.StatusForbidden},
		{"the certificate but no token", tlsCaller(t, p.ca.CertFile, p.clientCert, p.clientKey), http.StatusUnauthorized},
		{"the certificate and a wrong token", tlsCaller(t, p.ca.CertFile, p.clientCert, p.clientKey).withToken(wrongToken), http.StatusUnauthorized},
	} {
		for _, route := range mutatingRoutes(t) {
			method, path, _ := strings.Cut(route, " ")
			if code, out := c.caller.call(method, n.admin, path, bodies[path]); code != c.code {
				t.Errorf("%s with %s: HTTP %d %.80s; want %d", route, c.name, code, out, c.code)
			}
		}
	}
	requireUnchanged(t, n)
	if code, out := n.caller.call("POST", n.admin, "/v1/drain", bodies["/v1/drain"]); code != 200 {
		t.Fatalf("drain with both: HTTP %d %s", code, out)
	}
}

// The files that admin names are checked at start; each error names the
// key and the file and never contains the token.
func TestAdminCredentialsAreCheckedAtStart(t *testing.T) {
	p := newAdminPKI(t)
	garbage := writeSecret(t, "not a certificate", 0o600)
	openCert, openKey := p.ca.Issue(t, "open")
	if err := os.Chmod(openKey, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		admin config.Admin
		want  []string
	}{
		{"missing token file", config.Admin{TokenFile: "/nonexistent/admin.token"}, []string{"admin.token_file", "/nonexistent/admin.token", "no such file"}},
		{"world-readable token", config.Admin{TokenFile: writeSecret(t, testToken, 0o644)}, []string{"admin.token_file", "readable by every user", "0644"}},
		{"empty token", config.Admin{TokenFile: writeSecret(t, " \n", 0o600)}, []string{"admin.token_file", "empty"}},
		{"short token", config.Admin{TokenFile: writeSecret(t, "short\n", 0o600)}, []string{"admin.token_file", "5 characters", "vipctl keygen"}},
		{"token with a space", config.Admin{TokenFile: writeSecret(t, "two halves of-a-token-0123", 0o600)}, []string{"admin.token_file", "only letters"}},
		{"world-readable key", config.Admin{TLS: config.AdminTLS{CertFile: openCert, KeyFile: openKey}}, []string{"admin.tls.key_file", "readable by every user"}},
		{"key of another certificate", config.Admin{TLS: config.AdminTLS{CertFile: p.nodeCert, KeyFile: p.clientKey}}, []string{"admin.tls.cert_file", p.nodeCert}},
		{"client CA not PEM", config.Admin{TLS: config.AdminTLS{CertFile: p.nodeCert, KeyFile: p.nodeKey, ClientCAFile: garbage}}, []string{"admin.tls.client_ca_file", "no PEM certificate"}},
		{"node certificate from another CA", config.Admin{TLS: config.AdminTLS{CertFile: p.foreignCert, KeyFile: p.foreignKey, ClientCAFile: p.ca.CertFile}},
			[]string{"admin.tls.cert_file", "forwards", "unknown authority"}},
	} {
		_, err := newAdminAuth(tc.admin, zap.NewNop(), prometheus.NewRegistry())
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, w)
			}
		}
		if strings.Contains(err.Error(), testToken) {
			t.Errorf("%s: error %q carries the token", tc.name, err)
		}
	}
	a, err := newAdminAuth(config.Admin{TokenFile: writeSecret(t, "\n "+testToken+"\n", 0o640)}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil || string(a.token) != testToken {
		t.Fatalf("token with surrounding whitespace, group-readable: %v, token %q", err, a.token)
	}
}

// `vipd --check` reads the admin credentials too, so systemd's
// ExecStartPre catches a missing token file before the start.
func TestCheckFlagReadsTheAdminCredentials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vipd.yaml")
	doc := "admin: {listen: 127.0.0.1:9900, token_file: /nonexistent/admin.token}\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if code := run([]string{"--check", "--config", path}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "admin.token_file") {
		t.Errorf("--check with a missing token file: exit %d, %q", code, errOut.String())
	}
}

// `vipd --check` refuses what the election would refuse at start, naming
// it: a node name longer than gossip allows passes the config's own rules.
func TestCheckFlagRefusesWhatTheElectionRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vipd.yaml")
	doc := "node: {name: " + strings.Repeat("n", 129) + "}\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if code := run([]string{"--check", "--config", path}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "node name") {
		t.Errorf("--check with a 129-byte node name: exit %d, %q %q", code, out.String(), errOut.String())
	}
}

// A header larger than the bound is refused before any handler runs.
func TestAdminHeadersAreBounded(t *testing.T) {
	n := startNode(t, fastHealth)
	c, err := net.Dial("tcp", n.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", strings.Repeat("a", maxAdminHeader+8<<10))
	line, _ := readStatusLine(c)
	if !strings.Contains(line, " 431 ") {
		t.Errorf("a %d KiB header: %q, want 431", (maxAdminHeader+8<<10)>>10, line)
	}
}

// readStatusLine reads an HTTP response's first line from c.
func readStatusLine(c net.Conn) (string, error) {
	var line []byte
	buf := make([]byte, 1)
	for {
		if _, err := c.Read(buf); err != nil {
			return string(line), err
		}
		if buf[0] == '\n' {
			return string(line), nil
		}
		line = append(line, buf[0])
	}
}

// At most maxAdminConns connections are served at once; one more is served
// as soon as one of them closes.
func TestAdminConnectionsAreBounded(t *testing.T) {
	n := startNode(t, fastHealth)
	request := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	held := make([]net.Conn, maxAdminConns)
	for i := range held {
		c, err := net.Dial("tcp", n.admin)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		io.WriteString(c, request)
		if line, err := readStatusLine(c); !strings.Contains(line, " 200 ") {
			t.Fatalf("held connection %d: %q %v", i, line, err)
		}
		held[i] = c // idle, kept alive
	}
	extra, err := net.Dial("tcp", n.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	io.WriteString(extra, request)
	// Unserved while the others are held. The wait can only make this test
	// pass wrongly (on a machine too slow to answer in time), never fail.
	extra.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if line, err := readStatusLine(extra); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection %d was served while %d were open: %q %v", maxAdminConns+1, maxAdminConns, line, err)
	}
	held[0].Close()
	extra.SetReadDeadline(time.Now().Add(15 * time.Second))
	if line, err := readStatusLine(extra); !strings.Contains(line, " 200 ") {
		t.Fatalf("connection %d after one closed: %q %v", maxAdminConns+1, line, err)
	}
}

// startPair runs a leader ("solo", which bootstraps alone) and a follower
// ("f") that joins it and serves the leader's pools, each with the admin
// section given, and waits until both see both as alive voters and the
// follower knows the leader's admin address. Both use the wan timing: its
// longer lease keeps the leader from stepping down while the new voter
// catches up on a loaded machine.
func startPair(t *testing.T, leaderAdmin, followerAdmin string, leaderCaller, followerCaller *adminCaller) (leader, follower *testNode) {
	t.Helper()
	leader, lcfg := newTestNode(t, "solo", "bootstrap_expect: 1, timing: wan", fastHealth, leaderAdmin)
	leader.caller = leaderCaller
	leader.start(t, lcfg)
	follower, fcfg := newTestNode(t, "f", fmt.Sprintf("bootstrap_expect: 2, join: [%s], timing: wan", leader.gossip), fastHealth, followerAdmin)
	follower.caller = followerCaller
	fcfg.Pools, follower.backends = lcfg.Pools, leader.backends
	follower.launch(t, fcfg)
	settled := func(n *testNode, state string) bool {
		var st Status
		if n.getJSON(t, "/status", &st) != 200 || st.State != state || st.Leader != "solo" || len(st.Members) != 2 {
			return false
		}
		for _, m := range st.Members {
			if !m.Alive || !m.Voter || m.Name == "solo" && m.AdminAddr != leader.admin {
				return false
			}
		}
		return true
	}
	waitFor(t, "a settled pair", func() bool { return settled(follower, "follower") && settled(leader, "leader") })
	return leader, follower
}

// A follower forwards a drain to the leader with its own credentials: it
// works when the leader accepts them and fails, changing nothing, when it
// does not. The caller's own token is never passed on.
func TestForwardingCarriesTheNodesCredentials(t *testing.T) {
	p := newAdminPKI(t)
	token := writeSecret(t, testToken, 0o600)
	both := filepath.Join(t.TempDir(), "both-cas.pem") // trusts the leader, and the follower's own foreign certificate
	if err := os.WriteFile(both, append(p.ca.PEM(), p.foreign.PEM()...), 0o600); err != nil {
		t.Fatal(err)
	}
	mtls := func(cert, key, ca string) string {
		return fmt.Sprintf("admin: {listen: %s, tls: {cert_file: %s, key_file: %s, client_ca_file: %s}, open_reads: false}", freePort(t), cert, key, ca)
	}
	operator := tlsCaller(t, p.ca.CertFile, p.clientCert, p.clientKey)
	for _, tc := range []struct {
		name                   string
		leaderAdmin, fwdAdmin  string
		leaderCaller, fwdCalls *adminCaller
		code                   int    // of the drain sent to the follower
		refused                string // the leader's count of this reason grows
	}{
		{"same token", fmt.Sprintf("admin: {listen: %s, token_file: %s}", freePort(t), token),
			fmt.Sprintf("admin: {listen: %s, token_file: %s}", freePort(t), token),
			plainCaller, plainCaller.withToken(testToken), 200, ""},
		{"follower without a token", fmt.Sprintf("admin: {listen: %s, token_file: %s}", freePort(t), token),
			fmt.Sprintf("admin: {listen: %s}", freePort(t)),
			plainCaller, plainCaller.withToken(testToken), http.StatusUnauthorized, refusedNoToken},
		{"client certificates of one CA", mtls(p.nodeCert, p.nodeKey, p.ca.CertFile), mtls(p.nodeCert, p.nodeKey, p.ca.CertFile),
			operator, operator, 200, ""},
		{"follower certificate of another CA", mtls(p.nodeCert, p.nodeKey, p.ca.CertFile), mtls(p.foreignCert, p.foreignKey, both),
			operator, tlsCaller(t, p.foreign.CertFile, p.clientCert, p.clientKey), http.StatusBadGateway, refusedBadCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leader, follower := startPair(t, tc.leaderAdmin, tc.fwdAdmin, tc.leaderCaller, tc.fwdCalls)
			body := callBodies(leader)["/v1/drain"]
			code, out := follower.caller.call("POST", follower.admin, "/v1/drain", body)
			if code != tc.code {
				t.Fatalf("drain through the follower: HTTP %d %s; want %d", code, out, tc.code)
			}
			if tc.code == 200 {
				waitFor(t, "the drain on the leader", func() bool {
					var st Status
					leader.getJSON(t, "/status", &st)
					return st.Pools[0].Backends[0].Drained
				})
				return
			}
			requireUnchanged(t, leader)
			if got := leader.metric(t, "vipd_admin_auth_failures_total", "reason", tc.refused); got == 0 {
				t.Errorf("the leader counted no %s refusal", tc.refused)
			}
		})
	}
}
