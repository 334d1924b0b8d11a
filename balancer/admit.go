package balancer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// AcceptProxyConfig makes a frontend take PROXY protocol v1 or v2 headers
// from the sources in From, so vipd can sit behind another load balancer.
type AcceptProxyConfig struct {
	From    []netip.Prefix // trusted senders; any other source is refused
	Timeout time.Duration  // > 0: the whole header must arrive within it
}

// proxyHeaderBuffer is the read-ahead of the PROXY header reader: bytes the
// client sent after the header may land in it and are forwarded to the
// backend before the splice takes over the bare socket. A v1 header is at
// most 107 bytes; longer v2 headers (TLVs) are read through it.
const proxyHeaderBuffer = 512

// refusal is why a frontend closed a connection it accepted at once; each
// is a value of the refused metric's reason label.
type refusal int

const (
	refusedMaxConnections refusal = iota
	refusedNoBackend
	refusedPerSource
	refusedProxyUntrusted
	refusedProxyBadHeader
	refusedProxyTimeout
	refusalKinds // the number of refusals
)

var refusalNames = [refusalKinds]string{"max_connections", "no_backend", "per_source",
	"proxy_untrusted", "proxy_bad_header", "proxy_timeout"}

// peer is the client as the frontend sees it: the socket's own addresses,
// or those of the PROXY header a trusted sender put in front.
type peer struct {
	src, dst net.Addr
	early    []byte // client bytes read past the PROXY header, for the backend first
}

// errUntrusted refuses a connection on an accept_proxy frontend from a
// source outside its from list.
var errUntrusted = errors.New("source not in accept_proxy.from")

// readProxyHeader reads the PROXY header c must start with, within timeout
// (a read deadline, cleared again on success: no goroutine waits on c) or
// until ctx ends. It returns the header's addresses, or c's own when the
// header says LOCAL or carries no addresses (v1 UNKNOWN), plus whatever c
// sent after the header that the reader had already taken in. c stays a bare
// *net.TCPConn for the splice.
func readProxyHeader(ctx context.Context, c *net.TCPConn, timeout time.Duration) (peer, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return peer{}, fmt.Errorf("arm PROXY header deadline: %w", err)
	}
	// Shutdown past its grace ends a header read at once, as it cuts pairs.
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	br := bufio.NewReaderSize(c, proxyHeaderBuffer)
	h, err := proxyproto.Read(br)
	if !stop() || err != nil {
		if err == nil {
			err = ctx.Err()
		}
		return peer{}, fmt.Errorf("read PROXY header: %w", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return peer{}, fmt.Errorf("clear PROXY header deadline: %w", err)
	}
	p := peer{src: c.RemoteAddr(), dst: c.LocalAddr()}
	if h.Command != proxyproto.LOCAL && h.TransportProtocol != proxyproto.UNSPEC {
		src, dst, ok := h.TCPAddrs()
		if !ok {
			return peer{}, fmt.Errorf("read PROXY header: transport %#x is not TCP", byte(h.TransportProtocol))
		}
		p.src, p.dst = src, dst
	}
	if n := br.Buffered(); n > 0 {
		buffered, _ := br.Peek(n)
		p.early = slices.Clone(buffered)
	}
	return p, nil
}

// proxyRefusal is the refused reason of a readProxyHeader error.
func proxyRefusal(err error) refusal {
	switch {
	case errors.Is(err, errUntrusted):
		return refusedProxyUntrusted
	case errors.Is(err, os.ErrDeadlineExceeded):
		return refusedProxyTimeout
	}
	return refusedProxyBadHeader
}

// trusted reports whether addr is inside one of from.
func trusted(addr net.Addr, from []netip.Prefix) bool {
	ip, ok := addrIP(addr)
	if !ok {
		return false
	}
	for _, p := range from {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// addrIP is addr's IP, IPv4-mapped IPv6 unmapped so 10.0.0.1 is one source
// however the socket spells it.
func addrIP(addr net.Addr) (netip.Addr, bool) {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	return ip.Unmap(), ok
}

// sourceCounts counts a frontend's live connections per source IP for
// max_connections_per_source. An entry is deleted when its count returns to
// zero, so the map holds only sources with connections open: its size is
// bounded by the frontend's live connections, whatever the sources were.
type sourceCounts struct {
	mu sync.Mutex
	n  map[netip.Addr]int64 // guarded by mu
}

// acquire counts one more connection of ip unless it has limit already.
func (s *sourceCounts) acquire(ip netip.Addr, limit int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[ip] >= limit {
		return false
	}
	if s.n == nil {
		s.n = make(map[netip.Addr]int64)
	}
	s.n[ip]++
	return true
}

// release counts one connection of ip less.
func (s *sourceCounts) release(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[ip]--; s.n[ip] <= 0 {
		delete(s.n, ip)
	}
}

// sources is how many source IPs have connections counted.
func (s *sourceCounts) sources() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.n)
}
