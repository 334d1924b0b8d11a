// Package health runs active health checks (tcp, http, https) against the
// backends of vipd's pools, applies HAProxy-style rise/fall thresholds, takes
// passive connect outcomes from the proxy into account, and reports every
// state change to a callback plus a per-node fitness Summary.
//
// It imports no other vipd package: cmd/vipd wires OnTransition to
// balancer.SetHealthy, passes the Monitor to the balancer as its
// ConnectReporter, and forwards SummaryChanges to the election.
package health

import (
	"context"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Kind selects the check a pool's backends get.
type Kind string

// The supported check kinds.
const (
	KindTCP   Kind = "tcp"   // a TCP connect (keepalived TCP_CHECK, HAProxy "check")
	KindHTTP  Kind = "http"  // GET over plain HTTP/1.1 (HTTP_GET, "option httpchk")
	KindHTTPS Kind = "https" // GET over TLS (SSL_GET, "check-ssl")
	KindNone  Kind = "none"  // no check: the backend is always healthy
)

// StatusRange is an inclusive range of accepted HTTP status codes.
type StatusRange struct{ Min, Max int }

// Defaults applied by NewMonitor to zero fields of a Check. They are
// HAProxy's: "inter 2s rise 2 fall 3", check timeout = inter.
const (
	DefaultInterval = 2 * time.Second
	DefaultRise     = 2
	DefaultFall     = 3
	// DefaultMaxBody bounds how much of a response body is searched for
	// ExpectBody; a health endpoint that needs more is misconfigured.
	DefaultMaxBody = 64 << 10
)

// DefaultExpectStatus is used when Check.ExpectStatus is empty: any 2xx or
// 3xx, like HAProxy's httpchk without "http-check expect".
var DefaultExpectStatus = []StatusRange{{Min: 200, Max: 399}}

// Check describes how every backend of one pool is checked.
//
// Zero values get defaults in NewMonitor: Interval DefaultInterval,
// FastInterval = Interval (HAProxy's fastinter default; set it lower to
// confirm a change sooner), Timeout = Interval, Rise DefaultRise,
// Fall DefaultFall, Path "/", Host = the backend address, ExpectStatus
// DefaultExpectStatus.
type Check struct {
	Kind Kind
	// Path (may carry a query) and Host header of the GET, http(s) only.
	Path, Host string
	// ExpectStatus lists accepted status codes; empty means 200-399.
	ExpectStatus []StatusRange
	// ExpectBody, when set, must occur in the first DefaultMaxBody bytes of
	// the response body.
	ExpectBody string
	// TLS for https. ServerName is the SNI and the name verified; when empty
	// the Host header's host is used, else the backend's host.
	TLSSkipVerify                         bool
	ServerName, CAFile, CertFile, KeyFile string
	// Interval is the period between checks, with ±10% jitter. FastInterval
	// replaces it while a state change is pending (a failure on a healthy
	// backend or a success on an unhealthy one); a ConnectFailed does not
	// move the next check forward. Timeout bounds one whole check: connect,
	// TLS handshake, request, status line and headers, and the body prefix
	// when ExpectBody is set (otherwise the body is not read).
	Interval, FastInterval, Timeout time.Duration
	// Rise consecutive successes make an unhealthy backend healthy; Fall
	// consecutive failures make a healthy backend unhealthy.
	Rise, Fall int
	// StartHealthy is the state before the first check. KindNone backends
	// are always healthy whatever this says; see InitialHealthy.
	StartHealthy bool
}

// InitialHealthy is the state a backend has before any check ran: what the
// balancer's PoolConfig.StartHealthy must be set to so both agree.
func (c Check) InitialHealthy() bool { return c.Kind == KindNone || c.StartHealthy }

// PoolChecks names a pool, its backends ("host:port", as the balancer knows
// them) and the check they all get.
type PoolChecks struct {
	Pool     string
	Backends []string
	Check    Check
}

// Transition is one change of a backend's state.
type Transition struct {
	Pool, Backend string
	Healthy       bool
	// Reason is ReasonOK for a rise, else the reason of the failure that
	// reached Fall.
	Reason string
}

// Reasons carried by Transition, Status and the failure metric.
const (
	ReasonOK      = "ok"
	ReasonRefused = "refused" // connection refused: nothing listens
	ReasonTimeout = "timeout" // connect, handshake or response exceeded Timeout
	ReasonTLS     = "tls"     // handshake failed: verification, protocol, alert
	ReasonStatus  = "status"  // HTTP status not in ExpectStatus
	ReasonBody    = "body"    // ExpectBody not found in the bounded body
	ReasonNetwork = "network" // any other I/O error: reset, unreachable, bad HTTP
	ReasonPassive = "passive" // the proxy failed to connect (ConnectFailed)
)

// failureReasons are the reasons a failure can carry; the failure counter is
// pre-created for each so rate() works from the first failure.
var failureReasons = []string{ReasonRefused, ReasonTimeout, ReasonTLS, ReasonStatus, ReasonBody, ReasonNetwork, ReasonPassive}

// Summary tells how fit this node is to hold the VIP.
type Summary struct {
	Pools        int `json:"pools"`
	HealthyPools int `json:"healthy_pools"`
}

// Fit reports whether every pool has at least one healthy backend (true
// when there are no pools).
func (s Summary) Fit() bool { return s.HealthyPools == s.Pools }

// Options configures a Monitor.
type Options struct {
	Pools []PoolChecks
	// OnTransition is called on every state change, in order per backend,
	// from the goroutine that observed it (a worker, or the proxy's
	// goroutine calling ConnectFailed). It must not block for long. It is
	// not called for the initial state.
	OnTransition func(Transition)
	Logger       *zap.Logger
	Registerer   prometheus.Registerer
	// Dial opens check connections; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}
