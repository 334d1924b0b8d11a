package balancer

import (
	"net"
	"sync"
	"sync/atomic"
)

// livePair is one relayed client/backend socket pair, linked into a
// liveSet while it relays.
type livePair struct {
	client, server *net.TCPConn
	be             *backend
	fe             *frontend
	header         uint64 // PROXY header bytes written to server before the relay
	wake           func() // resumes the relay's parked directions after a close
	// What the peers acknowledged so far in each direction, as last sampled:
	// never more than the relay's final counts.
	ackedUp, ackedDown atomic.Uint64
	prev, next         *livePair
}

// close closes both sockets, which ends the relay's copies.
func (lp *livePair) close() {
	_ = lp.client.Close()
	_ = lp.server.Close()
	if lp.wake != nil {
		lp.wake()
	}
}

// liveSet holds the relaying pairs so Shutdown can cut them when its grace
// runs out, and a reload those of what it removed when theirs does. It is an intrusive list under one mutex: adding and removing a
// pair costs a lock and four pointer writes, no allocation beyond the pair,
// no goroutine and no timer. A context.AfterFunc per connection on a shared
// parent context did the same job for a closure, a channel and a map entry
// in the parent's children set per connection.
type liveSet struct {
	mu     sync.Mutex
	cut    bool     // guarded by mu; set by cutAll, pairs added later are closed at once
	head   livePair // guarded by mu; sentinel of the circular list
	linked int      // guarded by mu; pairs in the list
}

// add links lp. If cutAll has already run, or retire for lp's frontend or
// backend, lp is closed instead and add reports false; the caller still
// calls finish.
func (s *liveSet) add(lp *livePair) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut || lp.fe.retired || lp.be.retired {
		lp.close()
		return false
	}
	s.linked++
	if s.head.next == nil {
		s.head.next, s.head.prev = &s.head, &s.head
	}
	lp.prev, lp.next = &s.head, s.head.next
	s.head.next.prev = lp
	s.head.next = lp
	return true
}

// finish unlinks lp and adds its relay's byte counts to its backend in one
// step under the mutex, so relayed never counts a byte both live and
// finished, or neither. It takes the mutex, so when cutAll is closing sockets
// it waits until cutAll is done: no close outlives the connection's
// goroutine.
func (s *liveSet) finish(lp *livePair, up, down int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lp.be.bytesUp.Add(uint64(up))
	lp.be.bytesDown.Add(uint64(down))
	if lp.next == nil {
		return
	}
	lp.prev.next, lp.next.prev = lp.next, lp.prev
	lp.prev, lp.next = nil, nil
	s.linked--
}

// count is the number of pairs relaying.
func (s *liveSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.linked
}

// byteCounts are bytes relayed client→backend (up) and backend→client (down).
type byteCounts struct{ up, down uint64 }

// relayed returns the bytes each backend of pools has relayed: those of
// ended connections plus what the peers of live ones acknowledged so far,
// so a connection that runs for hours shows up while it runs. Each total
// only grows from one call to the next. The TCP_INFO reads happen outside
// the mutex, so connections come and go meanwhile; the sums are taken under
// it, consistent with finish.
func (s *liveSet) relayed(pools []*pool) map[*backendState]byteCounts {
	s.mu.Lock()
	var pairs []*livePair
	s.each(func(lp *livePair) { pairs = append(pairs, lp) })
	s.mu.Unlock()
	for _, lp := range pairs {
		if up, err := bytesAcked(lp.server); err == nil && up > lp.header+seqControl {
			storeMax(&lp.ackedUp, up-lp.header-seqControl)
		}
		if down, err := bytesAcked(lp.client); err == nil && down > seqControl {
			storeMax(&lp.ackedDown, down-seqControl)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[*backendState]byteCounts)
	for _, p := range pools {
		for _, be := range p.backends {
			out[be.backendState] = byteCounts{be.bytesUp.Load(), be.bytesDown.Load()}
		}
	}
	s.each(func(lp *livePair) {
		if c, ok := out[lp.be.backendState]; ok {
			out[lp.be.backendState] = byteCounts{c.up + lp.ackedUp.Load(), c.down + lp.ackedDown.Load()}
		}
	})
	return out
}

// seqControl is what TCP_INFO's bytes_acked counts beyond data: the SYN (on
// the side that connected) and the FIN, one sequence number each. Leaving
// both out keeps a live count at most the relay's final one, up to two
// bytes under it while the connection runs.
const seqControl = 2

// each calls f for every linked pair; s.mu must be held.
func (s *liveSet) each(f func(*livePair)) {
	if s.head.next == nil {
		return
	}
	for lp := s.head.next; lp != &s.head; lp = lp.next {
		f(lp)
	}
}

// storeMax raises a to v if v is larger.
func storeMax(a *atomic.Uint64, v uint64) {
	for old := a.Load(); v > old && !a.CompareAndSwap(old, v); old = a.Load() {
	}
}

// cutAll closes every linked pair and every pair added after it. It is safe
// to call more than once.
func (s *liveSet) cutAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut = true
	s.each((*livePair).close)
}

// retire marks frontends and backends retired and closes every linked pair
// of one of them; pairs of theirs added later are closed by add. It
// returns how many pairs it closed.
func (s *liveSet) retire(frontends []*frontend, backends []*backendState) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range frontends {
		f.retired = true
	}
	for _, st := range backends {
		st.retired = true
	}
	n := 0
	s.each(func(lp *livePair) {
		if lp.fe.retired || lp.be.retired {
			lp.close()
			n++
		}
	})
	return n
}
