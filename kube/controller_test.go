package kube

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/e2e/bed"
)

// apiServer starts the bed's control plane (kube-apiserver and etcd from
// `make kube-tools`) and returns a client that reaches it from the bed's
// client host.
func apiServer(t *testing.T) kubernetes.Interface {
	t.Helper()
	b, cp := bed.StartKubeBed(t, filepath.Join("..", "bin", "kube"), "", bed.HostSpec{Name: "c", Addr: bed.ClientAddr})
	rc, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.Dial = b.Host("c").Dial
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// running is a Controller under test with its leadership switch and metrics.
type running struct {
	*Controller
	leading *atomic.Bool
	reg     *prometheus.Registry
	stop    func()
}

func startController(t *testing.T, client kubernetes.Interface, pools ...config.AddressPool) *running {
	t.Helper()
	r := &running{leading: new(atomic.Bool), reg: prometheus.NewRegistry()}
	c, err := New(Options{
		Config: config.Kubernetes{Interface: "eth0", AddressPools: pools},
		Node:   "n1", Leading: r.leading.Load, Client: client,
		Logger: zaptest.NewLogger(t), Registerer: r.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Controller = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// lead makes the controller the leader's.
func (r *running) lead() { r.leading.Store(true); r.Kick() }

func (r *running) gauge(name string, labels ...string) float64 {
	v, _ := r.reg.Gather()
	for _, mf := range v {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// eventually polls cond every 20 ms until it holds or 20 s pass.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: still not so after 20 s; last seen: %s", what, last)
}

func loadBalancer(name string, ports ...int32) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", p), Port: p, Protocol: corev1.ProtocolTCP})
	}
	return s
}

func ingressOf(t *testing.T, client kubernetes.Interface, name string) string {
	t.Helper()
	s, err := client.CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get service %s: %v", name, err)
	}
	var out []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		mode := "<nil>"
		if in.IPMode != nil {
			mode = string(*in.IPMode)
		}
		out = append(out, in.IP+" "+mode)
	}
	return strings.Join(out, ",")
}

func eventsOf(t *testing.T, client kubernetes.Interface, name string) string {
	t.Helper()
	evs, err := client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatalf("events of %s: %v", name, err)
	}
	var out []string
	for _, e := range evs.Items {
		out = append(out, e.Type+" "+e.Reason+": "+e.Message)
	}
	return strings.Join(out, "\n")
}

// TestControllerAgainstAnAPIServer runs the controller against a real
// kube-apiserver: only a leader writes status, what it writes, the Events
// a user reads, exhaustion, release, and a restart that keeps every
// address.
func TestControllerAgainstAnAPIServer(t *testing.T) {
	client := apiServer(t)
	ctx := context.Background()
	pool := config.AddressPool{Name: "default", Addresses: []string{"198.18.0.200/31"}}
	r := startController(t, client, pool)
	svcs := client.CoreV1().Services("default")
	create := func(s *corev1.Service) {
		t.Helper()
		if _, err := svcs.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create service %s: %v", s.Name, err)
		}
	}

	create(loadBalancer("web", 80))
	eventually(t, "a follower sees web pending", func() (bool, string) {
		v := r.gauge("vipd_kubernetes_services", "state", "pending")
		return v == 1, fmt.Sprintf("pending %v", v)
	})
	if got := ingressOf(t, client, "web"); got != "" {
		t.Fatalf("a follower wrote web's status: %q", got)
	}

	r.lead()
	eventually(t, "the leader gives web an address", func() (bool, string) {
		got := ingressOf(t, client, "web")
		return got == "198.18.0.200 Proxy", got
	})
	eventually(t, "web's VIP is served, with no frontend while it has no endpoint", func() (bool, string) {
		s := r.Served()
		return len(s.VIPs) == 1 && s.VIPs[0].Address == "198.18.0.200" && s.VIPs[0].Placement == config.PlacementSpread && len(s.Frontends) == 0,
			fmt.Sprintf("%+v", s)
	})
	eventually(t, "web's Event says what it got", func() (bool, string) {
		ev := eventsOf(t, client, "web")
		return strings.Contains(ev, "Normal AddressAllocated: address 198.18.0.200 from pool default"), ev
	})

	ready, notReady := true, false
	port, name := int32(9000), "p80"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"198.18.0.21"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			{Addresses: []string{"198.18.0.22"}, Conditions: discoveryv1.EndpointConditions{Ready: &notReady}},
		},
	}
	if _, err := client.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "web's ready endpoint is its frontend's pool", func() (bool, string) {
		s := r.Served()
		ok := len(s.Frontends) == 1 && s.Frontends[0].Name == "k8s:default/web:80" && s.Frontends[0].Listen == "198.18.0.200:80" &&
			len(s.Pools) == 1 && len(s.Pools[0].Backends) == 1 && s.Pools[0].Backends[0].Address == "198.18.0.21:9000"
		return ok, fmt.Sprintf("%+v", s)
	})

	create(loadBalancer("api", 443))
	create(loadBalancer("late", 80))
	eventually(t, "the pool of two runs out at the third Service", func() (bool, string) {
		ev := eventsOf(t, client, "late")
		return ingressOf(t, client, "api") == "198.18.0.201 Proxy" && strings.Contains(ev, "Warning AllocationFailed") &&
			strings.Contains(ev, "no address left"), ev
	})
	if got := ingressOf(t, client, "late"); got != "" {
		t.Fatalf("late got %q from an exhausted pool", got)
	}
	if used, free := r.gauge("vipd_kubernetes_pool_addresses", "pool", "default", "state", "used"), r.gauge("vipd_kubernetes_pool_addresses", "pool", "default", "state", "free"); used != 2 || free != 0 {
		t.Errorf("pool default: used %v free %v, want 2 and 0", used, free)
	}

	// A Service that stops being a LoadBalancer gives its address back.
	api, err := svcs.Get(ctx, "api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	api.Spec.Type = corev1.ServiceTypeClusterIP
	if _, err := svcs.Update(ctx, api, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "api's address goes to late", func() (bool, string) {
		a, l := ingressOf(t, client, "api"), ingressOf(t, client, "late")
		return a == "" && l == "198.18.0.201 Proxy", "api " + a + ", late " + l
	})

	// A restarted controller (or a new leader) reads the addresses back.
	before := r.Served()
	r.stop()
	r2 := startController(t, client, pool)
	r2.lead()
	eventually(t, "after a restart the same addresses are served", func() (bool, string) {
		s := r2.Served()
		return len(s.VIPs) == 2 && fmt.Sprint(s) == fmt.Sprint(before), fmt.Sprintf("%+v", s)
	})
	for name, want := range map[string]string{"web": "198.18.0.200 Proxy", "late": "198.18.0.201 Proxy"} {
		if got := ingressOf(t, client, name); got != want {
			t.Errorf("%s after a restart: %q, want %q", name, got, want)
		}
	}
	if err := testutil.GatherAndCompare(r2.reg, strings.NewReader(`
# HELP vipd_kubernetes_services Services of type LoadBalancer that vipd serves, by state: allocated (with an address) or pending (none could be given, or the leader has not written it yet).
# TYPE vipd_kubernetes_services gauge
vipd_kubernetes_services{state="allocated"} 2
vipd_kubernetes_services{state="pending"} 0
`), "vipd_kubernetes_services"); err != nil {
		t.Error(err)
	}
}
