// Package health runs active health checks (tcp, http, https) against the
// backends of vipd's pools, applies HAProxy-style rise/fall thresholds, takes
// passive connect outcomes from the proxy into account, and keeps the one
// record of whether each backend may take connections, plus a per-node
// fitness Summary.
//
// It imports no other vipd package: cmd/vipd hands each Backend (from
// Monitor.Backend, or Change.Backend when it reconfigures the pools with
// Prepare and Apply) to the balancer, which asks it at every pick, passes
// the Monitor to the balancer as its ConnectReporter, and forwards
// SummaryChanges to the election.
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

// MaxBody bounds how much of a response body is searched for ExpectBody; a
// health endpoint that needs more is misconfigured.
const MaxBody = 64 << 10

// Check describes how every backend of one pool is checked.
//
// Its values arrive complete: defaults and the rules between values belong
// to the config package, which applies them at load. NewMonitor substitutes
// nothing; a required value left zero is an error that names it.
type Check struct {
	Kind Kind
	// Path (may carry a query) and Host header of the GET, http(s) only.
	// Path is required; an empty Host means the backend's address.
	Path, Host string
	// ExpectStatus lists accepted status codes, http(s) only; required.
	ExpectStatus []StatusRange
	// ExpectBody, when set, must occur in the first MaxBody bytes of the
	// response body.
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
	// when ExpectBody is set (otherwise the body is not read). All three
	// are required for an active check.
	Interval, FastInterval, Timeout time.Duration
	// Rise consecutive successes make an unhealthy backend healthy; Fall
	// consecutive failures make a healthy backend unhealthy. Both >= 1.
	Rise, Fall int
	// StartHealthy is the state before the first check of an active check.
	// A KindNone backend has no check and is always healthy; StartHealthy
	// does not apply to it.
	StartHealthy bool
}

// PoolChecks names a pool, its backends ("host:port", as the balancer knows
// them) and the check they all get.
type PoolChecks struct {
	Pool     string
	Backends []string
	Check    Check
	// PerVIP leaves the pool out of the Summary: its VIP's placement asks
	// for it frontend by frontend (a Kubernetes Service's pool), so a
	// Service with no healthy endpoint makes no node unfit to lead.
	PerVIP bool
}

// transition is one change of a backend's state, as the Monitor's test
// hook sees it.
type transition struct {
	Pool, Backend string
	Healthy       bool
	// Reason is ReasonOK for a rise, else the reason of the failure that
	// reached Fall.
	Reason string
}

// Reasons carried by transitions, Status and the failure metric.
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
	Pools      []PoolChecks
	Logger     *zap.Logger
	Registerer prometheus.Registerer
	// Dial opens check connections; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}
