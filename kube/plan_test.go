package kube

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vipd/vipd/addrpool"
	"github.com/vipd/vipd/config"
)

// These tests drive makePlan alone: Services and EndpointSlices built in
// memory, no API server. controller_test.go covers the controller around it.

// epoch is when the first Service of a test was created; a Service's
// created argument counts seconds after it.
var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func ptrTo[T any](v T) *T { return &v }

// addrPool is a pool of the given CIDRs or ranges.
func addrPool(t *testing.T, name string, ranges ...string) addrpool.Pool {
	t.Helper()
	p := addrpool.Pool{Name: name}
	for _, s := range ranges {
		r, err := addrpool.ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		p.Ranges = append(p.Ranges, r)
	}
	return p
}

// defaultPool is 198.18.0.200-198.18.0.207.
func defaultPool(t *testing.T) addrpool.Pool {
	return addrPool(t, "default", "198.18.0.200/29")
}

func leaderSetup(pools ...addrpool.Pool) setup {
	return setup{pools: pools, iface: "eth0", node: "n1", allocates: true}
}

func followerSetup(pools ...addrpool.Pool) setup {
	s := leaderSetup(pools...)
	s.allocates = false
	return s
}

type svcOption func(*corev1.Service)

// newService is a LoadBalancer without a class in namespace ns, created
// created seconds after epoch, with a TCP port "http" 80 unless an option
// sets ports.
func newService(ns, name string, created int, opts ...svcOption) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{},
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(created) * time.Second))},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// withStatus gives the Service the ingress vipd writes (ipMode Proxy).
func withStatus(addr string) svcOption {
	return withIngress(addr, ptrTo(corev1.LoadBalancerIPModeProxy))
}

func withIngress(addr string, mode *corev1.LoadBalancerIPMode) svcOption {
	return func(s *corev1.Service) {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: addr, IPMode: mode})
	}
}

func withAnnotation(key, value string) svcOption {
	return func(s *corev1.Service) { s.Annotations[key] = value }
}

func withClass(class string) svcOption {
	return func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptrTo(class) }
}

func withType(t corev1.ServiceType) svcOption {
	return func(s *corev1.Service) { s.Spec.Type = t }
}

func withLocalPolicy(s *corev1.Service) {
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}

func withPorts(ports ...corev1.ServicePort) svcOption {
	return func(s *corev1.Service) { s.Spec.Ports = ports }
}

func tcpPort(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP}
}

// newSlice is an IPv4 EndpointSlice of Service ns/svc with the given
// ports and endpoints.
func newSlice(ns, svc, name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func slicePort(name string, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptrTo(name), Port: ptrTo(port), Protocol: ptrTo(corev1.ProtocolTCP)}
}

// endpoint is a ready endpoint (Ready unset) on node.
func endpoint(node string, addrs ...string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: addrs, NodeName: ptrTo(node)}
}

func endpointReady(ready bool, node string, addrs ...string) discoveryv1.Endpoint {
	e := endpoint(node, addrs...)
	e.Conditions.Ready = ptrTo(ready)
	return e
}

func mustPlan(t *testing.T, c setup, services []*corev1.Service, slices ...*discoveryv1.EndpointSlice) plan {
	t.Helper()
	p, err := makePlan(c, services, slices)
	if err != nil {
		t.Fatalf("makePlan: %v", err)
	}
	return p
}

// writesOf renders p's writes as "ns/name=addr(pool)", "ns/name=clear(pool)".
func writesOf(p plan) []string {
	var out []string
	for _, w := range p.writes {
		what := "clear"
		if w.addr.IsValid() {
			what = w.addr.String()
		}
		out = append(out, serviceKey(w.svc)+"="+what+"("+w.pool+")")
	}
	return out
}

func vipsOf(p plan) []string {
	var out []string
	for _, v := range p.served.VIPs {
		out = append(out, v.Address)
	}
	return out
}

// frontendsOf renders p's frontends as "name listen -> backends".
func frontendsOf(t *testing.T, p plan) []string {
	t.Helper()
	pools := map[string]config.Pool{}
	for _, pl := range p.served.Pools {
		pools[pl.Name] = pl
	}
	var out []string
	for _, fe := range p.served.Frontends {
		pl, ok := pools[fe.Pool]
		if !ok {
			t.Errorf("frontend %s: pool %q not served", fe.Name, fe.Pool)
		}
		var backends []string
		for _, b := range pl.Backends {
			backends = append(backends, b.Address)
		}
		out = append(out, fe.Name+" "+fe.Listen+" -> "+strings.Join(backends, ","))
	}
	return out
}

func pendingKeys(p plan) []string {
	var out []string
	for k := range p.pending {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func TestPlanServesOnlyLoadBalancersOfItsClass(t *testing.T) {
	cases := []struct {
		name  string
		class string // setup.class
		opts  []svcOption
		ours  bool
	}{
		{"unset class, setup unset", "", nil, true},
		{"unset class, setup x", "x", nil, false},
		{"class x, setup x", "x", []svcOption{withClass("x")}, true},
		{"class x, setup unset", "", []svcOption{withClass("x")}, false},
		{"class y, setup x", "x", []svcOption{withClass("y")}, false},
		{"ClusterIP, setup unset", "", []svcOption{withType(corev1.ServiceTypeClusterIP)}, false},
		{"ClusterIP with class x, setup x", "x", []svcOption{withClass("x"), withType(corev1.ServiceTypeClusterIP)}, false},
		{"NodePort, setup unset", "", []svcOption{withType(corev1.ServiceTypeNodePort)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The leader allocates for a Service of ours and for no other.
			c := leaderSetup(defaultPool(t))
			c.class = tc.class
			p := mustPlan(t, c, []*corev1.Service{newService("default", "web", 0, tc.opts...)})
			var want []string
			if tc.ours {
				want = []string{"default/web=198.18.0.200(default)"}
			}
			equal(t, "leader writes", writesOf(p), want)
			if len(p.pending) != 0 {
				t.Errorf("pending = %v, want none", p.pending)
			}

			// Every node serves a Service of ours that holds an address,
			// and no other (a follower: no stale clearing either).
			c.allocates = false
			held := newService("default", "web", 0, append(tc.opts, withStatus("198.18.0.203"))...)
			p = mustPlan(t, c, []*corev1.Service{held})
			want = nil
			if tc.ours {
				want = []string{"198.18.0.203"}
			}
			equal(t, "follower VIPs", vipsOf(p), want)
			if wantN := len(want); p.allocated != wantN {
				t.Errorf("allocated = %d, want %d", p.allocated, wantN)
			}
		})
	}
}

func TestPlanFollowerWritesNothingAndWaitsForTheLeader(t *testing.T) {
	p := mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{newService("default", "web", 0)})
	if len(p.writes) != 0 {
		t.Errorf("follower writes %q, want none", writesOf(p))
	}
	err := p.pending["default/web"]
	if err == nil || !strings.Contains(err.Error(), "waiting for the leader") {
		t.Errorf("pending[default/web] = %v, want waiting for the leader", err)
	}
	if len(p.served.VIPs) != 0 {
		t.Errorf("follower serves %q before any status", vipsOf(p))
	}
}

func TestPlanLeaderWritesTheFirstFreeAddressWithItsPool(t *testing.T) {
	full := addrPool(t, "small", "198.18.1.10/32")
	c := leaderSetup(full, defaultPool(t))
	p := mustPlan(t, c, []*corev1.Service{
		newService("default", "old", 0, withStatus("198.18.1.10")),  // fills pool small
		newService("default", "mid", 1, withStatus("198.18.0.200")), // first of default
		newService("default", "new", 2),
	})
	equal(t, "writes", writesOf(p), []string{"default/new=198.18.0.201(default)"})
	if len(p.pending) != 0 {
		t.Errorf("pending = %v", p.pending)
	}
	// An address being written is not served until the status carries it.
	equal(t, "VIPs", vipsOf(p), []string{"198.18.0.200", "198.18.1.10"})
}

func TestPlanAllocatesInCreationOrderNotListOrder(t *testing.T) {
	services := []*corev1.Service{
		newService("default", "a-young", 20),
		newService("default", "z-old", 10),
	}
	p := mustPlan(t, leaderSetup(defaultPool(t)), services)
	equal(t, "writes", writesOf(p), []string{
		"default/z-old=198.18.0.200(default)",
		"default/a-young=198.18.0.201(default)",
	})
}

func TestPlanKeepsStatusAddressesInCreationOrder(t *testing.T) {
	// Both carry .200 (no sharing key): the older keeps it wherever it is
	// in the list, so every node agrees; the leader moves the younger.
	services := []*corev1.Service{
		newService("default", "a-young", 20, withStatus("198.18.0.200")),
		newService("default", "z-old", 10, withStatus("198.18.0.200")),
	}
	for _, c := range []setup{leaderSetup(defaultPool(t)), followerSetup(defaultPool(t))} {
		p := mustPlan(t, c, services)
		equal(t, "VIPs", vipsOf(p), []string{"198.18.0.200"})
		if c.allocates {
			equal(t, "leader writes", writesOf(p), []string{"default/a-young=198.18.0.201(default)"})
		} else {
			equal(t, "follower pending", pendingKeys(p), []string{"default/a-young"})
		}
	}
}

func TestPlanKeepsAndServesItsStatusAddress(t *testing.T) {
	svc := newService("default", "web", 0, withStatus("198.18.0.203"))
	for _, c := range []setup{leaderSetup(defaultPool(t)), followerSetup(defaultPool(t))} {
		p := mustPlan(t, c, []*corev1.Service{svc})
		if len(p.writes) != 0 || len(p.pending) != 0 {
			t.Errorf("allocates=%v: writes %q, pending %v; want none", c.allocates, writesOf(p), p.pending)
		}
		equal(t, "VIPs", vipsOf(p), []string{"198.18.0.203"})
		if p.allocated != 1 {
			t.Errorf("allocated = %d, want 1", p.allocated)
		}
	}
}

func TestPlanDoesNotTakeAStatusAddressWithoutProxyModeAsOurs(t *testing.T) {
	for name, mode := range map[string]*corev1.LoadBalancerIPMode{
		"no ipMode":  nil,
		"ipMode VIP": ptrTo(corev1.LoadBalancerIPModeVIP),
	} {
		t.Run(name, func(t *testing.T) {
			svc := newService("default", "web", 0, withIngress("198.18.0.203", mode))
			p := mustPlan(t, leaderSetup(defaultPool(t)), []*corev1.Service{svc})
			equal(t, "writes", writesOf(p), []string{"default/web=198.18.0.200(default)"})
			equal(t, "VIPs", vipsOf(p), nil)

			// Nor is such a status stale on a Service that is not ours.
			other := newService("default", "other", 0, withType(corev1.ServiceTypeClusterIP), withIngress("198.18.0.204", mode))
			p = mustPlan(t, leaderSetup(defaultPool(t)), []*corev1.Service{other})
			equal(t, "writes for a foreign status", writesOf(p), nil)
		})
	}
}

func TestPlanReallocatesAStatusAddressOutsideEveryPool(t *testing.T) {
	svc := newService("default", "web", 0, withStatus("10.9.9.9"))
	p := mustPlan(t, leaderSetup(defaultPool(t)), []*corev1.Service{svc})
	equal(t, "writes", writesOf(p), []string{"default/web=198.18.0.200(default)"})
	equal(t, "VIPs", vipsOf(p), nil)

	p = mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{svc})
	equal(t, "follower pending", pendingKeys(p), []string{"default/web"})
	equal(t, "follower VIPs", vipsOf(p), nil)
}

func TestPlanGivesTheRequestedAddress(t *testing.T) {
	cases := []struct {
		name string
		opts []svcOption
		want string
	}{
		{"annotation", []svcOption{withAnnotation(AnnotationAddress, "198.18.0.205")}, "198.18.0.205"},
		{"spec.loadBalancerIP", []svcOption{func(s *corev1.Service) { s.Spec.LoadBalancerIP = "198.18.0.206" }}, "198.18.0.206"},
		{"annotation wins", []svcOption{withAnnotation(AnnotationAddress, "198.18.0.205"),
			func(s *corev1.Service) { s.Spec.LoadBalancerIP = "198.18.0.206" }}, "198.18.0.205"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPlan(t, leaderSetup(defaultPool(t)), []*corev1.Service{newService("default", "web", 0, tc.opts...)})
			equal(t, "writes", writesOf(p), []string{"default/web=" + tc.want + "(default)"})
		})
	}
}

func TestPlanMovesAServiceToANewlyRequestedAddress(t *testing.T) {
	svc := newService("default", "web", 0, withStatus("198.18.0.200"), withAnnotation(AnnotationAddress, "198.18.0.205"))
	p := mustPlan(t, leaderSetup(defaultPool(t)), []*corev1.Service{svc})
	equal(t, "writes", writesOf(p), []string{"default/web=198.18.0.205(default)"})
	equal(t, "VIPs while moving", vipsOf(p), []string{"198.18.0.200"})

	// Until the leader's write lands, the Service is served where it is.
	p = mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{svc})
	equal(t, "follower pending", pendingKeys(p), nil)
	equal(t, "follower VIPs while moving", vipsOf(p), []string{"198.18.0.200"})

	// Once the status carries what it asks for, it stays.
	moved := newService("default", "web", 0, withStatus("198.18.0.205"), withAnnotation(AnnotationAddress, "198.18.0.205"))
	p = mustPlan(t, leaderSetup(defaultPool(t)), []*corev1.Service{moved})
	equal(t, "writes after the move", writesOf(p), nil)
	equal(t, "VIPs after the move", vipsOf(p), []string{"198.18.0.205"})
}

func TestPlanLeavesABadRequestedAddressPending(t *testing.T) {
	for name, opt := range map[string]svcOption{
		"annotation":          withAnnotation(AnnotationAddress, "nope"),
		"spec.loadBalancerIP": func(s *corev1.Service) { s.Spec.LoadBalancerIP = "nope" },
	} {
		t.Run(name, func(t *testing.T) {
			p := mustPlan(t, leaderSetup(defaultPool(t)), []*corev1.Service{newService("default", "web", 0, opt)})
			equal(t, "writes", writesOf(p), nil)
			err := p.pending["default/web"]
			if err == nil || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "default/web") {
				t.Errorf("pending[default/web] = %v, want an error naming the Service and \"nope\"", err)
			}
			if p.allocated != 0 {
				t.Errorf("allocated = %d, want 0", p.allocated)
			}
		})
	}
}

func TestPlanRequestedAddressOutsideThePoolsIsPending(t *testing.T) {
	svc := newService("default", "web", 0, withAnnotation(AnnotationAddress, "10.9.9.9"))
	p := mustPlan(t, leaderSetup(defaultPool(t)), []*corev1.Service{svc})
	equal(t, "writes", writesOf(p), nil)
	if err := p.pending["default/web"]; !errors.Is(err, addrpool.ErrNotInPool) {
		t.Errorf("pending[default/web] = %v, want %v", err, addrpool.ErrNotInPool)
	}
}

func TestPlanTakesFromTheAnnotatedPool(t *testing.T) {
	c := leaderSetup(defaultPool(t), addrPool(t, "edge", "198.18.5.1-198.18.5.3"))
	p := mustPlan(t, c, []*corev1.Service{
		newService("default", "any", 0),
		newService("default", "edge", 1, withAnnotation(AnnotationPool, "edge")),
		newService("default", "nowhere", 2, withAnnotation(AnnotationPool, "missing")),
	})
	equal(t, "writes", writesOf(p), []string{
		"default/any=198.18.0.200(default)",
		"default/edge=198.18.5.1(edge)",
	})
	if err := p.pending["default/nowhere"]; err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("pending[default/nowhere] = %v, want an error naming pool \"missing\"", err)
	}

	// A status address in another pool than the one annotated moves.
	held := newService("default", "edge", 0, withStatus("198.18.0.200"), withAnnotation(AnnotationPool, "edge"))
	p = mustPlan(t, c, []*corev1.Service{held})
	equal(t, "writes for a held address in the wrong pool", writesOf(p), []string{"default/edge=198.18.5.1(edge)"})
}

func TestPlanKeepsANamespaceLimitedPoolToItsNamespaces(t *testing.T) {
	team := addrPool(t, "team", "198.18.7.1/32")
	team.Namespaces = []string{"team"}
	c := leaderSetup(team, defaultPool(t))
	p := mustPlan(t, c, []*corev1.Service{
		newService("other", "web", 0),
		newService("team", "web", 1),
		newService("other", "asks", 2, withAnnotation(AnnotationPool, "team")),
	})
	equal(t, "writes", writesOf(p), []string{
		"other/web=198.18.0.200(default)",
		"team/web=198.18.7.1(team)",
	})
	if err := p.pending["other/asks"]; err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Errorf("pending[other/asks] = %v, want an error about the namespace", err)
	}

	// A status address from a pool the namespace may not use is not kept.
	stray := newService("other", "stray", 0, withStatus("198.18.7.1"))
	p = mustPlan(t, c, []*corev1.Service{stray})
	equal(t, "writes for a stray address", writesOf(p), []string{"other/stray=198.18.0.200(default)"})
}

func TestPlanSharesAnAddressByKeyWhenPortsDiffer(t *testing.T) {
	shared := withAnnotation(AnnotationSharingKey, "k")
	c := leaderSetup(defaultPool(t))
	p := mustPlan(t, c, []*corev1.Service{
		newService("default", "web", 0, shared, withPorts(tcpPort("http", 80))),
		newService("default", "tls", 1, shared, withPorts(tcpPort("https", 443))),
	})
	equal(t, "writes", writesOf(p), []string{
		"default/web=198.18.0.200(default)",
		"default/tls=198.18.0.200(default)",
	})

	// Once both statuses carry it: one VIP, a frontend per Service.
	services := []*corev1.Service{
		newService("default", "web", 0, shared, withPorts(tcpPort("http", 80)), withStatus("198.18.0.200")),
		newService("default", "tls", 1, shared, withPorts(tcpPort("https", 443)), withStatus("198.18.0.200")),
	}
	p = mustPlan(t, c, services,
		newSlice("default", "web", "web-1", []discoveryv1.EndpointPort{slicePort("http", 8080)}, endpoint("n1", "10.0.0.1")),
		newSlice("default", "tls", "tls-1", []discoveryv1.EndpointPort{slicePort("https", 8443)}, endpoint("n1", "10.0.0.2")))
	equal(t, "writes", writesOf(p), nil)
	equal(t, "VIPs", vipsOf(p), []string{"198.18.0.200"})
	equal(t, "frontends", frontendsOf(t, p), []string{
		"k8s:default/web:80 198.18.0.200:80 -> 10.0.0.1:8080",
		"k8s:default/tls:443 198.18.0.200:443 -> 10.0.0.2:8443",
	})
}

func TestPlanDoesNotShareWhenPortsOverlap(t *testing.T) {
	shared := withAnnotation(AnnotationSharingKey, "k")
	p := mustPlan(t, leaderSetup(defaultPool(t)), []*corev1.Service{
		newService("default", "a", 0, shared, withPorts(tcpPort("http", 80), tcpPort("alt", 8080))),
		newService("default", "b", 1, shared, withPorts(tcpPort("alt", 8080))),
		newService("default", "c", 2, withAnnotation(AnnotationSharingKey, "other"), withPorts(tcpPort("x", 9000))),
	})
	equal(t, "writes", writesOf(p), []string{
		"default/a=198.18.0.200(default)",
		"default/b=198.18.0.201(default)",
		"default/c=198.18.0.202(default)",
	})

	// Both carrying it: the older keeps it, the younger moves.
	p = mustPlan(t, leaderSetup(defaultPool(t)), []*corev1.Service{
		newService("default", "b", 1, shared, withPorts(tcpPort("alt", 8080)), withStatus("198.18.0.200")),
		newService("default", "a", 0, shared, withPorts(tcpPort("http", 80), tcpPort("alt", 8080)), withStatus("198.18.0.200")),
	})
	equal(t, "writes when both hold it", writesOf(p), []string{"default/b=198.18.0.201(default)"})
}

func TestPlanClearsStaleStatusOnTheLeaderOnly(t *testing.T) {
	services := []*corev1.Service{
		newService("default", "was-lb", 0, withType(corev1.ServiceTypeClusterIP), withStatus("198.18.0.200")),
		newService("default", "other-class", 1, withClass("metallb"), withStatus("198.18.0.201")),
		newService("default", "foreign", 2, withType(corev1.ServiceTypeClusterIP), withStatus("10.9.9.9")),
	}
	p := mustPlan(t, leaderSetup(defaultPool(t)), services)
	equal(t, "leader writes", writesOf(p), []string{
		"default/was-lb=clear(default)",
		"default/other-class=clear(default)",
	})
	equal(t, "VIPs", vipsOf(p), nil)
	if p.allocated != 0 || len(p.pending) != 0 {
		t.Errorf("allocated %d, pending %v: stale Services are not ours", p.allocated, p.pending)
	}

	p = mustPlan(t, followerSetup(defaultPool(t)), services)
	equal(t, "follower writes", writesOf(p), nil)
}

func TestPlanServesOnlyReadyEndpoints(t *testing.T) {
	svc := newService("default", "web", 0, withStatus("198.18.0.200"))
	p := mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{svc},
		newSlice("default", "web", "web-1", []discoveryv1.EndpointPort{slicePort("http", 8080)},
			endpoint("n1", "10.0.0.1"),              // ready unset: ready
			endpointReady(true, "n1", "10.0.0.2"),   // ready
			endpointReady(false, "n1", "10.0.0.3"))) // not ready
	equal(t, "frontends", frontendsOf(t, p), []string{"k8s:default/web:80 198.18.0.200:80 -> 10.0.0.1:8080,10.0.0.2:8080"})
}

func TestPlanMatchesEndpointPortsByName(t *testing.T) {
	svc := newService("default", "web", 0, withStatus("198.18.0.200"),
		withPorts(tcpPort("http", 80), tcpPort("metrics", 9090), tcpPort("", 7000)))
	other := newService("default", "other", 1, withStatus("198.18.0.201"))
	p := mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{svc, other},
		newSlice("default", "web", "web-1",
			[]discoveryv1.EndpointPort{slicePort("metrics", 9100), slicePort("http", 8080), slicePort("", 7007)},
			endpoint("n1", "10.0.0.1")),
		// Another Service's slice, and one of the same name in another namespace.
		newSlice("default", "other", "other-1", []discoveryv1.EndpointPort{slicePort("http", 1)}, endpoint("n1", "10.0.9.9")),
		newSlice("elsewhere", "web", "web-x", []discoveryv1.EndpointPort{slicePort("http", 2)}, endpoint("n1", "10.0.8.8")))
	equal(t, "frontends", frontendsOf(t, p), []string{
		"k8s:default/web:80 198.18.0.200:80 -> 10.0.0.1:8080",
		"k8s:default/web:9090 198.18.0.200:9090 -> 10.0.0.1:9100",
		"k8s:default/web:7000 198.18.0.200:7000 -> 10.0.0.1:7007",
		"k8s:default/other:80 198.18.0.201:80 -> 10.0.9.9:1",
	})
}

func TestPlanGivesUDPPortsNoFrontend(t *testing.T) {
	svc := newService("default", "dns", 0, withStatus("198.18.0.200"), withPorts(
		corev1.ServicePort{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP},
		corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}))
	udp := discoveryv1.EndpointPort{Name: ptrTo("dns-udp"), Port: ptrTo(int32(5353)), Protocol: ptrTo(corev1.ProtocolUDP)}
	p := mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{svc},
		newSlice("default", "dns", "dns-1", []discoveryv1.EndpointPort{udp, slicePort("dns-tcp", 5353)}, endpoint("n1", "10.0.0.1")))
	equal(t, "frontends", frontendsOf(t, p), []string{"k8s:default/dns:53 198.18.0.200:53 -> 10.0.0.1:5353"})

	onlyUDP := newService("default", "dns", 0, withStatus("198.18.0.200"), withPorts(
		corev1.ServicePort{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP}))
	p = mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{onlyUDP},
		newSlice("default", "dns", "dns-1", []discoveryv1.EndpointPort{udp}, endpoint("n1", "10.0.0.1")))
	equal(t, "frontends of a UDP-only Service", frontendsOf(t, p), nil)
	equal(t, "VIPs of a UDP-only Service", vipsOf(p), []string{"198.18.0.200"})

	// The Service port's protocol decides, whatever the slice says: a
	// slice port without a protocol reads as TCP.
	noProto := discoveryv1.EndpointPort{Name: ptrTo("dns-udp"), Port: ptrTo(int32(5353))}
	p = mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{onlyUDP},
		newSlice("default", "dns", "dns-1", []discoveryv1.EndpointPort{noProto}, endpoint("n1", "10.0.0.1")))
	equal(t, "frontends of a UDP port whose slice port has no protocol", frontendsOf(t, p), nil)
}

func TestPlanIgnoresFQDNSlices(t *testing.T) {
	svc := newService("default", "web", 0, withStatus("198.18.0.200"))
	fqdn := newSlice("default", "web", "web-fqdn", []discoveryv1.EndpointPort{slicePort("http", 8080)}, endpoint("n1", "backend.example", "10.0.0.99"))
	fqdn.AddressType = discoveryv1.AddressTypeFQDN
	p := mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{svc}, fqdn,
		newSlice("default", "web", "web-1", []discoveryv1.EndpointPort{slicePort("http", 8080)}, endpoint("n1", "10.0.0.1")))
	equal(t, "frontends", frontendsOf(t, p), []string{"k8s:default/web:80 198.18.0.200:80 -> 10.0.0.1:8080"})
}

func TestPlanKeepsTheVIPForAPortWithoutReadyEndpoints(t *testing.T) {
	svc := newService("default", "web", 0, withStatus("198.18.0.200"), withPorts(tcpPort("http", 80), tcpPort("admin", 81)))
	p := mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{svc},
		newSlice("default", "web", "web-1", []discoveryv1.EndpointPort{slicePort("http", 8080)},
			endpoint("n1", "10.0.0.1")),
		newSlice("default", "web", "web-2", []discoveryv1.EndpointPort{slicePort("admin", 8081)},
			endpointReady(false, "n1", "10.0.0.2")))
	equal(t, "frontends", frontendsOf(t, p), []string{"k8s:default/web:80 198.18.0.200:80 -> 10.0.0.1:8080"})

	// No endpoints at all: still the VIP, no frontend.
	p = mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{svc})
	equal(t, "VIPs without endpoints", vipsOf(p), []string{"198.18.0.200"})
	equal(t, "frontends without endpoints", frontendsOf(t, p), nil)
}

func TestPlanSortsAndDeduplicatesBackendsAcrossSlices(t *testing.T) {
	svc := newService("default", "web", 0, withStatus("198.18.0.200"))
	ports := []discoveryv1.EndpointPort{slicePort("http", 8080)}
	p := mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{svc},
		newSlice("default", "web", "web-b", ports, endpoint("n2", "10.0.0.9"), endpoint("n1", "10.0.0.10", "10.0.0.2")),
		newSlice("default", "web", "web-a", ports, endpoint("n2", "10.0.0.9"), endpoint("n3", "10.0.0.1")))
	// Sorted as host:port strings, so that every node lists them alike.
	equal(t, "frontends", frontendsOf(t, p), []string{
		"k8s:default/web:80 198.18.0.200:80 -> 10.0.0.10:8080,10.0.0.1:8080,10.0.0.2:8080,10.0.0.9:8080",
	})
}

func TestPlanNamesFrontendsAndPoolsAfterServicePorts(t *testing.T) {
	svc := newService("shop", "cart", 0, withStatus("198.18.0.204"), withPorts(tcpPort("http", 8000)))
	p := mustPlan(t, followerSetup(defaultPool(t)), []*corev1.Service{svc},
		newSlice("shop", "cart", "cart-1", []discoveryv1.EndpointPort{slicePort("http", 80)}, endpoint("n1", "10.0.0.1")))
	if len(p.served.Frontends) != 1 || len(p.served.Pools) != 1 || len(p.served.VIPs) != 1 {
		t.Fatalf("served = %+v, want one VIP, frontend and pool", p.served)
	}
	fe, pl, vip := p.served.Frontends[0], p.served.Pools[0], p.served.VIPs[0]
	if fe.Name != "k8s:shop/cart:8000" || fe.Listen != "198.18.0.204:8000" || fe.Pool != fe.Name {
		t.Errorf("frontend = %s on %s with pool %s", fe.Name, fe.Listen, fe.Pool)
	}
	if pl.Name != fe.Name || !pl.Served {
		t.Errorf("pool = %s (served %v), want %s, served", pl.Name, pl.Served, fe.Name)
	}
	if vip.Address != "198.18.0.204" || vip.Interface != "eth0" || vip.Placement != config.PlacementSpread {
		t.Errorf("VIP = %s on %s placement %s, want 198.18.0.204 on eth0, spread", vip.Address, vip.Interface, vip.Placement)
	}
}

func TestPlanListensOnIPv6Addresses(t *testing.T) {
	c := followerSetup(addrPool(t, "v6", "2001:db8::10-2001:db8::1f"))
	svc := newService("default", "web", 0, withStatus("2001:db8::10"))
	es := newSlice("default", "web", "web-1", []discoveryv1.EndpointPort{slicePort("http", 8080)}, endpoint("n1", "2001:db8:1::5"))
	es.AddressType = discoveryv1.AddressTypeIPv6
	p := mustPlan(t, c, []*corev1.Service{svc}, es)
	equal(t, "VIPs", vipsOf(p), []string{"2001:db8::10"})
	equal(t, "frontends", frontendsOf(t, p), []string{"k8s:default/web:80 [2001:db8::10]:80 -> [2001:db8:1::5]:8080"})

	// The leader allocates from it for a Service of family IPv6.
	c.allocates = true
	fresh := newService("default", "fresh", 1, func(s *corev1.Service) { s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol} })
	p = mustPlan(t, c, []*corev1.Service{svc, fresh})
	equal(t, "writes", writesOf(p), []string{"default/fresh=2001:db8::11(v6)"})
}

func TestPlanMarksLocalFrontendsByThisNodesEndpoints(t *testing.T) {
	ports := []discoveryv1.EndpointPort{slicePort("http", 8080)}
	services := []*corev1.Service{
		newService("default", "here", 0, withStatus("198.18.0.200"), withLocalPolicy),
		newService("default", "away", 1, withStatus("198.18.0.201"), withLocalPolicy),
		newService("default", "here-unready", 2, withStatus("198.18.0.202"), withLocalPolicy),
		newService("default", "cluster", 3, withStatus("198.18.0.203")),
	}
	p := mustPlan(t, followerSetup(defaultPool(t)), services,
		newSlice("default", "here", "here-1", ports, endpoint("n2", "10.0.0.1"), endpoint("n1", "10.0.0.2")),
		newSlice("default", "away", "away-1", ports, endpoint("n2", "10.0.0.3")),
		newSlice("default", "here-unready", "hu-1", ports, endpoint("n2", "10.0.0.4"), endpointReady(false, "n1", "10.0.0.5")),
		newSlice("default", "cluster", "cluster-1", ports, endpoint("n1", "10.0.0.6")))
	want := map[string]bool{
		"k8s:default/here:80":         true,
		"k8s:default/away:80":         false,
		"k8s:default/here-unready:80": false,
	}
	if len(p.localOnly) != len(want) {
		t.Errorf("localOnly = %v, want %v", p.localOnly, want)
	}
	for name, here := range want {
		if got, ok := p.localOnly[name]; !ok || got != here {
			t.Errorf("localOnly[%s] = %v (present %v), want %v", name, got, ok, here)
		}
	}
	if _, ok := p.localOnly["k8s:default/cluster:80"]; ok {
		t.Errorf("a Cluster policy frontend is in localOnly: %v", p.localOnly)
	}
}

func TestPlanServedConfigValidates(t *testing.T) {
	shared := withAnnotation(AnnotationSharingKey, "k")
	ports := func(names ...string) []discoveryv1.EndpointPort {
		var out []discoveryv1.EndpointPort
		for i, n := range names {
			out = append(out, slicePort(n, int32(8000+i)))
		}
		return out
	}
	c := followerSetup(defaultPool(t), addrPool(t, "v6", "2001:db8::/124"))
	services := []*corev1.Service{
		newService("a", "web", 0, withStatus("198.18.0.200"), shared, withPorts(tcpPort("http", 80), tcpPort("https", 443))),
		newService("a", "api", 1, withStatus("198.18.0.200"), shared, withPorts(tcpPort("http", 8080))),
		newService("b", "web", 2, withStatus("198.18.0.201"), withPorts(tcpPort("http", 80))),
		newService("b", "v6", 3, withStatus("2001:db8::1"), withPorts(tcpPort("http", 80))),
	}
	p := mustPlan(t, c, services,
		newSlice("a", "web", "w", ports("http", "https"), endpoint("n1", "10.0.0.1", "10.0.0.2")),
		newSlice("a", "api", "a", ports("http"), endpoint("n1", "10.0.0.1")),
		newSlice("b", "web", "w", ports("http"), endpoint("n1", "10.0.0.1")),
		newSlice("b", "v6", "v", ports("http"), endpoint("n1", "10.0.0.1")))
	if len(p.served.VIPs) != 3 || len(p.served.Frontends) != 5 {
		t.Fatalf("served %q and %q, want 3 VIPs and 5 frontends", vipsOf(p), frontendsOf(t, p))
	}
	if _, err := (&config.Config{}).WithServed(p.served); err != nil {
		t.Errorf("served config does not validate: %v", err)
	}
}

func TestPlanCountsAllocatedPendingAndUsage(t *testing.T) {
	small := addrPool(t, "small", "198.18.0.200/31") // two addresses
	services := []*corev1.Service{
		newService("default", "held", 0, withStatus("198.18.0.201")),
		newService("default", "new", 1),
		newService("default", "late", 2),
		newService("default", "ignored", 3, withType(corev1.ServiceTypeClusterIP)),
	}
	p := mustPlan(t, leaderSetup(small), services)
	equal(t, "writes", writesOf(p), []string{"default/new=198.18.0.200(small)"})
	equal(t, "pending", pendingKeys(p), []string{"default/late"})
	if err := p.pending["default/late"]; !errors.Is(err, addrpool.ErrExhausted) || !strings.Contains(err.Error(), "small") {
		t.Errorf("pending[default/late] = %v, want %v naming pool small", err, addrpool.ErrExhausted)
	}
	if p.allocated != 2 {
		t.Errorf("leader allocated = %d, want 2 (held and being written)", p.allocated)
	}
	if want := []addrpool.Usage{{Pool: "small", Used: 2, Free: 0}}; !slices.Equal(p.usage, want) {
		t.Errorf("leader usage = %+v, want %+v", p.usage, want)
	}

	p = mustPlan(t, followerSetup(small), services)
	equal(t, "follower pending", pendingKeys(p), []string{"default/late", "default/new"})
	if p.allocated != 1 {
		t.Errorf("follower allocated = %d, want 1", p.allocated)
	}
	if want := []addrpool.Usage{{Pool: "small", Used: 1, Free: 1}}; !slices.Equal(p.usage, want) {
		t.Errorf("follower usage = %+v, want %+v", p.usage, want)
	}
}

func TestPlanRejectsBadPools(t *testing.T) {
	_, err := makePlan(leaderSetup(defaultPool(t), addrPool(t, "default", "198.18.9.0/30")), nil, nil)
	if err == nil {
		t.Error("makePlan with two pools named default: no error")
	}
}

// A Service whose request for another address fails (malformed, or taken)
// keeps the address its status carries: the leader never hands it to
// another Service meanwhile, so no two unshared Services show one
// EXTERNAL-IP.
func TestPlanServiceWhoseMoveFailsKeepsItsAddress(t *testing.T) {
	cases := map[string][]*corev1.Service{
		"bad requested address": {
			newService("default", "old", 0, withStatus("198.18.0.200"), withAnnotation(AnnotationAddress, "nope")),
			newService("default", "new", 1),
		},
		"move to a taken address": {
			newService("default", "old", 0, withStatus("198.18.0.200"), withAnnotation(AnnotationAddress, "198.18.0.201")),
			newService("default", "taker", 1, withStatus("198.18.0.201")),
			newService("default", "new", 2),
		},
	}
	for name, services := range cases {
		t.Run(name, func(t *testing.T) {
			p := mustPlan(t, leaderSetup(defaultPool(t)), services)
			// The statuses once the leader's writes are applied.
			after := map[string]string{}
			for _, s := range services {
				if a, ok := statusAddr(s); ok {
					after[serviceKey(s)] = a.String()
				}
			}
			for _, w := range p.writes {
				if w.addr.IsValid() {
					after[serviceKey(w.svc)] = w.addr.String()
				} else {
					delete(after, serviceKey(w.svc))
				}
			}
			by := map[string][]string{}
			for key, a := range after {
				by[a] = append(by[a], key)
			}
			for a, keys := range by {
				if len(keys) > 1 {
					slices.Sort(keys)
					t.Errorf("after the writes %q all show %s (writes %q, pending %v)", keys, a, writesOf(p), p.pending)
				}
			}
			if after["default/old"] != "198.18.0.200" || !slices.Contains(vipsOf(p), "198.18.0.200") {
				t.Errorf("old: status %q, VIPs %q; want it kept and served on 198.18.0.200", after["default/old"], vipsOf(p))
			}
			if p.failed["default/old"] == nil || p.pending["default/old"] != nil {
				t.Errorf("old: failed %v, pending %v; want its failed request reported (an Event), and not pending", p.failed["default/old"], p.pending["default/old"])
			}
		})
	}
}
