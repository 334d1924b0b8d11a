package vip

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
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
	e.Held, e.LinkUp, e.Metrics = r.m.Status()[0].Held, r.m.LinkUp(), r.series()
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
// TestMain). Modes: "hold" runs Watch and Hold, "watch" runs Watch alone
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
		VIPs:         []Config{cfg},
		Logger:       log,
		Registerer:   r.reg,
		OnLinkChange: func(up bool) { r.emit(helperEvent{Event: eventLink, Up: up}) },
		OnHolding:    func() { r.emit(helperEvent{Event: eventHolding}) },
	})
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
		result = m.Hold(ctx)
		stop() // Hold may have failed on its own: end Watch too
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
