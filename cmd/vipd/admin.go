package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/vipd/vipd/balancer"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/health"
	"github.com/vipd/vipd/spread"
	"github.com/vipd/vipd/vip"
)

// forwardedHeader marks a request a follower passed to the leader, so that
// a stale leader hint can never make two nodes bounce a call between them.
const forwardedHeader = "X-Vipd-Forwarded-By"

// maxAdminBody bounds what an admin call may send.
const maxAdminBody = 64 << 10

// Status is the JSON of GET /status. Its fields are a contract (the
// design's admin API, guarded by TestStatusKeepsItsContract): extend, never
// rename.
type Status struct {
	Node    string            `json:"node"`
	State   string            `json:"state"`
	Leader  string            `json:"leader"`
	Term    uint64            `json:"term"`
	Ready   bool              `json:"ready"`
	VIPs    []VIPStatus       `json:"vips"`
	Members []election.Member `json:"members"`
	Pools   []PoolStatus      `json:"pools"`
	Health  HealthSummary     `json:"health"`
	Intent  election.Intent   `json:"intent"`
	// ConfigDigest is config.Digest of the config this node runs.
	ConfigDigest string `json:"config_digest"`
}

// VIPStatus is a VIP in /status: the vip package's view plus where it
// should be held (placement: leader or spread) and the node that holds it,
// "" when none does (as this node knows it; a spread VIP's settled
// assignee in the replicated assignment).
type VIPStatus struct {
	vip.Status
	Placement string `json:"placement"`
	Holder    string `json:"holder"`
}

// PoolStatus is a pool in /status: the balancer's view plus the last check.
type PoolStatus struct {
	Name     string          `json:"name"`
	Backends []BackendStatus `json:"backends"`
}

// BackendStatus is a backend in /status.
type BackendStatus struct {
	balancer.BackendStatus
	LastCheck   string               `json:"last_check,omitempty"` // reason of the last check: ok, refused, timeout, …
	Transitions []health.StateChange `json:"transitions"`          // the last health transitions, newest first
}

// HealthSummary is the node-level health that decides fitness to lead.
type HealthSummary struct {
	health.Summary
	Fit bool `json:"fit"`
}

func (d *daemon) status() Status {
	es := d.node.Status()
	sum := d.mon.Summary()
	st := Status{
		Node: es.Node, State: es.State, Leader: es.Leader, Term: es.Term,
		Ready: d.ready.Load(), VIPs: d.vips.status(es, d.node.Intent(), spreadPlacements(d.running())), Members: es.Members, Pools: []PoolStatus{},
		Health: HealthSummary{Summary: sum, Fit: sum.Fit()}, Intent: d.node.Intent(),
		ConfigDigest: config.Digest(d.running()),
	}
	checked := map[[2]string]health.BackendHealth{}
	for _, p := range d.mon.Status() {
		for _, b := range p.Backends {
			checked[[2]string{p.Name, b.Address}] = b
		}
	}
	for _, p := range d.bal.Status() {
		ps := PoolStatus{Name: p.Name, Backends: []BackendStatus{}}
		for _, b := range p.Backends {
			h := checked[[2]string{p.Name, b.Address}]
			ps.Backends = append(ps.Backends, BackendStatus{BackendStatus: b, LastCheck: h.LastReason, Transitions: h.Transitions})
		}
		st.Pools = append(st.Pools, ps)
	}
	return st
}

func (d *daemon) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	mux.HandleFunc("GET /{$}", serveStatusPage)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, d.status())
	})
	mux.HandleFunc("POST /v1/drain", d.backendCall(true))
	mux.HandleFunc("POST /v1/undrain", d.backendCall(false))
	mux.HandleFunc("POST /v1/transfer", d.leaderCall(func(*http.Request) error {
		return d.node.TransferLeadership()
	}))
	mux.HandleFunc("POST /v1/remove", d.leaderCall(func(r *http.Request) error {
		var req struct {
			Name string `json:"name"`
		}
		if err := decodeBody(r, &req); err != nil {
			return err
		}
		if req.Name == "" {
			return badRequest("name is required")
		}
		return d.node.Remove(req.Name)
	}))
	mux.HandleFunc("POST /v1/maintenance", d.leaderCall(func(r *http.Request) error {
		var req struct {
			Node string `json:"node"`
			On   *bool  `json:"on"`
		}
		if err := decodeBody(r, &req); err != nil {
			return err
		}
		if req.Node == "" || req.On == nil {
			return badRequest("node and on are required")
		}
		return d.node.SetMaintenance(req.Node, *req.On)
	}))
	mux.HandleFunc("POST /v1/move", d.leaderCall(d.move))
	mux.HandleFunc("POST /v1/reload", d.serveReload)
	mux.HandleFunc("POST /v1/leave", func(w http.ResponseWriter, _ *http.Request) {
		d.log.Info("leave requested through the admin API")
		writeJSON(w, http.StatusAccepted, map[string]string{"result": "leaving: releasing the VIP, handing over, draining"})
		d.requestLeave()
	})
	return d.auth.guard(mux)
}

// move hands a spread VIP over to a node (vipctl move). Only the granting
// leader can; elsewhere the call is forwarded to it.
func (d *daemon) move(r *http.Request) error {
	var req struct {
		VIP  string `json:"vip"`
		Node string `json:"node"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.VIP == "" || req.Node == "" {
		return badRequest("vip and node are required")
	}
	err := d.spread.Move(r.Context(), spreadKey(req.VIP), req.Node)
	switch {
	case errors.Is(err, spread.ErrNotGranting):
		st := d.node.Status()
		nl := &election.NotLeaderError{Leader: st.Leader}
		for _, m := range st.Members {
			if m.Name == st.Leader && st.Leader != st.Node {
				nl.LeaderAdmin = m.AdminAddr
			}
		}
		return fmt.Errorf("move %s: %w", req.VIP, nl)
	case errors.Is(err, spread.ErrNoSuchVIP), errors.Is(err, spread.ErrIneligible):
		return badRequest(err.Error())
	}
	return err
}

// backendCall handles drain and undrain: it checks the pool and backend
// against this node's config before asking the cluster to replicate it.
func (d *daemon) backendCall(drain bool) http.HandlerFunc {
	return d.leaderCall(func(r *http.Request) error {
		var req struct {
			Pool    string `json:"pool"`
			Backend string `json:"backend"`
		}
		if err := decodeBody(r, &req); err != nil {
			return err
		}
		if !d.hasBackend(req.Pool, req.Backend) {
			return badRequest(fmt.Sprintf("no backend %q in pool %q", req.Backend, req.Pool))
		}
		return d.node.SetDrained(req.Pool, req.Backend, drain)
	})
}

func (d *daemon) hasBackend(pool, backend string) bool {
	for _, p := range d.running().Pools {
		if p.Name != pool {
			continue
		}
		for _, b := range p.Backends {
			if b.Address == backend {
				return true
			}
		}
	}
	return false
}

// leaderCall runs a call that only the Raft leader can carry out. On a
// follower it forwards the request, once, to the leader's admin address.
func (d *daemon) leaderCall(call func(*http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("read request: %w", err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		err = call(r)
		var notLeader *election.NotLeaderError
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, map[string]string{"result": "ok"})
		case errors.As(err, &notLeader) && notLeader.LeaderAdmin != "" && r.Header.Get(forwardedHeader) == "":
			d.forward(w, r, body, notLeader.LeaderAdmin)
		case errors.As(err, new(badRequestError)), errors.Is(err, election.ErrLocalNode), errors.Is(err, election.ErrNotMember):
			writeError(w, http.StatusBadRequest, err)
		case errors.Is(err, election.ErrNoPeer): // the call is fine; the cluster cannot carry it out now
			writeError(w, http.StatusConflict, err)
		case errors.Is(err, election.ErrNotLeader):
			writeError(w, http.StatusServiceUnavailable, err)
		default:
			writeError(w, http.StatusInternalServerError, err)
		}
	}
}

// forward passes r to the leader with this node's own credentials.
func (d *daemon) forward(w http.ResponseWriter, r *http.Request, body []byte, leaderAdmin string) {
	target := &url.URL{Scheme: d.auth.scheme(), Host: leaderAdmin}
	d.log.Info("forward admin call to leader", zap.String("path", r.URL.Path), zap.String("leader_admin", leaderAdmin))
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.Header.Set(forwardedHeader, d.running().Node.Name)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			d.auth.authorize(pr.Out.Header)
		},
		Transport: d.auth.forwarder,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			writeError(w, http.StatusBadGateway, fmt.Errorf("forward to leader at %s: %w", leaderAdmin, err))
		},
	}
	proxy.ServeHTTP(w, r)
}

type badRequestError struct{ msg string }

func (e badRequestError) Error() string { return e.msg }

func badRequest(msg string) error { return badRequestError{msg} }

// decodeBody reads a JSON object with known fields only.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(fmt.Sprintf("request body: %v", err))
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
