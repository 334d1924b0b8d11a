package bed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/testenv"
)

func specHosts() (nodes, backends []*Host) {
	for i, a := range NodeAddrs {
		nodes = append(nodes, &Host{Name: "n" + string(rune('1'+i)), Addr: a})
	}
	for i, a := range BackendAddr {
		backends = append(backends, &Host{Name: "b" + string(rune('1'+i)), Addr: a})
	}
	return nodes, backends
}

// The generated node configs are what bin/vipd accepts (`vipd --check`).
func TestVipdConfigPassesVipdCheck(t *testing.T) {
	bin, err := filepath.Abs("../../bin/vipd")
	if err != nil {
		t.Fatal(err)
	}
	testenv.NeedFile(t, bin, "run make build first")
	nodes, backends := specHosts()
	o := DefaultVipdOptions(bin, nodes, backends, t.TempDir())
	o.Witness = "n3"
	for _, n := range nodes {
		cfg, err := VipdConfig(o, n)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"name: " + n.Name, "listen: " + n.Addr.String() + ":9900", "lifetime: 2s", "refresh: 500ms", "198.18.0.22:9000"} {
			if !strings.Contains(string(cfg), want) {
				t.Errorf("config of %s lacks %q:\n%s", n.Name, want, cfg)
			}
		}
		if n.Name == "n3" && !strings.Contains(string(cfg), "role: witness") {
			t.Errorf("witness config lacks its role:\n%s", cfg)
		}
		path := filepath.Join(t.TempDir(), n.Name+".yaml")
		if err := os.WriteFile(path, cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "--check", "--config", path).CombinedOutput(); err != nil {
			t.Errorf("vipd --check rejects the config of %s: %v: %s\n%s", n.Name, err, out, cfg)
		}
	}
}

// The keepalived and HAProxy configs pass the daemons' own config checks.
func TestKeepalivedAndHAProxyConfigsPassTheirChecks(t *testing.T) {
	for _, bin := range []string{"keepalived", "haproxy"} {
		testenv.NeedProgram(t, bin, "the comparison bed's config check (sudo make test installs it)")
	}
	nodes, backends := specHosts()
	dir := t.TempDir()
	for advert, want := range map[time.Duration]string{time.Second: "advert_int 1\n", 100 * time.Millisecond: "advert_int 0.1\n"} {
		k := &Keepalived{Opts: KeepalivedOptions{Nodes: nodes, Backends: backends, Dir: dir, Advert: advert}}
		if err := k.writeConfigs(); err != nil {
			t.Fatal(err)
		}
		kc, err := os.ReadFile(k.path("n1", "keepalived.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(kc), want) {
			t.Errorf("advert %s: want %q in:\n%s", advert, want, kc)
		}
		if out, err := exec.Command("keepalived", "--config-test", "-f", k.path("n1", "keepalived.conf")).CombinedOutput(); err != nil {
			t.Errorf("keepalived --config-test: %v: %s\n%s", err, out, kc)
		}
		if out, err := exec.Command("haproxy", "-c", "-f", k.path("n1", "haproxy.conf")).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c: %v: %s", err, out)
		}
	}
	// Spread: one instance per VIP, each node the preferred master of one.
	k := &Keepalived{Opts: KeepalivedOptions{Nodes: nodes, Backends: backends, Dir: dir, Advert: 100 * time.Millisecond, VIPs: SpreadVIPs}}
	if err := k.writeConfigs(); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		kc, err := os.ReadFile(k.path(n.Name, "keepalived.conf"))
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("virtual_router_id %d\n  priority 100\n", 51+i)
		if !strings.Contains(string(kc), want) || strings.Count(string(kc), "vrrp_instance") != len(SpreadVIPs) || strings.Contains(string(kc), "nopreempt") {
			t.Errorf("spread config of %s: want %d preempting instances, %q among them, in:\n%s", n.Name, len(SpreadVIPs), want, kc)
		}
		if out, err := exec.Command("keepalived", "--config-test", "-f", k.path(n.Name, "keepalived.conf")).CombinedOutput(); err != nil {
			t.Errorf("keepalived --config-test, spread: %v: %s\n%s", err, out, kc)
		}
		hc, err := os.ReadFile(k.path(n.Name, "haproxy.conf"))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range SpreadVIPs {
			if !strings.Contains(string(hc), fmt.Sprintf("bind %s:%d", v, FrontendPort)) {
				t.Errorf("spread HAProxy config of %s binds no %s:\n%s", n.Name, v, hc)
			}
		}
		if out, err := exec.Command("haproxy", "-c", "-f", k.path(n.Name, "haproxy.conf")).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c, spread: %v: %s", err, out)
		}
	}
}
