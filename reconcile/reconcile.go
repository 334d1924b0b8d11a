// Package reconcile is the one path from a desired state to the running
// state (DESIGN.md): a source says what should run, the reconciler
// validates it whole, refuses what only a restart can change, and hands the
// rest to a target that changes only what differs. The running config has
// one owner, the Reconciler; everything else reads it from Running.
package reconcile

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vipd/vipd/config"
)

// Source produces the file's desired state, validated (a config.Config is
// valid by construction). What other sources serve (Kubernetes Services) is
// added to it by Options.Served.
type Source interface {
	Desired() (*config.Config, error)
}

// File is the config file as a source.
type File struct{ Path string }

// ErrNoFile is File's answer when the daemon runs the embedded default.
var ErrNoFile = errors.New("running the embedded default config: there is no file to reload (start with --config)")

// Desired loads and validates the file; the error names each key and line.
func (f File) Desired() (*config.Config, error) {
	if f.Path == "" {
		return nil, ErrNoFile
	}
	return config.Load(f.Path)
}

// Target puts next in place of running, changing only what differs. On an
// error it has changed nothing.
type Target interface {
	Apply(running, next *config.Config) error
}

// Outcome is what a reload did; each is a value of the reloads metric.
type Outcome string

const (
	Applied   Outcome = "applied"   // the new config runs
	Unchanged Outcome = "unchanged" // the source asked for what already runs
	Invalid   Outcome = "invalid"   // the source's state did not validate: nothing changed
	Refused   Outcome = "refused"   // it changes restart-only keys: nothing changed
	Failed    Outcome = "failed"    // the target could not apply it: nothing changed
)

// Result is the answer to a reload (POST /v1/reload's body).
type Result struct {
	Result Outcome `json:"result"`
	// ConfigDigest is the running config's digest after the reload.
	ConfigDigest string `json:"config_digest"`
	// RestartKeys are the restart-only keys that made a reload Refused.
	RestartKeys []string `json:"restart_keys,omitempty"`
	Error       string   `json:"error,omitempty"`
}

// OK reports whether the running config is now the source's.
func (r Result) OK() bool { return r.Result == Applied || r.Result == Unchanged }

// Options configure a Reconciler.
type Options struct {
	Running *config.Config // what runs at start
	Source  Source
	// Served is what other sources add to the file's state at every
	// reload and resync; nil: nothing.
	Served     func() config.Served
	Target     Target
	OnApplied  func(*config.Config) // after a config was applied; may be nil
	Logger     *zap.Logger
	Registerer prometheus.Registerer // nil: metrics are not registered
}

// Reconciler owns the running config and applies reloads one at a time.
type Reconciler struct {
	opts    Options
	log     *zap.Logger
	mu      sync.Mutex // held for a whole reload, so two never interleave
	running atomic.Pointer[config.Config]
	file    *config.Config // the file's state in running, without what Served added; under mu
	reloads *prometheus.CounterVec
	pending prometheus.Gauge
}

// New returns a Reconciler running opts.Running, which is the file's state
// alone (Served is added by the first Resync).
func New(opts Options) *Reconciler {
	r := &Reconciler{opts: opts, log: opts.Logger,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_config_reloads_total",
			Help: "Config reloads (SIGHUP, POST /v1/reload, systemctl reload) and resyncs (a Kubernetes Service changed), by result: applied, unchanged, invalid, refused (restart-only keys changed) or failed.",
		}, []string{"result"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vipd_config_restart_pending",
			Help: "1 when the last valid config reloaded changes restart-only keys, which were refused.",
		}),
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	for _, o := range []Outcome{Applied, Unchanged, Invalid, Refused, Failed} {
		r.reloads.WithLabelValues(string(o)) // exported at 0 before the first reload
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(r.reloads, r.pending)
	}
	r.running.Store(opts.Running)
	r.file = opts.Running
	return r
}

// Running is the config that runs now. Callers must not change it.
func (r *Reconciler) Running() *config.Config { return r.running.Load() }

// Reload reads the source's desired state again, adds what is served
// besides, and applies it whole, or nothing of it. The Result says which
// and why.
func (r *Reconciler) Reload() Result {
	return r.reconcile("config reload", func() (*config.Config, error) { return r.opts.Source.Desired() })
}

// Resync applies the file's state as it runs with what is served besides
// now (a Service changed): the file is not read again.
func (r *Reconciler) Resync() Result {
	return r.reconcile("resync", func() (*config.Config, error) { return r.file, nil })
}

func (r *Reconciler) reconcile(what string, file func() (*config.Config, error)) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.reconcileLocked(file)
	res.ConfigDigest = config.Digest(r.Running())
	r.reloads.WithLabelValues(string(res.Result)).Inc()
	fields := []zap.Field{zap.String("result", string(res.Result)), zap.String("config_digest", res.ConfigDigest)}
	if res.OK() {
		r.log.Info(what, fields...)
	} else {
		r.log.Error(what+": nothing changed", append(fields, zap.Strings("restart_keys", res.RestartKeys), zap.String("error", res.Error))...)
	}
	return res
}

func (r *Reconciler) reconcileLocked(desiredFile func() (*config.Config, error)) Result {
	running := r.Running()
	file, err := desiredFile()
	if err != nil { // an invalid file says nothing about a pending restart
		return Result{Result: Invalid, Error: err.Error()}
	}
	next := file
	if r.opts.Served != nil {
		if next, err = file.WithServed(r.opts.Served()); err != nil {
			return Result{Result: Invalid, Error: fmt.Sprintf("with what other sources serve: %v", err)}
		}
	}
	if keys := config.RestartOnlyChanges(running, next); len(keys) > 0 {
		r.pending.Set(1)
		return Result{Result: Refused, RestartKeys: keys,
			Error: fmt.Sprintf("these keys change only with a restart, so nothing of this reload was applied: %s", strings.Join(keys, ", "))}
	}
	r.pending.Set(0)
	if reflect.DeepEqual(running, next) {
		r.file = file
		return Result{Result: Unchanged}
	}
	if err := r.opts.Target.Apply(running, next); err != nil {
		return Result{Result: Failed, Error: err.Error()}
	}
	r.file = file
	r.running.Store(next)
	if r.opts.OnApplied != nil {
		r.opts.OnApplied(next)
	}
	return Result{Result: Applied}
}
