package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The first byte a client sends on every connection selects what the backend
// does with it. One backend port serves every workload, so HAProxy and vipd
// each need a single frontend and a single server, configured identically.
const (
	modeSink  byte = 'S' // count bytes until EOF, reply with the count (8 bytes, big endian), close
	modeEcho  byte = 'E' // echo everything back until EOF
	modeConn  byte = 'C' // read the rest of a connRequestSize request, send connReplySize bytes, close
	modeIdle  byte = 'I' // hold the connection until EOF
	bulkChunk      = 64 << 10
)

// Sizes of the small request and reply of the connection-rate workload.
const (
	connRequestSize = 16 // including the mode byte
	connReplySize   = 16
)

// Backend is the server behind every target: a sink for bulk, an echo server
// for request/response pairs, a small-reply server for the connection rate and
// a holder of idle connections. It runs in the benchmark's own process.
type Backend struct {
	ln net.Listener

	idle atomic.Int64 // idle-mode connections currently held

	mu    sync.Mutex
	conns map[net.Conn]struct{} // open connections, closed by Close
	done  bool                  // Close has begun; new connections are refused

	wg        sync.WaitGroup // the accept loop and one goroutine per connection
	closeOnce sync.Once
}

// NewBackend listens on addr (use "127.0.0.1:0") and serves until Close.
func NewBackend(addr string) (*Backend, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("backend listen %s: %w", addr, err)
	}
	b := &Backend{ln: ln, conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go b.acceptLoop()
	return b, nil
}

// Addr is the address the backend listens on.
func (b *Backend) Addr() string { return b.ln.Addr().String() }

// IdleConns is the number of idle-mode connections the backend holds now.
func (b *Backend) IdleConns() int64 { return b.idle.Load() }

// Close stops accepting, closes every open connection and waits for all of
// the backend's goroutines. It is safe to call more than once.
func (b *Backend) Close() error {
	var err error
	b.closeOnce.Do(func() {
		err = b.ln.Close()
		b.mu.Lock()
		b.done = true
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
	})
	b.wg.Wait()
	return err
}

func (b *Backend) acceptLoop() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: keep serving what we have, without spinning.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if !b.track(c) {
			c.Close()
			return
		}
		b.wg.Add(1)
		go b.serve(c)
	}
}

// track registers c so Close can reach it; false once Close has begun.
func (b *Backend) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *Backend) serve(c net.Conn) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		c.Close()
	}()
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case modeSink:
		n, ok := drain(c)
		if !ok {
			return
		}
		var reply [8]byte
		binary.BigEndian.PutUint64(reply[:], uint64(n))
		c.Write(reply[:])
	case modeEcho:
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	case modeConn:
		var req [connRequestSize - 1]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		var reply [connReplySize]byte
		copy(reply[:], "OK vipbench 0123")
		c.Write(reply[:])
		// Returning closes first, so TIME_WAIT lands on the server side and
		// the client's ephemeral ports are not used up.
	case modeIdle:
		b.idle.Add(1)
		defer b.idle.Add(-1)
		io.Copy(io.Discard, c)
	}
}

// drain reads c until EOF with a bulkChunk buffer and returns the byte count;
// ok is false on any error but EOF. (io.Copy to io.Discard would read in
// 8 KiB steps and make the sink, not the proxy, the bottleneck.)
func drain(c net.Conn) (n int64, ok bool) {
	buf := make([]byte, bulkChunk)
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err == io.EOF {
			return n, true
		}
		if err != nil {
			return n, false
		}
	}
}
