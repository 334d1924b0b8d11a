package main

import (
	"context"
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

	"github.com/vipd/vipd/balancer"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/health"
	"github.com/vipd/vipd/vip"
)

// leaveTimeout bounds the leadership transfer and self-removal at shutdown.
const leaveTimeout = 5 * time.Second

// daemon wires the components. Data flows one way through channels and
// callbacks: health → balancer (which backends may take connections),
// health and vip → election (is this node fit to lead), election → vip
// (claim / release) and election → balancer (replicated drains).
type daemon struct {
	cfg  *config.Config
	log  *zap.Logger
	reg  *prometheus.Registry
	bal  *balancer.Balancer
	mon  *health.Monitor
	node *election.Node
	vips *vip.Manager // nil when the config has no VIP

	linkUp      atomic.Bool   // the VIP interface's link, from vip's watcher
	holdFailed  atomic.Bool   // the last claim attempt failed: unfit to lead
	fitnessKick chan struct{} // wakes the fitness loop; never blocks the sender
	leaveReq    chan struct{} // closed (once) by the admin API's /v1/leave
	leaveOnce   sync.Once
	ready       atomic.Bool

	configPath    string           // the file cfg came from; empty for the embedded default
	hup           <-chan os.Signal // SIGHUP from main: check the config file (nil in tests that do not)
	configMetrics *configMetrics
}

func newDaemon(cfg *config.Config, log *zap.Logger) (*daemon, error) {
	d := &daemon{
		cfg: cfg, log: log, reg: prometheus.NewRegistry(),
		fitnessKick: make(chan struct{}, 1), leaveReq: make(chan struct{}),
	}
	d.linkUp.Store(true)
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.configMetrics = newConfigMetrics(d.reg)

	hopts := healthOptions(cfg)
	hopts.Logger, hopts.Registerer = log, d.reg
	hopts.OnTransition = d.onTransition
	mon, err := health.NewMonitor(hopts)
	if err != nil {
		return nil, fmt.Errorf("health checks: %w", err)
	}
	d.mon = mon

	bopts := balancerOptions(cfg)
	bopts.Logger, bopts.Registerer, bopts.Reporter = log, d.reg, mon
	if d.bal, err = balancer.New(bopts); err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}

	eopts, err := electionOptions(cfg)
	if err != nil {
		return nil, err
	}
	eopts.Logger, eopts.Registerer = log, d.reg
	if d.node, err = election.New(eopts); err != nil {
		return nil, fmt.Errorf("election: %w", err)
	}

	if len(cfg.VIPs) > 0 {
		vopts := vipOptions(cfg)
		vopts.Logger, vopts.Registerer = log, d.reg
		vopts.OnLinkChange = d.onLinkChange
		vopts.OnHolding = d.onHolding
		if d.vips, err = vip.New(vopts); err != nil {
			return nil, fmt.Errorf("vip: %w", err)
		}
	}
	return d, nil
}

func (d *daemon) onTransition(t health.Transition) {
	if err := d.bal.SetHealthy(t.Pool, t.Backend, t.Healthy); err != nil {
		d.log.Error("apply health transition", zap.String("pool", t.Pool), zap.String("backend", t.Backend), zap.Error(err))
	}
}

func (d *daemon) onLinkChange(up bool) {
	d.linkUp.Store(up)
	d.kickFitness()
}

// onHolding clears a failed claim once a retried hold succeeds, so the
// leader stops reporting itself unfit and keeps the VIP it now holds.
func (d *daemon) onHolding() {
	if d.holdFailed.Swap(false) {
		d.log.Info("VIP claim succeeded after a failure: fit again")
		d.kickFitness()
	}
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
// in the order of DESIGN.md rule 9: release the VIP, hand over leadership,
// drain connections for the grace period.
func (d *daemon) run(ctx context.Context) error {
	if d.vips != nil {
		if err := d.vips.RemoveStale(); err != nil {
			return fmt.Errorf("remove stale VIPs: %w", err)
		}
	}
	if err := d.bal.Start(); err != nil {
		return fmt.Errorf("start listeners: %w", err)
	}
	admin, adminErr, err := d.startAdmin()
	if err != nil {
		d.shutdownBalancer()
		return err
	}
	if err := d.node.Start(ctx); err != nil {
		d.shutdownBalancer()
		closeAdmin(admin)
		return fmt.Errorf("start election: %w", err)
	}

	bg, stopBackground := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.mon.Run(bg) })
	if d.vips != nil {
		wg.Go(func() { d.vips.Watch(bg) })
	}
	wg.Go(func() { d.fitnessLoop(bg) })
	wg.Go(func() { d.intentLoop(bg) })
	leading, stopLeading := context.WithCancel(bg)
	leadershipDone := make(chan struct{})
	go func() { defer close(leadershipDone); d.leadershipLoop(leading) }()

	d.ready.Store(true)
	d.log.Info("vipd running", zap.String("node", d.cfg.Node.Name), zap.Int("frontends", len(d.cfg.Frontends)), zap.Int("vips", len(d.cfg.VIPs)))
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
			d.checkConfigFile()
		}
	}
	d.ready.Store(false)

	// 1. The VIP goes first: the leadership loop releases it on exit.
	stopLeading()
	<-leadershipDone
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
	if err := d.node.Shutdown(); err != nil {
		d.log.Warn("stop election", zap.Error(err))
	}
	closeAdmin(admin)
	d.log.Info("vipd stopped")
	return runErr
}

func (d *daemon) shutdownBalancer() {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Node.ShutdownGrace)
	defer cancel()
	if err := d.bal.Shutdown(ctx); err != nil {
		d.log.Info("grace period over, closed remaining connections", zap.Error(err))
	}
}

func (d *daemon) startAdmin() (*http.Server, <-chan error, error) {
	ln, err := net.Listen("tcp", d.cfg.Admin.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("admin listener: %w", err)
	}
	srv := &http.Server{
		Handler:           d.adminHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
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

// leadershipLoop is the only owner of the VIP: it holds it exactly while the
// election reports this node as the confirmed leader. A loss stops the hold,
// whose deferred release deletes the address before anything else.
func (d *daemon) leadershipLoop(ctx context.Context) {
	var hold *vipHold
	release := func() {
		if hold != nil {
			hold.stop()
			hold = nil
		}
	}
	defer release()
	var (
		holdEnded <-chan struct{} // the running hold's done; nil without one
		retry     <-chan time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-d.node.Events():
			if !ok {
				return // the election stopped: the deferred release runs
			}
			d.log.Info("leadership", zap.Bool("leader", ev.Leader), zap.Uint64("term", ev.Term))
			if !ev.Leader {
				release()
				holdEnded, retry = nil, nil
			} else if hold == nil && d.vips != nil {
				hold = d.startHold(ctx)
				holdEnded = hold.done
			}
		case <-holdEnded:
			// The hold failed while this node still leads (it reported
			// itself unfit, so leadership may move). If no peer takes over,
			// try the VIP again rather than lead without it.
			holdEnded, retry = nil, time.After(holdRetry)
		case <-retry:
			retry = nil
			release()
			hold = d.startHold(ctx)
			holdEnded = hold.done
		}
	}
}

// holdRetry is the pause before a leader whose VIP claim failed tries again.
const holdRetry = time.Second

// vipHold is one running vip.Manager.Hold.
type vipHold struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (d *daemon) startHold(ctx context.Context) *vipHold {
	holdCtx, cancel := context.WithCancel(ctx)
	h := &vipHold{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		err := d.vips.Hold(holdCtx)
		if err != nil {
			d.log.Error("hold VIP", zap.Error(err))
		}
		// A leader that cannot hold the VIP is unfit and hands over.
		d.holdFailed.Store(err != nil)
		d.kickFitness()
	}()
	return h
}

// stop releases the VIP and returns once the address is gone.
func (h *vipHold) stop() {
	h.cancel()
	<-h.done
}

// fitnessLoop tells the election how fit this node is to lead whenever the
// health summary or the VIP link changes.
func (d *daemon) fitnessLoop(ctx context.Context) {
	if d.vips != nil {
		d.linkUp.Store(d.vips.LinkUp())
	}
	summary := d.mon.Summary()
	for {
		d.node.SetFitness(election.Fitness{
			Pools: summary.Pools, HealthyPools: summary.HealthyPools,
			LinkUp: d.linkUp.Load(), VIPHoldFailed: d.holdFailed.Load(),
		})
		select {
		case <-ctx.Done():
			return
		case summary = <-d.mon.SummaryChanges():
		case <-d.fitnessKick:
		}
	}
}

// intentLoop applies the replicated operator intent (drained backends) to
// the local balancer.
func (d *daemon) intentLoop(ctx context.Context) {
	apply := func(in election.Intent) {
		drained := map[election.BackendRef]bool{}
		for _, ref := range in.Drained {
			drained[ref] = true
		}
		for _, p := range d.cfg.Pools {
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
		}
	}
}
