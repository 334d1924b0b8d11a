package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
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

func TestStatusTable(t *testing.T) {
	status := `{"node":"lb-1","state":"leader","leader":"lb-1","term":7,"ready":true,
	 "vips":[{"address":"198.18.0.100","interface":"eth0","held":true}],
	 "members":[{"name":"lb-1","raft_addr":"198.18.0.11:7000","voter":true,"alive":true,"role":"voter","pools":1,"healthy_pools":1}],
	 "pools":[{"name":"web","backends":[{"address":"198.18.0.21:9000","healthy":true,"drained":false,"weight":1,"active_connections":3,"total_connections":10,"last_check":"ok"}]}]}`
	addr, _ := fakeAdmin(t, func(string, map[string]any) (int, string) { return 200, status })
	var out, errOut bytes.Buffer
	if code := run([]string{"--admin", addr, "status"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"state leader", "term 7", "198.18.0.100", "198.18.0.11:7000", "POOL web", "198.18.0.21:9000"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
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
