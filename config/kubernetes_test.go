package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/vipd/vipd/addrpool"
)

// kubeFile is a file with its own VIP, frontend and pool beside a
// kubernetes section whose pools those stay off.
const kubeFile = `
node: {name: lb-1}
vips:
  - {address: 198.18.0.100, interface: eth0}
frontends:
  - {name: web, listen: 198.18.0.100:8080, pool: web}
pools:
  - {name: web, backends: [{address: 198.18.0.21:9000}]}
kubernetes:
  class: vipd.example/lb
  interface: eth1
  address_pools:
    - name: default
      addresses: [198.18.0.200/29, 198.18.0.210-198.18.0.219]
    - name: team
      addresses: ["2001:db8::/124"]
      namespaces: [team-a, team-b]
`

func TestKubernetesSectionLoadsAndEnables(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := mustParse(t, kubeFile+"  kubeconfig: "+kubeconfig+"\n")
	k := cfg.Kubernetes
	if !k.Enabled() {
		t.Fatal("a file with a kubernetes section is not Enabled")
	}
	want := Kubernetes{Kubeconfig: kubeconfig, Class: "vipd.example/lb", Interface: "eth1", AddressPools: []AddressPool{
		{Name: "default", Addresses: []string{"198.18.0.200/29", "198.18.0.210-198.18.0.219"}},
		{Name: "team", Addresses: []string{"2001:db8::/124"}, Namespaces: []string{"team-a", "team-b"}},
	}}
	if !reflect.DeepEqual(k, want) {
		t.Errorf("kubernetes section\n got %+v\nwant %+v", k, want)
	}
	if mustParse(t, validDoc).Kubernetes.Enabled() || Default().Kubernetes.Enabled() {
		t.Error("a file without a kubernetes section is Enabled")
	}
}

func TestKubernetesPoolsAreParsedRanges(t *testing.T) {
	got := mustParse(t, kubeFile).Kubernetes.Pools()
	a := netip.MustParseAddr
	want := []addrpool.Pool{
		{Name: "default", Ranges: []addrpool.Range{
			{First: a("198.18.0.200"), Last: a("198.18.0.207")},
			{First: a("198.18.0.210"), Last: a("198.18.0.219")},
		}},
		{Name: "team", Namespaces: []string{"team-a", "team-b"}, Ranges: []addrpool.Range{
			{First: a("2001:db8::"), Last: a("2001:db8::f")},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Pools()\n got %+v\nwant %+v", got, want)
	}
	if _, err := addrpool.New(got); err != nil {
		t.Errorf("the allocator refuses the loaded pools: %v", err)
	}
}

// Each mistake in the kubernetes section, and each clash of the file's own
// VIPs and listeners with its pools, names the key path (and the line
// where the key is in the file).
func TestKubernetesConfigErrors(t *testing.T) {
	const head = "kubernetes:\n  interface: eth1\n"
	const pools = head + "  address_pools:\n    - {name: default, addresses: [198.18.0.200/29]}\n"
	web := "pools: [{name: web, backends: [{address: 198.18.0.21:9000}]}]\n"
	cases := []struct {
		name string
		doc  string
		want []string
	}{
		{"missing interface", "kubernetes:\n  address_pools: [{name: default, addresses: [198.18.0.200/29]}]\n",
			[]string{"kubernetes.interface", "required"}},
		{"empty section", "kubernetes: {}\n",
			[]string{"kubernetes.interface", "required", "kubernetes.address_pools", "at least one pool"}},
		{"bad interface name", "kubernetes:\n  interface: eth/1\n  address_pools: [{name: default, addresses: [198.18.0.200/29]}]\n",
			[]string{"line 2", "kubernetes.interface", `"eth/1"`, "not an interface name"}},
		{"interface name too long", "kubernetes:\n  interface: averyveryverylongname\n  address_pools: [{name: default, addresses: [198.18.0.200/29]}]\n",
			[]string{"line 2", "kubernetes.interface", "not an interface name"}},
		{"no address_pools", head, []string{"kubernetes.address_pools", "at least one pool is required"}},
		{"empty address_pools", head + "  address_pools: []\n",
			[]string{"kubernetes.address_pools", "at least one pool is required"}},
		{"pool without a name", head + "  address_pools:\n    - addresses: [198.18.0.200/29]\n",
			[]string{"kubernetes.address_pools[0].name", "required"}},
		{"pool without addresses", head + "  address_pools:\n    - name: default\n",
			[]string{"kubernetes.address_pools[0].addresses", "at least one CIDR or range"}},
		{"host bits set", head + "  address_pools:\n    - name: default\n      addresses:\n        - 198.18.0.0/24\n        - 198.18.1.5/24\n",
			[]string{"line 7", "kubernetes.address_pools[0].addresses[1]", `"198.18.1.5/24"`, "host bits set", "198.18.1.0/24"}},
		{"range backwards", head + "  address_pools:\n    - {name: default, addresses: [198.18.0.219-198.18.0.210]}\n",
			[]string{"line 4", "kubernetes.address_pools[0].addresses[0]", "last address comes before its first"}},
		{"empty namespace", head + "  address_pools:\n    - name: default\n      addresses: [198.18.0.200/29]\n      namespaces: [team-a, \"\"]\n",
			[]string{"line 6", "kubernetes.address_pools[0].namespaces[1]", "empty namespace name"}},
		{"overlapping pools", pools + "    - {name: other, addresses: [198.18.0.204-198.18.0.220]}\n",
			[]string{"line 4", "kubernetes.address_pools", `"other"`, "overlaps", `"default"`}},
		{"a pool named twice", pools + "    - {name: default, addresses: [198.18.1.0/29]}\n",
			[]string{"kubernetes.address_pools", `"default"`, "named twice"}},
		{"unreadable kubeconfig", pools + "  kubeconfig: /nonexistent/kubeconfig\n",
			[]string{"line 5", "kubernetes.kubeconfig", `"/nonexistent/kubeconfig"`, "cannot read", "no such file"}},
		{"unknown key", pools + "  clas: x\n",
			[]string{"line 5", "kubernetes.clas", "unknown key", "address_pools"}},
		{"a VIP in a pool", pools + "vips:\n  - {address: 198.18.0.100, interface: eth0}\n  - {address: 198.18.0.203, interface: eth0}\n",
			[]string{"line 7", "vips[1].address", `"198.18.0.203"`, `kubernetes address pool "default"`}},
		{"a frontend on a pool address", pools + web + "frontends:\n  - {name: web, listen: 198.18.0.201:80, pool: web}\n",
			[]string{"line 7", "frontends[0].listen", `"198.18.0.201:80"`, `kubernetes address pool "default"`}},
		{"an IPv6 frontend on a pool address",
			head + "  address_pools:\n    - {name: v6, addresses: [\"2001:db8::/124\"]}\n" + web +
				"frontends:\n  - {name: web, listen: \"[2001:db8::3]:80\", pool: web}\n",
			[]string{"frontends[0].listen", `kubernetes address pool "v6"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := parseFails(t, tc.doc, tc.want...)
			checkErrorsLocated(t, err)
		})
	}
}

// The file's own VIPs and listeners off the pools, and the wildcard
// listener, load.
func TestKubernetesFileEntriesOffThePoolsLoad(t *testing.T) {
	mustParse(t, kubeFile)
	mustParse(t, kubeFile+"  kubeconfig:\n") // a key with no value keeps the in-cluster default
	cfg := mustParse(t, strings.Replace(kubeFile, "198.18.0.100:8080", "0.0.0.0:8080", 1))
	if cfg.Frontends[0].Listen != "0.0.0.0:8080" {
		t.Fatalf("listen %q", cfg.Frontends[0].Listen)
	}
}

// The kubernetes section is restart-only: its client and informers are
// built once. diffPaths must name the section by its key, not by its whole
// yaml tag ("kubernetes,omitempty").
func TestRestartOnlyChangesNameKubernetesKeys(t *testing.T) {
	running := mustParse(t, kubeFile)
	for _, c := range []struct {
		name string
		doc  string
		want []string
	}{
		{"the same file", kubeFile, nil},
		{"class", strings.Replace(kubeFile, "class: vipd.example/lb", "class: other.example/lb", 1), []string{"kubernetes.class"}},
		{"interface", strings.Replace(kubeFile, "interface: eth1", "interface: eth2", 1), []string{"kubernetes.interface"}},
		{"a pool's addresses", strings.Replace(kubeFile, "198.18.0.200/29", "198.18.0.192/29", 1), []string{"kubernetes.address_pools"}},
		{"the section removed", kubeFile[:strings.Index(kubeFile, "kubernetes:")],
			[]string{"kubernetes.class", "kubernetes.interface", "kubernetes.address_pools"}},
		{"a backend added: live", strings.Replace(kubeFile, "[{address: 198.18.0.21:9000}]", "[{address: 198.18.0.21:9000}, {address: 198.18.0.22:9000}]", 1), nil},
	} {
		next := mustParse(t, c.doc)
		if got := RestartOnlyChanges(running, next); !slices.Equal(got, c.want) {
			t.Errorf("%s: restart-only changes %q, want %q", c.name, got, c.want)
		}
	}
	// Served entries are live, whatever they add.
	next, err := running.WithServed(testServed())
	if err != nil {
		t.Fatal(err)
	}
	if got := RestartOnlyChanges(running, next); got != nil {
		t.Errorf("served entries: restart-only changes %q", got)
	}
}

// testServed is one Service: its spread VIP, a frontend on it and its pool.
func testServed() Served {
	return Served{
		VIPs:      []VIP{ServedVIP("198.18.0.201", "eth1")},
		Frontends: []Frontend{ServedFrontend("default/svc:80", "198.18.0.201:80", "default/svc:80")},
		Pools:     []Pool{ServedPool("default/svc:80", []string{"10.0.0.1:8080", "10.0.0.2:8080"})},
	}
}

func TestWithServedAppendsAfterTheFileAndLeavesItAlone(t *testing.T) {
	file := mustParse(t, kubeFile)
	pristine := mustParse(t, kubeFile)
	s := testServed()
	out, err := file.WithServed(s)
	if err != nil {
		t.Fatalf("WithServed: %v", err)
	}
	if !reflect.DeepEqual(file, pristine) {
		t.Fatalf("WithServed changed the file's config:\n got %+v\nwant %+v", file, pristine)
	}
	if want := append(slices.Clone(pristine.VIPs), s.VIPs...); !reflect.DeepEqual(out.VIPs, want) {
		t.Errorf("VIPs %+v, want %+v", out.VIPs, want)
	}
	if want := append(slices.Clone(pristine.Frontends), s.Frontends...); !reflect.DeepEqual(out.Frontends, want) {
		t.Errorf("frontends %+v, want %+v", out.Frontends, want)
	}
	if want := append(slices.Clone(pristine.Pools), s.Pools...); !reflect.DeepEqual(out.Pools, want) {
		t.Errorf("pools %+v, want %+v", out.Pools, want)
	}
	if !reflect.DeepEqual(out.Kubernetes, pristine.Kubernetes) || out.Node != pristine.Node || !reflect.DeepEqual(out.Admin, pristine.Admin) {
		t.Error("WithServed changed a section other than vips, frontends and pools")
	}
	if empty, err := file.WithServed(Served{}); err != nil || !reflect.DeepEqual(empty, file) {
		t.Errorf("nothing served: %v; the copy differs from the file: %v", err, !reflect.DeepEqual(empty, file))
	}
}

// A file config whose slices have room to grow must keep its backing
// arrays: two merges must not write into them, nor into each other.
func TestWithServedDoesNotWriteIntoSpareCapacity(t *testing.T) {
	file := mustParse(t, kubeFile)
	file.VIPs = append(make([]VIP, 0, 8), file.VIPs...)
	file.Frontends = append(make([]Frontend, 0, 8), file.Frontends...)
	file.Pools = append(make([]Pool, 0, 8), file.Pools...)
	pristine := mustParse(t, kubeFile)

	first, err := file.WithServed(testServed())
	if err != nil {
		t.Fatal(err)
	}
	other := Served{
		VIPs:      []VIP{ServedVIP("198.18.0.202", "eth1")},
		Frontends: []Frontend{ServedFrontend("team/other:443", "198.18.0.202:443", "team/other:443")},
		Pools:     []Pool{ServedPool("team/other:443", []string{"10.0.1.1:8443"})},
	}
	second, err := file.WithServed(other)
	if err != nil {
		t.Fatal(err)
	}
	if spare := file.VIPs[:len(file.VIPs)+1][len(file.VIPs)]; !reflect.DeepEqual(spare, VIP{}) {
		t.Errorf("the file's VIPs array was written past its length: %+v", spare)
	}
	if spare := file.Frontends[:len(file.Frontends)+1][len(file.Frontends)]; !reflect.DeepEqual(spare, Frontend{}) {
		t.Errorf("the file's frontends array was written past its length: %+v", spare)
	}
	if spare := file.Pools[:len(file.Pools)+1][len(file.Pools)]; !reflect.DeepEqual(spare, Pool{}) {
		t.Errorf("the file's pools array was written past its length: %+v", spare)
	}
	if first.VIPs[1].Address != "198.18.0.201" || first.Frontends[1].Name != "default/svc:80" || first.Pools[1].Name != "default/svc:80" {
		t.Errorf("a second merge overwrote the first: %+v %+v %+v", first.VIPs, first.Frontends, first.Pools)
	}
	if second.VIPs[1].Address != "198.18.0.202" || second.Pools[1].Name != "team/other:443" {
		t.Errorf("second merge %+v %+v", second.VIPs, second.Pools)
	}
	if !slices.EqualFunc(file.Pools, pristine.Pools, func(a, b Pool) bool { return reflect.DeepEqual(a, b) }) {
		t.Error("the file's pools changed")
	}
}

// What is served is validated with the file's entries: a clash gives an
// error naming the merged key and no config.
func TestWithServedRefusesAClashWithTheFile(t *testing.T) {
	file := mustParse(t, kubeFile)
	pristine := mustParse(t, kubeFile)
	pool := ServedPool("default/svc:80", []string{"10.0.0.1:8080"})
	for _, c := range []struct {
		name string
		s    Served
		want []string
	}{
		{"a listen the file's frontend uses",
			Served{Frontends: []Frontend{ServedFrontend("default/svc:8080", "198.18.0.100:8080", "default/svc:80")}, Pools: []Pool{pool}},
			[]string{"frontends[1].listen", `"198.18.0.100:8080"`, "already used by frontends[0]"}},
		{"the file's pool name", Served{Pools: []Pool{ServedPool("web", []string{"10.0.0.1:8080"})}},
			[]string{"pools[1].name", `"web"`, "duplicate pool name"}},
		{"the file's frontend name",
			Served{Frontends: []Frontend{ServedFrontend("web", "198.18.0.201:80", "default/svc:80")}, Pools: []Pool{pool}},
			[]string{"frontends[1].name", "duplicate frontend name"}},
		{"a frontend naming a missing pool",
			Served{Frontends: []Frontend{ServedFrontend("default/svc:80", "198.18.0.201:80", "default/gone:80")}},
			[]string{"frontends[1].pool", `"default/gone:80"`, "no pool of that name"}},
		{"the file's VIP", Served{VIPs: []VIP{ServedVIP("198.18.0.100", "eth1")}},
			[]string{"vips[1].address", "already used by vips[0]"}},
		{"two served pools of one name", Served{Pools: []Pool{pool, pool}},
			[]string{"pools[2].name", "duplicate pool name"}},
	} {
		out, err := file.WithServed(c.s)
		if err == nil {
			t.Errorf("%s: accepted: %+v", c.name, out)
			continue
		}
		if out != nil {
			t.Errorf("%s: a config came with the error", c.name)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, err, w)
			}
		}
	}
	if !reflect.DeepEqual(file, pristine) {
		t.Error("a refused merge changed the file's config")
	}
}

// ServedPool starts healthy, is marked Served, and otherwise has the
// defaults a file's pool gets; ServedVIP and ServedFrontend likewise.
func TestServedEntriesHaveTheFilesDefaults(t *testing.T) {
	p := ServedPool("default/svc:80", []string{"10.0.0.1:8080", "10.0.0.2:8080"})
	if !p.Served || p.Health.Initial != InitialHealthy {
		t.Errorf("served pool: Served %v, initial %q; want true, healthy", p.Served, p.Health.Initial)
	}
	file := mustParse(t, `
vips: [{address: 198.18.0.201, interface: eth1, placement: spread}]
frontends: [{name: "default/svc:80", listen: 198.18.0.201:80, pool: "default/svc:80"}]
pools:
  - name: default/svc:80
    backends: [{address: 10.0.0.1:8080}, {address: 10.0.0.2:8080}]
    health: {initial: healthy}
`)
	p.Served = false
	if !reflect.DeepEqual(p, file.Pools[0]) {
		t.Errorf("served pool\n got %+v\nwant %+v (the file's)", p, file.Pools[0])
	}
	if v := ServedVIP("198.18.0.201", "eth1"); !reflect.DeepEqual(v, file.VIPs[0]) {
		t.Errorf("served VIP\n got %+v\nwant %+v (the file's)", v, file.VIPs[0])
	}
	if fe := ServedFrontend("default/svc:80", "198.18.0.201:80", "default/svc:80"); !reflect.DeepEqual(fe, file.Frontends[0]) {
		t.Errorf("served frontend\n got %+v\nwant %+v (the file's)", fe, file.Frontends[0])
	}
}

// Served is not a key of the file: it does not appear in a pool written as
// YAML, and a file cannot set it.
func TestServedIsNotAFileKey(t *testing.T) {
	out, err := yaml.Marshal(ServedPool("default/svc:80", []string{"10.0.0.1:8080"}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(string(out)), "served") {
		t.Errorf("a served pool's YAML names Served:\n%s", out)
	}
	var back Pool
	if err := yaml.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if back.Served {
		t.Error("Served came back from YAML")
	}
	parseFails(t, "pools: [{name: p, served: true, backends: [{address: 127.0.0.1:9000}]}]\n",
		"pools[0].served", "unknown key")
}
