package config

import (
	"slices"
	"testing"
)

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("parse %q: %v", doc, err)
	}
	return c
}

const reloadBase = `
node: {name: lb-1}
` + reloadServed

const reloadServed = `
pools: [{name: web, backends: [{address: 198.18.0.21:9000}]}]
frontends: [{name: web, listen: 198.18.0.100:8080, pool: web}]
`

func TestRestartOnlyChangesNameEachKeyARestartNeeds(t *testing.T) {
	running := mustParse(t, reloadBase)
	for _, c := range []struct {
		name, doc string
		want      []string
	}{
		{"the same file", reloadBase, nil},
		{"live changes only", "node: {name: lb-1, shutdown_grace: 3s}\nlog: {level: debug}\n" + reloadServed, nil},
		{"a backend added", `
node: {name: lb-1}
pools: [{name: web, backends: [{address: 198.18.0.21:9000}, {address: 198.18.0.22:9000}]}]
frontends: [{name: web, listen: 198.18.0.100:8080, pool: web}]
`, nil},
		{"node name", "node: {name: lb-2}\n" + reloadServed, []string{"node.name"}},
		{"cluster binds and admin", reloadBase + "cluster: {raft_bind: 127.0.0.1:7100, gossip_bind: 127.0.0.1:7101}\nadmin: {listen: 127.0.0.1:9901}\n",
			[]string{"cluster.raft_bind", "cluster.gossip_bind", "admin.listen"}},
		{"log format", reloadBase + "log: {format: console}\n", []string{"log.format"}},
		// VIPs are added, removed and changed live (cmd/vipd's target).
		{"a VIP added", reloadBase + "vips: [{address: 198.18.0.100, interface: eth0}]\n", nil},
	} {
		next, err := Parse([]byte(c.doc))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := RestartOnlyChanges(running, next); !slices.Equal(got, c.want) {
			t.Errorf("%s: restart-only changes %q, want %q", c.name, got, c.want)
		}
	}
	keyed := *running
	keyed.Cluster.SecretKeys = [][]byte{[]byte("another key")}
	if got := RestartOnlyChanges(running, &keyed); !slices.Equal(got, []string{"cluster (file contents)"}) {
		t.Errorf("secret content changed: %q", got)
	}
}

func TestDigestFollowsWhatANodeServesOnly(t *testing.T) {
	running := mustParse(t, reloadBase)
	if Digest(running) != Digest(mustParse(t, reloadBase)) {
		t.Fatal("the same file gives two digests")
	}
	local := mustParse(t, reloadBase+"log: {level: debug}\ncluster: {raft_bind: 127.0.0.1:7100}\n")
	if Digest(local) != Digest(running) {
		t.Error("a node-local change (log, cluster binds) changed the digest")
	}
	weighted := mustParse(t, `
node: {name: lb-1}
pools: [{name: web, backends: [{address: 198.18.0.21:9000, weight: 2}]}]
frontends: [{name: web, listen: 198.18.0.100:8080, pool: web}]
`)
	if Digest(weighted) == Digest(running) {
		t.Error("a backend weight change kept the digest")
	}
}
