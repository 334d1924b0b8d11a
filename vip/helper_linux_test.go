package vip

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// helperEvent is one line of the helper's report on stdout: what happened
// and the Manager's state right after.
type helperEvent struct {
	Event string    `json:"event"` // one of the event* constants
	Time  time.Time `json:"time"`
	Up    bool      `json:"up,omitempty"`    // eventLink: the value OnLinkChange got
	Error string    `json:"error,omitempty"` // eventReturned: what Hold or RemoveStale returned
	// Address is the VIP an event of mode "live" is about (eventHolding,
	// eventRemoved).
	Address string `json:"address,omitempty"`
	// Exported lists the addresses that have a vipd_vip_held series.
	Exported []string `json:"exported"`
	// The state: Status()[0].Held, LinkUp(), and the VIP's vipd_vip_*
	// series as the registry exports them (histograms as _count and _sum).
	Held    bool               `json:"held"`
	LinkUp  bool               `json:"link_up"`
	Metrics map[string]float64 `json:"metrics"`
}

const (
	eventState    = "state"    // held, LinkUp or a series changed
	eventHolding  = "holding"  // OnHolding was called
	eventLink     = "link"     // OnLinkChange was called
	eventReturned = "returned" // Hold (or RemoveStale) returned; Watch was stopped
	eventRemoved  = "removed"  // mode "live": a VIP's Hold ended and Remove returned
)

// reporter writes helperEvents for one Manager.
type reporter struct {
	reg  *prometheus.Registry
	addr string
	ifc  string
	m    *Manager // set once New has returned; callbacks come later

	mu   sync.Mutex
	enc  *json.Encoder
	last helperEvent // the state last written
}

// emit writes an event of kind e.Event with the current state.
func (r *reporter) emit(e helperEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.emitLocked(e)
}

func (r *reporter) emitLocked(e helperEvent) {
	e.Time = time.Now()
	e.Held, e.LinkUp, e.Metrics, e.Exported = r.m.Status()[0].Held, r.m.LinkUp(), r.series(), r.exported()
	r.last = e
	if err := r.enc.Encode(e); err != nil {
		panic(fmt.Sprintf("helper: write event: %v", err))
	}
}

// series reads the VIP's series from the registry, the way a scrape does:
// a series that was never created is missing, not zero.
func (r *reporter) series() map[string]float64 {
	mfs, err := r.reg.Gather()
	if err != nil {
		panic(fmt.Sprintf("helper: gather: %v", err))
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if len(labels) > 0 && (labels["address"] != r.addr || labels["interface"] != r.ifc) {
				continue
			}
			switch {
			case m.Counter != nil:
				out[mf.GetName()] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[mf.GetName()] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[mf.GetName()+"_count"] = float64(m.Histogram.GetSampleCount())
				out[mf.GetName()+"_sum"] = m.Histogram.GetSampleSum()
			}
		}
	}
	return out
}

// exported lists the addresses that have a vipd_vip_held series.
func (r *reporter) exported() []string {
	mfs, err := r.reg.Gather()
	if err != nil {
		panic(fmt.Sprintf("helper: gather: %v", err))
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != "vipd_vip_held" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "address" {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	return out
}

// watchState writes a state event whenever the state changes, every 10ms
// at most, until ctx ends.
func (r *reporter) watchState(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r.mu.Lock()
		held, up, met := r.m.Status()[0].Held, r.m.LinkUp(), r.series()
		if held != r.last.Held || up != r.last.LinkUp || !reflect.DeepEqual(met, r.last.Metrics) {
			r.emitLocked(helperEvent{Event: eventState})
		}
		r.mu.Unlock()
	}
}

// TestHelperProcess is the Manager side of the namespace tests: they start
// this test binary inside a namespace with VIPD_VIP_HELPER set. It reports
// helperEvents on stdout and logs zap JSON to stderr; SIGTERM ends it. The
// process exits non-zero if the Manager leaked a goroutine (goleak in
// TestMain). Modes: "hold" runs Watch and Hold, "live" does the same and
// then takes commands on stdin, "add ADDR" (add a VIP on the same
// interface and hold it) and "remove ADDR" (end its Hold, then Remove it),
// "watch" runs Watch alone
// with no file descriptor left to open (the test raises the limit from
// outside), "removestale" runs RemoveStale.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("VIPD_VIP_HELPER")
	if mode == "" {
		t.Skip("helper for the namespace tests; they start it themselves")
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(os.Stderr), zapcore.DebugLevel))
	cfg := testVIP(netip.MustParseAddr(os.Getenv("VIPD_VIP_ADDR")), os.Getenv("VIPD_VIP_IF"))
	r := &reporter{reg: prometheus.NewPedanticRegistry(), addr: cfg.Address.String(), ifc: cfg.Interface, enc: json.NewEncoder(os.Stdout)}
	m, err := New(Options{
		Logger:       log,
		Registerer:   r.reg,
		OnLinkChange: func(up bool) { r.emit(helperEvent{Event: eventLink, Up: up}) },
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := m.Add(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.m = m

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	stateCtx, stopState := context.WithCancel(ctx)
	wg.Go(func() { r.watchState(stateCtx) })
	var result error
	switch mode {
	case "removestale":
		result = m.RemoveStale()
	case "hold":
		wg.Go(func() { m.Watch(ctx) })
		result = v.Hold(ctx, func() { r.emit(helperEvent{Event: eventHolding}) })
		stop() // Hold may have failed on its own: end Watch too
	case "live":
		wg.Go(func() { m.Watch(ctx) })
		wg.Go(func() { r.serveCommands(ctx, cfg.Interface) })
		result = v.Hold(ctx, func() { r.emit(helperEvent{Event: eventHolding, Address: cfg.Address.String()}) })
		stop()
	case "watch":
		if err := useUpFileDescriptors(); err != nil {
			t.Fatal(err)
		}
		m.Watch(ctx)
	default:
		t.Fatalf("unknown helper mode %q", mode)
	}
	stopState()
	wg.Wait()
	e := helperEvent{Event: eventReturned}
	if result != nil {
		e.Error = result.Error()
	}
	r.emit(e)
}

// useUpFileDescriptors lowers this process's open file limit to the lowest
// free descriptor number, so that opening anything more fails with EMFILE.
func useUpFileDescriptors() error {
	lowest, err := unix.Dup(0) // the kernel hands out the lowest free number
	if err != nil {
		return err
	}
	unix.Close(lowest)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = uint64(lowest)
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
}

// serveCommands runs the "live" mode's commands from stdin until ctx ends:
// each added VIP is held by a Hold of its own, beside the first.
func (r *reporter) serveCommands(ctx context.Context, ifname string) {
	type running struct {
		v      *VIP
		cancel context.CancelFunc
		done   chan struct{}
	}
	holds := map[string]*running{}
	var wg sync.WaitGroup
	defer wg.Wait()
	lines := make(chan string)
	go func() { // ends when stdin closes, which the test does last
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var line string
		select {
		case <-ctx.Done():
			for _, h := range holds {
				h.cancel()
			}
			return
		case line = <-lines:
		}
		verb, addr, _ := strings.Cut(line, " ")
		switch verb {
		case "add":
			v, err := r.m.Add(testVIP(netip.MustParseAddr(addr), ifname))
			if err != nil {
				panic(fmt.Sprintf("helper: %v", err))
			}
			hctx, cancel := context.WithCancel(ctx)
			h := &running{v: v, cancel: cancel, done: make(chan struct{})}
			holds[addr] = h
			wg.Go(func() {
				defer close(h.done)
				if err := v.Hold(hctx, func() { r.emit(helperEvent{Event: eventHolding, Address: addr}) }); err != nil {
					r.emit(helperEvent{Event: eventReturned, Address: addr, Error: err.Error()})
				}
			})
		case "remove":
			h := holds[addr]
			delete(holds, addr)
			h.cancel()
			<-h.done
			if err := r.m.Remove(h.v); err != nil {
				panic(fmt.Sprintf("helper: %v", err))
			}
			r.emit(helperEvent{Event: eventRemoved, Address: addr})
		default:
			panic(fmt.Sprintf("helper: unknown command %q", line))
		}
	}
}
