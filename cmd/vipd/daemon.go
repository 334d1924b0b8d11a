package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"

	"github.com/vipd/vipd/balancer"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/health"
	"github.com/vipd/vipd/kube"
	"github.com/vipd/vipd/ownership"
	"github.com/vipd/vipd/reconcile"
	"github.com/vipd/vipd/spread"
	"github.com/vipd/vipd/vip"
)

// leaveTimeout bounds the leadership transfer and self-removal at shutdown.
const leaveTimeout = 5 * time.Second

// handOverTimeout bounds the hand-over of the spread VIPs at shutdown.
const handOverTimeout = 2 * time.Second

// daemon wires the components. Data flows one way through channels and
// callbacks: health → balancer (which backends may take connections),
// health and vip → election (is this node fit to lead), election → vip
// (claim / release) and election → balancer (replicated drains).
type daemon struct {
	rec  *reconcile.Reconciler // owns the running config: read it with running()
	log  *zap.Logger
	reg  *prometheus.Registry
	bal  *balancer.Balancer
	mon  *health.Monitor
	node *election.Node
	vips *vipSet // each VIP held by its own Owner while this node leads
	// spread holds the spread VIPs under leases and, while this node leads,
	// grants them.
	spread *spread.Runner
	auth   *adminAuth
	// kube is the Kubernetes mode (nil without a kubernetes section).
	kube    *kube.Controller
	leading atomic.Bool // the last leadership event said this node leads

	linkUp      atomic.Bool   // the VIP interface's link, from vip's watcher
	fitnessKick chan struct{} // wakes the fitness loop; never blocks the sender
	intentKick  chan struct{} // re-applies the drain intent after a reload; never blocks
	leaveReq    chan struct{} // closed (once) by the admin API's /v1/leave
	leaveOnce   sync.Once
	ready       atomic.Bool
	notify      *notifier  // systemd's READY/STATUS/WATCHDOG/STOPPING
	probes      loopProbes // answered by the loops WATCHDOG=1 vouches for

	hup <-chan os.Signal // SIGHUP from main: reload the config file (nil in tests that do not)
}

// newDaemon builds every component; only the election starts something
// (its event goroutine). configPath is the file cfg came from, which a
// reload reads again (empty for the embedded default); a reload sets level,
// log's level (nil: not ours to change). On error nothing is left running.
func newDaemon(cfg *config.Config, configPath string, log *zap.Logger, level *zap.AtomicLevel) (_ *daemon, err error) {
	d := &daemon{
		log: log, reg: prometheus.NewRegistry(),
		fitnessKick: make(chan struct{}, 1), intentKick: make(chan struct{}, 1), leaveReq: make(chan struct{}),
		probes: newLoopProbes(),
	}
	defer func() {
		if err != nil {
			d.stopElection()
		}
	}()
	d.linkUp.Store(true)
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newRuntimeCollector())
	// raft reports through a process-wide global: the last daemon built in
	// a process receives it (one in production).
	if err := installRaftMetrics(d.reg); err != nil {
		return nil, err
	}
	notify, err := newNotifier(log)
	if err != nil {
		return nil, err
	}
	d.notify = notify
	if d.auth, err = newAdminAuth(cfg.Admin, log.Named("admin"), d.reg); err != nil {
		return nil, err
	}

	hopts := healthOptions(cfg)
	hopts.Logger, hopts.Registerer = log, d.reg
	mon, err := health.NewMonitor(hopts)
	if err != nil {
		return nil, fmt.Errorf("health checks: %w", err)
	}
	d.mon = mon

	bopts, err := balancerOptions(cfg, mon)
	if err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}
	bopts.Logger, bopts.Registerer, bopts.Reporter = log, d.reg, mon
	if d.bal, err = balancer.New(bopts); err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}

	owners := ownership.NewGroup(ownership.Options{Logger: log.Named("ownership"), OnFailedChange: d.kickFitness, Probe: d.probes.leadership})
	eopts := electionOptions(cfg)
	eopts.Logger, eopts.Registerer = log, d.reg
	eopts.Released = owners.Released // a leadership transfer waits until the VIPs are gone
	if d.node, err = election.New(eopts); err != nil {
		return nil, fmt.Errorf("election: %w", err)
	}

	mgr, err := vip.New(vip.Options{Logger: log, Registerer: d.reg, OnLinkChange: d.onLinkChange})
	if err != nil {
		return nil, fmt.Errorf("vip: %w", err)
	}
	d.vips = &vipSet{mgr: mgr, owners: owners, byAddr: map[string]*vip.VIP{}, owner: map[string]string{}}
	if d.spread, err = newSpread(d, cfg, owners); err != nil {
		return nil, err
	}
	for i, c := range cfg.VIPs {
		if err := d.vips.add(c, false); err != nil {
			return nil, fmt.Errorf("vip: vips[%d]: %w", i, err)
		}
	}
	if d.kube, err = newKube(d, cfg); err != nil {
		return nil, err
	}
	ropts := reconcile.Options{
		Running: cfg, Source: reconcile.File{Path: configPath},
		Target:    dataPlane{mon: d.mon, bal: d.bal, vips: d.vips, level: level},
		OnApplied: d.onConfigApplied, Logger: log.Named("reconcile"), Registerer: d.reg,
	}
	if d.kube != nil {
		ropts.Served = d.kube.Served
	}
	d.rec = reconcile.New(ropts)
	d.node.SetConfigDigest(config.Digest(cfg))
	return d, nil
}

// running is the config this node runs now; a reload replaces it.
func (d *daemon) running() *config.Config { return d.rec.Running() }

func (d *daemon) onLinkChange(up bool) {
	d.linkUp.Store(up)
	d.kickFitness()
}

func (d *daemon) kickFitness() {
	select {
	case d.fitnessKick <- struct{}{}:
	default: // a wake-up is already pending; it will read the latest state
	}
}

// requestLeave makes run stop as on SIGTERM; safe to call many times.
func (d *daemon) requestLeave() { d.leaveOnce.Do(func() { close(d.leaveReq) }) }

// run serves until ctx ends (a signal) or a leave is requested, then stops
// in the order of docs/architecture.md rule 9: release the VIP, hand over leadership,
// drain connections for the grace period.
func (d *daemon) run(ctx context.Context) error {
	admin, adminErr, err := d.start(ctx)
	if err != nil {
		return err
	}

	bg, stopBackground := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.mon.Run(bg) })
	wg.Go(func() { d.vips.mgr.Watch(bg) })
	wg.Go(func() { d.fitnessLoop(bg) })
	wg.Go(func() { d.intentLoop(bg) })
	wg.Go(func() { d.notifyLoop(bg) }) // after the listeners are bound
	leading, stopLeading := context.WithCancel(bg)
	var leadingWG sync.WaitGroup
	events := make(chan ownership.Event)
	spreadEvents := make(chan spread.Leadership)
	leadingWG.Go(func() { forwardLeadership(leading, d.node.Events(), events, spreadEvents, d.onLeadership) })
	if d.kube != nil {
		wg.Go(func() { d.kubeLoop(bg) })
	}
	leadingWG.Go(func() { d.vips.owners.Run(leading, events) })
	leadingWG.Go(func() { d.spread.Run(leading, spreadEvents) })

	d.ready.Store(true)
	cfg := d.running()
	d.log.Info("vipd running", zap.String("node", cfg.Node.Name), zap.Int("frontends", len(cfg.Frontends)), zap.Int("vips", len(cfg.VIPs)))
	var runErr error
serve:
	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping on signal")
			break serve
		case <-d.leaveReq:
			d.log.Info("stopping on leave request")
			break serve
		case runErr = <-adminErr:
			break serve
		case <-d.hup:
			d.reload("SIGHUP")
		}
	}
	d.notify.stopping()
	d.ready.Store(false)

	// 1. The VIPs go first: the spread VIPs are handed over (their next
	// node may take them at once), then every owner releases its VIP on exit.
	handCtx, cancelHand := context.WithTimeout(context.Background(), handOverTimeout)
	if err := d.spread.HandOver(handCtx); err != nil {
		d.log.Warn("hand spread VIPs over", zap.Error(err))
	}
	cancelHand()
	stopLeading()
	leadingWG.Wait()
	// 2. Hand leadership over and leave the voter set on purpose.
	leaveCtx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	if err := d.node.Leave(leaveCtx); err != nil {
		d.log.Warn("leave cluster", zap.Error(err))
	}
	cancel()
	// 3. Live connections get the grace period.
	d.shutdownBalancer()

	stopBackground()
	wg.Wait()
	d.stopElection()
	closeAdmin(admin)
	d.log.Info("vipd stopped")
	return runErr
}

// start brings up what run serves with: stale VIPs removed, listeners, the
// admin API, the election. If a step fails, everything started so far is
// stopped, newest first, and the election is shut down (which New started),
// so a failed start leaves nothing running.
func (d *daemon) start(ctx context.Context) (_ *http.Server, _ <-chan error, err error) {
	undo := []func(){d.stopElection}
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if err := d.vips.mgr.RemoveStale(); err != nil {
		return nil, nil, fmt.Errorf("remove stale VIPs: %w", err)
	}
	if err := d.bal.Start(); err != nil {
		return nil, nil, fmt.Errorf("start listeners: %w", err)
	}
	undo = append(undo, d.shutdownBalancer)
	admin, adminErr, err := d.startAdmin()
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() { closeAdmin(admin) })
	if err := d.node.Start(ctx); err != nil {
		return nil, nil, fmt.Errorf("start election: %w", err)
	}
	return admin, adminErr, nil
}

// stopElection shuts the election down: what election.New started (the
// event goroutine, the metrics) and what Start started. Safe to call twice.
func (d *daemon) stopElection() {
	if d.node == nil {
		return
	}
	if err := d.node.Shutdown(); err != nil {
		d.log.Warn("stop election", zap.Error(err))
	}
}

func (d *daemon) shutdownBalancer() {
	ctx, cancel := context.WithTimeout(context.Background(), d.running().Node.ShutdownGrace)
	defer cancel()
	if err := d.bal.Shutdown(ctx); err != nil {
		d.log.Info("grace period over, closed remaining connections", zap.Error(err))
	}
}

func (d *daemon) startAdmin() (*http.Server, <-chan error, error) {
	ln, err := net.Listen("tcp", d.running().Admin.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("admin listener: %w", err)
	}
	ln = netutil.LimitListener(ln, maxAdminConns)
	if tc := d.auth.serverTLS(); tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	if a := d.running().Admin; !a.Loopback() && !a.Authenticated() { // admin.insecure: config allowed it
		d.log.Warn("admin API open to anyone who can reach it: admin.insecure is set and neither admin.token_file nor admin.tls.client_ca_file",
			zap.String("listen", a.Listen))
	}
	http1 := new(http.Protocols)
	http1.SetHTTP1(true) // one request at a time per connection: what the bounds assume
	srv := &http.Server{
		Handler:           d.adminHandler(),
		ReadHeaderTimeout: 5 * time.Second, // also bounds the TLS handshake
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    maxAdminHeader,
		Protocols:         http1,
		ErrorLog:          zap.NewStdLog(d.log.Named("admin")),
	}
	errc := make(chan error, 1)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin server: %w", err)
		}
	}()
	return srv, errc, nil
}

// closeAdmin lets admin calls in flight (a /v1/leave answering) finish
// briefly, then closes the server.
func closeAdmin(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		srv.Close()
	}
}

// forwardLeadership hands the election's leadership events to the owners
// and then to the spread runner, and last tells observe, until ctx ends or
// the election closes them (then both outs are closed, which releases).
// The hand-over is unbuffered, so each sees the events in their order and
// as coalesced by the election.
func forwardLeadership(ctx context.Context, in <-chan election.Event, out chan<- ownership.Event, spreadOut chan<- spread.Leadership, observe func(election.Event)) {
	defer close(out)
	defer close(spreadOut)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-in:
			if !ok {
				return
			}
			select {
			case out <- ownership.Event{Leader: ev.Leader, Term: ev.Term, Seq: ev.Seq}:
			case <-ctx.Done():
				return
			}
			select {
			case spreadOut <- spread.Leadership{Leader: ev.Leader, Term: ev.Term}:
			case <-ctx.Done():
				return
			}
			observe(ev)
		}
	}
}

// onLeadership keeps whether this node leads for the Kubernetes mode,
// which allocates only while it does.
func (d *daemon) onLeadership(ev election.Event) {
	d.leading.Store(ev.Leader)
	if d.kube != nil {
		d.kube.Kick()
	}
}

// fitnessLoop tells the election how fit this node is to lead whenever the
// health summary or the VIP link changes.
func (d *daemon) fitnessLoop(ctx context.Context) {
	d.linkUp.Store(d.vips.mgr.LinkUp())
	summary := d.mon.Summary()
	for {
		d.node.SetFitness(election.Fitness{
			Pools: summary.Pools, HealthyPools: summary.HealthyPools,
			LinkUp: d.linkUp.Load(), VIPHoldFailed: d.vips.owners.Failed(),
		})
		select {
		case <-ctx.Done():
			return
		case summary = <-d.mon.SummaryChanges():
		case <-d.fitnessKick:
		case <-d.probes.fitness:
		}
	}
}

// intentLoop applies the replicated operator intent (drained backends) to
// the local balancer, again after a reload changed the backends.
func (d *daemon) intentLoop(ctx context.Context) {
	apply := func(in election.Intent) {
		drained := map[election.BackendRef]bool{}
		for _, ref := range in.Drained {
			drained[ref] = true
		}
		for _, p := range d.running().Pools {
			for _, b := range p.Backends {
				ref := election.BackendRef{Pool: p.Name, Backend: b.Address}
				if err := d.bal.SetDrained(p.Name, b.Address, drained[ref]); err != nil {
					d.log.Error("apply drain", zap.String("pool", p.Name), zap.String("backend", b.Address), zap.Error(err))
				}
			}
		}
	}
	apply(d.node.Intent())
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-d.node.IntentChanges():
			apply(in)
			d.spread.Poke() // the spread VIP assignment may have changed
		case <-d.intentKick:
			apply(d.node.Intent())
		case <-d.probes.intent:
		}
	}
}
