package main

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/vipd/vipd/internal/testpki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeAdmin records the calls it gets and answers like vipd's admin API.
func fakeAdmin(t *testing.T, answer func(path string, body map[string]any) (int, string)) (addr string, calls *[]string) {
	t.Helper()
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		data, _ := io.ReadAll(r.Body)
		if len(data) > 0 {
			if err := json.Unmarshal(data, &body); err != nil {
				t.Errorf("vipctl sent invalid JSON %q", data)
			}
		}
		got = append(got, r.Method+" "+r.URL.Path+" "+string(data))
		code, out := answer(r.URL.Path, body)
		w.WriteHeader(code)
		io.WriteString(w, out)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), &got
}

func TestDrainSendsPoolAndBackend(t *testing.T) {
	addr, calls := fakeAdmin(t, func(string, map[string]any) (int, string) { return 200, `{"result":"ok"}` })
	var out, errOut bytes.Buffer
	if code := run([]string{"--admin", addr, "drain", "web", "198.18.0.21:9000"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := `POST /v1/drain {"backend":"198.18.0.21:9000","pool":"web"}`
	if len(*calls) != 1 || (*calls)[0] != want {
		t.Errorf("calls = %q, want %q", *calls, want)
	}
}

func TestMoveSendsVIPAndNode(t *testing.T) {
	addr, calls := fakeAdmin(t, func(string, map[string]any) (int, string) { return 200, `{"result":"ok"}` })
	var out, errOut bytes.Buffer
	if code := run([]string{"--admin", addr, "move", "198.18.0.101", "lb-2"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := `POST /v1/move {"node":"lb-2","vip":"198.18.0.101"}`
	if len(*calls) != 1 || (*calls)[0] != want {
		t.Errorf("calls = %q, want %q", *calls, want)
	}
	if code := run([]string{"--admin", addr, "move", "198.18.0.101"}, &out, &errOut); code == 0 {
		t.Error("move without a node succeeded")
	}
}

func TestAdminErrorBecomesTheCommandsError(t *testing.T) {
	addr, _ := fakeAdmin(t, func(string, map[string]any) (int, string) {
		return 400, `{"error":"no backend \"x\" in pool \"web\""}`
	})
	var out, errOut bytes.Buffer
	if code := run([]string{"--admin", addr, "undrain", "web", "x"}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), `no backend "x" in pool "web" (HTTP 400)`) {
		t.Errorf("stderr = %q", errOut.String())
	}
}

// testdata/status.json is a real daemon's /status, written by cmd/vipd's
// TestStatusKeepsItsContract (which fails when the daemon stops answering a
// key this file has). The table must show what it says, read here by the
// daemon's exact keys.
func TestStatusTableShowsARealStatus(t *testing.T) {
	data, err := os.ReadFile("testdata/status.json")
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	addr, _ := fakeAdmin(t, func(string, map[string]any) (int, string) { return 200, string(data) })
	var out, errOut bytes.Buffer
	if code := run([]string{"--admin", addr, "status"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := []string{
		"node " + field[string](t, st, "node"), "state " + field[string](t, st, "state"),
		"leader " + field[string](t, st, "leader"), fmt.Sprintf("term %v", field[float64](t, st, "term")),
	}
	for _, v := range field[[]any](t, st, "vips") {
		v := v.(map[string]any)
		holder := cmp.Or(field[string](t, v, "holder"), "none")
		want = append(want, fmt.Sprintf("%s  %s  %t      %s", field[string](t, v, "address"), field[string](t, v, "interface"), field[bool](t, v, "held"), holder))
	}
	for _, m := range field[[]any](t, st, "members") {
		m := m.(map[string]any)
		want = append(want, fmt.Sprintf("%s  %s  %s  %t   %t  %v/%v  %s", field[string](t, m, "name"), field[string](t, m, "raft_addr"),
			field[string](t, m, "role"), field[bool](t, m, "voter"), field[bool](t, m, "alive"),
			field[float64](t, m, "healthy_pools"), field[float64](t, m, "pools"), field[string](t, m, "config_digest")))
	}
	for _, p := range field[[]any](t, st, "pools") {
		p := p.(map[string]any)
		want = append(want, "POOL "+field[string](t, p, "name"))
		for _, b := range field[[]any](t, p, "backends") {
			b := b.(map[string]any)
			want = append(want, fmt.Sprintf("%s  %t  %t  %v  %v  %v  %s", field[string](t, b, "address"),
				field[bool](t, b, "healthy"), field[bool](t, b, "drained"), field[float64](t, b, "weight"),
				field[float64](t, b, "active_connections"), field[float64](t, b, "total_connections"), field[string](t, b, "last_check")))
		}
	}
	table := strings.Join(strings.Fields(out.String()), "  ")
	for _, w := range want {
		if !strings.Contains(table, strings.Join(strings.Fields(w), "  ")) {
			t.Errorf("status output lacks %q:\n%s", w, out.String())
		}
	}
}

// A member whose config digest is not the leader's is marked, so an
// operator sees which node missed a reload.
func TestStatusMarksAMemberWhoseConfigDiffersFromTheLeaders(t *testing.T) {
	const st = `{"node": "lb-1", "leader": "lb-1", "config_digest": "aaaa", "members": [
	  {"name": "lb-1", "raft_addr": "198.18.0.11:7000", "alive": true, "config_digest": "aaaa"},
	  {"name": "lb-2", "raft_addr": "198.18.0.12:7000", "alive": true, "config_digest": "bbbb"},
	  {"name": "lb-3", "raft_addr": "198.18.0.13:7000", "alive": true, "config_digest": "aaaa"}]}`
	addr, _ := fakeAdmin(t, func(string, map[string]any) (int, string) { return 200, st })
	var out, errOut bytes.Buffer
	if code := run([]string{"--admin", addr, "status"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		marked := strings.Contains(line, "differs from the leader")
		if strings.HasPrefix(line, "lb-") && marked != strings.HasPrefix(line, "lb-2") {
			t.Errorf("member line %q: marked %v, want only lb-2 marked", line, marked)
		}
	}
	if !strings.Contains(out.String(), "bbbb (differs from the leader's)") {
		t.Errorf("lb-2 not marked:\n%s", out.String())
	}
}

func TestReloadPrintsTheResultOrTheRefusal(t *testing.T) {
	answer := `{"result": "applied", "config_digest": "df2213d7de12d161"}`
	code := 200
	addr, calls := fakeAdmin(t, func(string, map[string]any) (int, string) { return code, answer })
	var out, errOut bytes.Buffer
	if rc := run([]string{"--admin", addr, "reload"}, &out, &errOut); rc != 0 || out.String() != "reload applied: running config df2213d7de12d161\n" {
		t.Fatalf("exit %d, out %q, stderr %q", rc, out.String(), errOut.String())
	}
	if len(*calls) != 1 || (*calls)[0] != "POST /v1/reload " {
		t.Errorf("calls = %q", *calls)
	}
	code, answer = 400, `{"result": "refused", "error": "these keys change only with a restart, so nothing of this reload was applied: cluster.raft_bind"}`
	out.Reset()
	if rc := run([]string{"--admin", addr, "reload"}, &out, &errOut); rc != 1 || !strings.Contains(errOut.String(), "cluster.raft_bind (HTTP 400)") {
		t.Errorf("refused reload: exit %d, stderr %q", rc, errOut.String())
	}
}

// field is obj[key] as a T, failing the test when the key is missing.
func field[T any](t *testing.T, obj map[string]any, key string) T {
	t.Helper()
	v, ok := obj[key].(T)
	if !ok {
		t.Fatalf("testdata/status.json: %q is %v, want a %T", key, obj[key], *new(T))
	}
	return v
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"drain", "web"}, {"maintenance", "lb-1", "maybe"}, {"frobnicate"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("vipctl %q: exit %d, want 2 (stderr %q)", args, code, errOut.String())
		}
	}
}

func TestValidateReportsConfigErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("frontends:\n  - name: f\n    listen: 127.0.0.1:80\n    pool: missing\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", path}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), "frontends[0].pool") {
		t.Errorf("stderr = %q", errOut.String())
	}
}

func TestKeygenPrintsAValidKey(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"keygen"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d", code)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out.String()))
	if err != nil || len(key) != 32 {
		t.Errorf("keygen printed %q: %v, %d bytes", out.String(), err, len(key))
	}
}

// seenAdmin answers every call with 200 and records, per call, the
// Authorization header and the client certificate's subject ("" without).
func seenAdmin(t *testing.T, tc *tls.Config) (addr string, seen *[]string) {
	t.Helper()
	var got []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			client = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		got = append(got, fmt.Sprintf("%s %s auth=%q cert=%q", r.Method, r.URL.Path, r.Header.Get("Authorization"), client))
		io.WriteString(w, `{"result":"ok"}`)
	}))
	if tc != nil {
		srv.TLS = tc
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), &got
}

func writeFile(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// --token-file, or VIPD_TOKEN_FILE, sends the token on every call.
func TestTokenFileSendsABearerToken(t *testing.T) {
	token := writeFile(t, "\ts3cret-token-0123456789\n")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"flag", nil, []string{"--token-file", token}},
		{"environment", map[string]string{"VIPD_TOKEN_FILE": token}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, seen := seenAdmin(t, nil)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			for _, cmd := range [][]string{{"drain", "web", "198.18.0.21:9000"}, {"status", "--json"}} {
				var out, errOut bytes.Buffer
				if code := run(append(append([]string{"--admin", addr}, tc.args...), cmd...), &out, &errOut); code != 0 {
					t.Fatalf("vipctl %v: exit %d: %s", cmd, code, errOut.String())
				}
			}
			want := []string{`POST /v1/drain auth="Bearer s3cret-token-0123456789" cert=""`, `GET /status auth="Bearer s3cret-token-0123456789" cert=""`}
			if !slices.Equal(*seen, want) {
				t.Errorf("calls = %q, want %q", *seen, want)
			}
		})
	}
}

// --cacert verifies the node, --cert and --key present a client certificate
// (flags or VIPD_CACERT, VIPD_CERT, VIPD_KEY); they imply https.
func TestTLSFlagsVerifyTheNodeAndPresentACertificate(t *testing.T) {
	ca, other := testpki.NewCA(t, "vipd-test"), testpki.NewCA(t, "elsewhere")
	nodeCert, nodeKey := ca.Issue(t, "node", netip.MustParseAddr("127.0.0.1"))
	opCert, opKey := ca.Issue(t, "operator")
	serving, err := tls.LoadX509KeyPair(nodeCert, nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	addr, seen := seenAdmin(t, &tls.Config{Certificates: []tls.Certificate{serving}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert})
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		ok   bool
	}{
		{"flags", nil, []string{"--admin", addr, "--cacert", ca.CertFile, "--cert", opCert, "--key", opKey}, true},
		{"https URL", nil, []string{"--admin", "https://" + addr + "/", "--cacert", ca.CertFile, "--cert", opCert, "--key", opKey}, true},
		{"environment", map[string]string{"VIPD_ADMIN": addr, "VIPD_CACERT": ca.CertFile, "VIPD_CERT": opCert, "VIPD_KEY": opKey}, nil, true},
		{"no client certificate", nil, []string{"--admin", addr, "--cacert", ca.CertFile}, false},
		{"the node's certificate not from --cacert", nil, []string{"--admin", addr, "--cacert", other.CertFile, "--cert", opCert, "--key", opKey}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			before := len(*seen)
			var out, errOut bytes.Buffer
			code := run(append(tc.args, "transfer"), &out, &errOut)
			switch {
			case tc.ok && (code != 0 || len(*seen) != before+1 || (*seen)[before] != `POST /v1/transfer auth="" cert="operator"`):
				t.Errorf("exit %d, %s; calls %q", code, errOut.String(), (*seen)[before:])
			case !tc.ok && (code != 1 || len(*seen) != before || !strings.Contains(errOut.String(), "tls")):
				t.Errorf("exit %d, %q, calls %q; want exit 1, a TLS error, no call", code, errOut.String(), (*seen)[before:])
			}
		})
	}
}

// Options that cannot make a client are errors of the commands that call
// the node, named by their flag; validate and keygen do not need a node.
func TestClientOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--token-file", "/nonexistent/admin.token", "status"}, "--token-file"},
		{[]string{"--token-file", writeFile(t, "\n"), "status"}, "is empty"},
		{[]string{"--cert", "/x.crt", "status"}, "--cert and --key go together"},
		{[]string{"--admin", "http://127.0.0.1:9900", "--cacert", "/ca.pem", "status"}, "use https://127.0.0.1:9900"},
		{[]string{"--admin", "ftp://127.0.0.1:9900", "status"}, "http or https"},
		{[]string{"--cacert", writeFile(t, "garbage"), "status"}, "no PEM certificate"},
	} {
		var out, errOut bytes.Buffer
		if code := run(tc.args, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("vipctl %q: exit %d, %q; want exit 1 mentioning %q", tc.args, code, errOut.String(), tc.want)
		}
	}
	t.Setenv("VIPD_TOKEN_FILE", "/nonexistent/admin.token")
	var out, errOut bytes.Buffer
	if code := run([]string{"keygen"}, &out, &errOut); code != 0 {
		t.Errorf("keygen with an unreadable VIPD_TOKEN_FILE: exit %d %s", code, errOut.String())
	}
}
