package bench

import (
	"context"
	"strings"
	"testing"

	"github.com/vipd/vipd/config"
)

func testContext() context.Context { return context.Background() }

func TestVipdConfigIsAValidSingleNodeBalancer(t *testing.T) {
	p := VipdParams{
		Listen: "127.0.0.1:18080", Admin: "127.0.0.1:18081",
		RaftBind: "127.0.0.1:18082", GossipBind: "127.0.0.1:18083",
		Backend: "127.0.0.1:19000", DataDir: t.TempDir(), MaxConn: 9000,
	}
	cfg, err := config.Parse([]byte(VipdConfig(p)))
	if err != nil {
		t.Fatalf("generated config rejected by config.Parse: %v\n%s", err, VipdConfig(p))
	}
	if len(cfg.VIPs) != 0 {
		t.Errorf("vips = %v, want none", cfg.VIPs)
	}
	if cfg.Cluster.BootstrapExpect != 1 || cfg.Cluster.DataDir != p.DataDir {
		t.Errorf("cluster = %+v, want bootstrap_expect 1 and data_dir %s", cfg.Cluster, p.DataDir)
	}
	if len(cfg.Frontends) != 1 || cfg.Frontends[0].Listen != p.Listen || cfg.Frontends[0].MaxConnections != 9000 {
		t.Fatalf("frontends = %+v, want one on %s with max_connections 9000", cfg.Frontends, p.Listen)
	}
	if len(cfg.Pools) != 1 || len(cfg.Pools[0].Backends) != 1 || cfg.Pools[0].Backends[0].Address != p.Backend {
		t.Fatalf("pools = %+v, want one pool with backend %s", cfg.Pools, p.Backend)
	}
	if cfg.Pools[0].Health.Type != "none" || cfg.Pools[0].Algorithm != "round_robin" {
		t.Errorf("pool = %+v, want health none and round_robin", cfg.Pools[0])
	}
	if cfg.Admin.Listen != p.Admin {
		t.Errorf("admin.listen = %s, want %s", cfg.Admin.Listen, p.Admin)
	}
}

func TestHAProxyConfigIsTCPModeWithOneServer(t *testing.T) {
	cfg := HAProxyConfig(HAProxyParams{Listen: "127.0.0.1:18080", Backend: "127.0.0.1:19000", MaxConn: 9000})
	for _, want := range []string{
		"\n    nbthread 2\n",
		"\n    maxconn 9000\n",
		"\n    mode tcp\n",
		"\n    balance roundrobin\n",
		"\n    timeout connect 5s\n",
		"\n    bind 127.0.0.1:18080\n",
		"\n    server backend1 127.0.0.1:19000\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", strings.TrimSpace(want), cfg)
		}
	}
	if strings.Contains(cfg, "splice") {
		t.Errorf("splice is on without Splice:\n%s", cfg)
	}
	spliced := HAProxyConfig(HAProxyParams{Listen: "127.0.0.1:1", Backend: "127.0.0.1:2", MaxConn: 10, Splice: true})
	if !strings.Contains(spliced, "\n    option splice-auto\n") {
		t.Errorf("Splice did not add option splice-auto:\n%s", spliced)
	}
}
