package bed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// Dial connects from inside the host's namespace. The socket is made on a
// thread switched into the namespace; the returned conn is usable anywhere.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Get does one HTTP/1.0 GET of path on addr from the host's namespace, on a
// fresh connection, and returns the body of a 200 answer.
func (h *Host) Get(ctx context.Context, addr, path string) (string, error) {
	code, body, err := h.HTTP(ctx, http.MethodGet, addr, path)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET %s%s: status %d: %.200s", addr, path, code, body)
	}
	return body, err
}

// HTTP sends one bodiless HTTP/1.0 request from the host's namespace on a
// fresh connection and returns the status code and body.
func (h *Host) HTTP(ctx context.Context, method, addr, path string) (int, string, error) {
	conn, err := h.Dial(ctx, "tcp", addr)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.0\r\nHost: %s\r\nContent-Length: 0\r\n\r\n", method, path, addr); err != nil {
		return 0, "", fmt.Errorf("send to %s: %w", addr, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", fmt.Errorf("read answer of %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("read body of %s: %w", addr, err)
	}
	return resp.StatusCode, string(body), nil
}

// Result is one client request.
type Result struct {
	Start, End time.Time
	Backend    string // body of a successful answer, trimmed (the backend's name)
	Err        error  // nil on success
}

// OK reports whether the request succeeded.
func (r Result) OK() bool { return r.Err == nil }

// TimedOut reports whether the request failed only by running out of its
// Timeout: nothing answered in time, which a starved client causes as well
// as a stalled path. A refused or reset connection or a wrong answer is a
// break that no CPU stall explains.
func (r Result) TimedOut() bool {
	var ne net.Error // context.DeadlineExceeded and os.ErrDeadlineExceeded are such errors too
	return errors.As(r.Err, &ne) && ne.Timeout()
}

// Client sends a GET to Target from a host every Interval, each on a fresh
// connection with Timeout, and keeps every result.
type Client struct {
	Host     *Host
	Target   string // host:port, the VIP's frontend
	Interval time.Duration
	Timeout  time.Duration

	mu      sync.Mutex
	results []Result // guarded by mu, in completion order

	cancel context.CancelFunc
	wg     sync.WaitGroup // the ticker loop and every request in flight
}

// NewClient returns a client with the pace: every 10 ms, 50 ms timeout.
func NewClient(h *Host, target string) *Client {
	return &Client{Host: h, Target: target, Interval: 10 * time.Millisecond, Timeout: 50 * time.Millisecond}
}

// Start begins sending; Stop ends it.
func (c *Client) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTicker(c.Interval)
		defer t.Stop()
		for {
			c.wg.Add(1)
			go c.once(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends sending and waits for requests in flight. Safe to call twice.
func (c *Client) Stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	c.wg.Wait()
	c.cancel = nil
}

func (c *Client) once(parent context.Context) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(parent, c.Timeout)
	defer cancel()
	r := Result{Start: time.Now()}
	body, err := c.Host.Get(ctx, c.Target, "/")
	r.End = time.Now()
	if parent.Err() != nil {
		return // stopped mid-request: not a failure of the system under test
	}
	r.Backend, r.Err = strings.TrimSpace(body), err
	c.mu.Lock()
	c.results = append(c.results, r)
	c.mu.Unlock()
}

// Results returns every result so far, in completion order.
func (c *Client) Results() []Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.results)
}

// WaitFlowing waits until n requests in a row that started after since have
// succeeded.
func (c *Client) WaitFlowing(ctx context.Context, since time.Time, n int) error {
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		run := 0
		var lastErr error
		for _, r := range c.Results() {
			if r.Start.Before(since) {
				continue
			}
			if r.OK() {
				run++
			} else {
				run, lastErr = 0, r.Err
			}
		}
		if run >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d successful requests to %s in a row: last error %v: %w", n, c.Target, lastErr, ctx.Err())
		case <-t.C:
		}
	}
}

// Outage is the client-seen interruption around a fault.
type Outage struct {
	Fault    time.Time
	Gap      time.Duration // longest time between two successes, from the last before the fault, up to Until
	From, To time.Time     // the two successes bounding Gap
	Failed   int           // requests that failed between Fault and Until
	TimedOut int           // of Failed, those that only timed out (Result.TimedOut)
}

func (o Outage) String() string {
	return fmt.Sprintf("%s (%d failed requests)", o.Gap.Round(time.Millisecond), o.Failed)
}

// ErrNoRecovery says no request succeeded after the fault.
var ErrNoRecovery = errors.New("no successful request after the fault")

// Outage measures the interruption caused by a fault at fault: the longest
// gap between consecutive successful answers (by completion time), starting
// with the last success completed at or before fault and ending with the last
// success up to until. A fault that interrupts nothing gives about one
// Interval.
func (c *Client) Outage(fault, until time.Time) (Outage, error) {
	var ok []time.Time
	o := Outage{Fault: fault}
	for _, r := range c.Results() {
		if r.End.After(until) {
			continue
		}
		if r.OK() {
			ok = append(ok, r.End)
		} else if r.End.After(fault) {
			o.Failed++
			if r.TimedOut() {
				o.TimedOut++
			}
		}
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i].Before(ok[j]) })
	i := sort.Search(len(ok), func(i int) bool { return ok[i].After(fault) })
	if i == 0 {
		return o, errors.New("no successful request before the fault")
	}
	if i == len(ok) {
		o.From = ok[i-1]
		return o, ErrNoRecovery
	}
	for j := i; j < len(ok); j++ {
		if gap := ok[j].Sub(ok[j-1]); gap > o.Gap {
			o.Gap, o.From, o.To = gap, ok[j-1], ok[j]
		}
	}
	return o, nil
}

// Backends returns how many successful answers each backend gave in [from, to].
func (c *Client) Backends(from, to time.Time) map[string]int {
	out := map[string]int{}
	for _, r := range c.Results() {
		if r.OK() && !r.End.Before(from) && !r.End.After(to) {
			out[r.Backend]++
		}
	}
	return out
}

// Neighbour returns the link-layer address and state (netlink NUD_* name) of
// the host's neighbour-table entry for addr on HostIface; a nil address when
// there is no entry.
func (h *Host) Neighbour(addr netip.Addr) (net.HardwareAddr, string, error) {
	l, err := h.nl.LinkByName(HostIface)
	if err != nil {
		return nil, "", fmt.Errorf("%s in %s: %w", HostIface, h.NS, err)
	}
	neighs, err := h.nl.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return nil, "", fmt.Errorf("neighbours of %s: %w", h.Name, err)
	}
	for _, n := range neighs {
		if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == addr {
			return n.HardwareAddr, neighState(n.State), nil
		}
	}
	return nil, "", nil
}

func neighState(s int) string {
	names := []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "incomplete"}, {netlink.NUD_REACHABLE, "reachable"},
		{netlink.NUD_STALE, "stale"}, {netlink.NUD_DELAY, "delay"}, {netlink.NUD_PROBE, "probe"},
		{netlink.NUD_FAILED, "failed"}, {netlink.NUD_NOARP, "noarp"}, {netlink.NUD_PERMANENT, "permanent"},
	}
	var out []string
	for _, n := range names {
		if s&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return strings.Join(out, "|")
}
