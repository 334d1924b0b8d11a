// Package kube is vipd's Kubernetes mode: each Service of type
// LoadBalancer of the class vipd serves gets an address from the
// configured pools, which becomes a spread VIP with a frontend per port in
// front of the Service's ready endpoints.
//
// Every node watches Services and EndpointSlices and works out the same
// VIPs, frontends and pools from them (Served), which the reconciler adds
// to the file's. Only the Raft leader allocates: it writes each address
// into the Service's status (ipMode Proxy, so kube-proxy leaves the
// address to vipd) and the Events a user reads with kubectl describe. The
// status is where allocations live, so a restart or a new leader re-reads
// them rather than allocating again.
package kube

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/vipd/vipd/addrpool"
	"github.com/vipd/vipd/config"
)

// Event reasons on a Service.
const (
	ReasonAllocated = "AddressAllocated"
	ReasonFailed    = "AllocationFailed"
	ReasonReleased  = "AddressReleased"
)

// retryAfter is when a status write that failed is tried again.
const retryAfter = time.Second

// apiTimeout bounds one status write.
const apiTimeout = 5 * time.Second

// unsyncedWarning is how often Run says it still has not read the
// Services: client-go retries an unreachable API server quietly.
const unsyncedWarning = 10 * time.Second

// informerStopWait bounds how long Run waits for the informers to stop.
// client-go's watch-list retry sleeps out its backoff without looking at
// the stop signal, so against an unreachable API server its goroutines end
// only when that sleep does; the daemon's shutdown does not wait for them.
const informerStopWait = time.Second

// Options configure a Controller.
type Options struct {
	Config config.Kubernetes
	// Node is this node's name, which endpoints' nodeName must give for
	// externalTrafficPolicy Local.
	Node string
	// Leading says whether this node is the Raft leader now, the one that
	// allocates and writes status.
	Leading func() bool
	// Client talks to the API server; nil: one from Config.Kubeconfig, or
	// the in-cluster service account.
	Client     kubernetes.Interface
	Logger     *zap.Logger
	Registerer prometheus.Registerer // nil: metrics are not registered
}

// Controller watches the API server and keeps Served up to date.
type Controller struct {
	opts     Options
	log      *zap.Logger
	client   kubernetes.Interface
	setup    setup
	factory  informers.SharedInformerFactory
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	synced   []cache.InformerSynced
	kick     chan struct{} // wakes the loop; never blocks the sender
	changes  chan struct{} // Served changed; never blocks the sender
	metrics  *metrics

	mu        sync.Mutex // guards served and localOnly
	served    config.Served
	localOnly map[string]bool

	// Owned by Run's loop.
	events    record.EventRecorder
	lastEvent map[string]string     // Service key -> its last Event's reason and message
	lastHeld  map[string]netip.Addr // the last plan's held
}

// New builds the client and the informers; nothing runs until Run.
func New(opts Options) (*Controller, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	client := opts.Client
	if client == nil {
		rc, err := restConfig(opts.Config.Kubeconfig)
		if err != nil {
			return nil, err
		}
		if client, err = kubernetes.NewForConfig(rc); err != nil {
			return nil, fmt.Errorf("kubernetes client: %w", err)
		}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Controller{
		opts: opts, log: opts.Logger, client: client, metrics: m,
		setup:   setup{pools: opts.Config.Pools(), class: opts.Config.Class, iface: opts.Config.Interface, node: opts.Node},
		factory: informers.NewSharedInformerFactory(client, 0),
		kick:    make(chan struct{}, 1), changes: make(chan struct{}, 1),
		localOnly: map[string]bool{}, lastEvent: map[string]string{},
	}
	if _, err := addrpool.New(c.setup.pools); err != nil {
		return nil, fmt.Errorf("kubernetes.address_pools: %w", err)
	}
	svc := c.factory.Core().V1().Services()
	eps := c.factory.Discovery().V1().EndpointSlices()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.Kick() },
		UpdateFunc: func(any, any) { c.Kick() },
		DeleteFunc: func(any) { c.Kick() },
	}
	for _, inf := range []cache.SharedIndexInformer{svc.Informer(), eps.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return nil, fmt.Errorf("kubernetes informer: %w", err)
		}
		c.synced = append(c.synced, inf.HasSynced)
	}
	c.services, c.slices = svc.Lister(), eps.Lister()
	return c, nil
}

// restConfig is the API server and credentials: from the kubeconfig file,
// or the pod's service account when the path is empty.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes: no kubeconfig set and not in a pod: %w", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes.kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}

// Kick makes the controller look again: leadership changed.
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default: // a pass is already due; it reads the latest state
	}
}

// Changes tells that Served changed; the receiver reads Served.
func (c *Controller) Changes() <-chan struct{} { return c.changes }

// Served is what the Services add to what this node serves now.
func (c *Controller) Served() config.Served {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.served
}

// Eligible says whether this node may hold the VIP of frontend as far as
// Kubernetes goes: false only for a frontend of a Service with
// externalTrafficPolicy Local that has no ready endpoint on this node.
func (c *Controller) Eligible(frontend string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	here, local := c.localOnly[frontend]
	return !local || here
}

// Run watches until ctx ends. It returns an error only when the informers
// cannot start.
func (c *Controller) Run(ctx context.Context) error {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	c.events = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "vipd", Host: c.opts.Node})

	c.factory.Start(ctx.Done())
	defer c.stopInformers()
	if !c.waitSynced(ctx) {
		return nil
	}
	c.log.Info("kubernetes: watching Services and EndpointSlices", zap.String("class", c.setup.class))
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	for {
		if !c.pass(ctx) {
			retry.Reset(retryAfter)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-retry.C:
		}
	}
}

// waitSynced waits until the informers have read every Service and
// EndpointSlice, warning now and then while they have not; false: ctx ended
// first.
func (c *Controller) waitSynced(ctx context.Context) bool {
	c.log.Info("kubernetes: waiting for the informers to sync")
	tick := time.NewTicker(unsyncedWarning)
	defer tick.Stop()
	since := time.Now()
	for {
		synced := true
		for _, s := range c.synced {
			synced = synced && s()
		}
		if synced {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
			c.log.Warn("kubernetes: Services and EndpointSlices not read yet; is the API server reachable with these credentials?",
				zap.String("kubeconfig", c.opts.Config.Kubeconfig), zap.Duration("waiting", time.Since(since).Round(time.Second)))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopInformers stops the informers, waiting at most informerStopWait.
func (c *Controller) stopInformers() {
	done := make(chan struct{})
	go func() { // ends when client-go's goroutines have, at the latest after their backoff
		c.factory.Shutdown()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(informerStopWait):
		c.log.Warn("kubernetes: informers still backing off from the API server; not waiting for them")
	}
}

// pass works out the plan and, on the leader, writes what it allocated;
// false: something failed and should be tried again.
func (c *Controller) pass(ctx context.Context) bool {
	services, err := c.services.List(labels.Everything())
	if err != nil {
		c.log.Error("kubernetes: list services", zap.Error(err))
		return false
	}
	endpoints, err := c.slices.List(labels.Everything())
	if err != nil {
		c.log.Error("kubernetes: list endpointslices", zap.Error(err))
		return false
	}
	s := c.setup
	s.allocates = c.opts.Leading()
	p, err := makePlan(s, services, endpoints)
	if err != nil {
		c.log.Error("kubernetes: plan", zap.Error(err))
		return false
	}
	c.publish(p)
	c.metrics.observe(p)
	for key, addr := range c.lastHeld {
		if p.held[key] != addr {
			c.log.Info("kubernetes: service no longer holds its address", zap.String("service", key), zap.Stringer("address", addr))
		}
	}
	c.lastHeld = p.held
	ok := true
	if s.allocates {
		for _, w := range p.writes {
			if err := c.write(ctx, w); err != nil {
				c.log.Warn("kubernetes: write service status", zap.String("service", serviceKey(w.svc)), zap.Error(err))
				ok = false
			}
		}
		for _, svc := range services {
			if err, ok := p.failed[serviceKey(svc)]; ok {
				c.event(svc, corev1.EventTypeWarning, ReasonFailed, err.Error())
			}
		}
	}
	c.forget(services)
	return ok
}

// publish makes p's served state the one Served returns, and tells when
// it changed.
func (c *Controller) publish(p plan) {
	c.mu.Lock()
	changed := !reflect.DeepEqual(c.served, p.served)
	c.served = p.served
	localChanged := !maps.Equal(c.localOnly, p.localOnly)
	c.localOnly = p.localOnly
	c.mu.Unlock()
	if localChanged {
		c.log.Info("kubernetes: local endpoints changed", zap.Any("frontends_local_here", p.localOnly))
	}
	if changed {
		select {
		case c.changes <- struct{}{}:
		default: // the receiver has not read the last change yet; it reads this one
		}
	}
}

// write sets a Service's status: the address the leader allocated, or
// nothing on a Service vipd no longer serves.
func (c *Controller) write(ctx context.Context, w statusWrite) error {
	svc := w.svc.DeepCopy()
	key := serviceKey(svc)
	if w.addr.IsValid() {
		mode := corev1.LoadBalancerIPModeProxy
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: w.addr.String(), IPMode: &mode}}
	} else {
		svc.Status.LoadBalancer.Ingress = nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	if _, err := c.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		return err
	}
	if w.addr.IsValid() {
		c.log.Info("kubernetes: address allocated", zap.String("service", key), zap.Stringer("address", w.addr), zap.String("pool", w.pool))
		c.event(svc, corev1.EventTypeNormal, ReasonAllocated, fmt.Sprintf("address %s from pool %s", w.addr, w.pool))
	} else {
		c.log.Info("kubernetes: address released", zap.String("service", key), zap.String("pool", w.pool))
		c.event(svc, corev1.EventTypeNormal, ReasonReleased, "no longer a LoadBalancer that vipd serves: its address went back to pool "+w.pool)
	}
	return nil
}

// event records an Event on svc unless the last one for it said the same.
func (c *Controller) event(svc *corev1.Service, kind, reason, msg string) {
	key := serviceKey(svc)
	if c.lastEvent[key] == reason+"\x00"+msg {
		return
	}
	c.lastEvent[key] = reason + "\x00" + msg
	c.events.Event(svc, kind, reason, msg)
}

// forget drops the last Events of Services that are gone.
func (c *Controller) forget(services []*corev1.Service) {
	live := map[string]bool{}
	for _, s := range services {
		live[serviceKey(s)] = true
	}
	for key := range c.lastEvent {
		if !live[key] {
			delete(c.lastEvent, key)
		}
	}
}
