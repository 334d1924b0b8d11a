package balancer

import (
	"net"
	"sync"
)

// livePair is one relayed client/backend socket pair, linked into a
// liveSet while it relays.
type livePair struct {
	client, server *net.TCPConn
	prev, next     *livePair
}

// close closes both sockets, which ends the relay's copies.
func (lp *livePair) close() {
	_ = lp.client.Close()
	_ = lp.server.Close()
}

// liveSet holds the relaying pairs so Shutdown can cut them when its grace
// runs out. It is an intrusive list under one mutex: adding and removing a
// pair costs a lock and four pointer writes, no allocation beyond the pair,
// no goroutine and no timer. A context.AfterFunc per connection on a shared
// parent context did the same job for a closure, a channel and a map entry
// in the parent's children set per connection.
type liveSet struct {
	mu   sync.Mutex
	cut  bool     // guarded by mu; set by cutAll, pairs added later are closed at once
	head livePair // guarded by mu; sentinel of the circular list
}

// add links lp. If cutAll has already run, lp is closed instead and add
// reports false; the caller still calls remove (a no-op then).
func (s *liveSet) add(lp *livePair) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		lp.close()
		return false
	}
	if s.head.next == nil {
		s.head.next, s.head.prev = &s.head, &s.head
	}
	lp.prev, lp.next = &s.head, s.head.next
	s.head.next.prev = lp
	s.head.next = lp
	return true
}

// remove unlinks lp. It takes the mutex, so when cutAll is closing sockets
// it waits until cutAll is done: no close outlives the connection's
// goroutine.
func (s *liveSet) remove(lp *livePair) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lp.next == nil {
		return
	}
	lp.prev.next, lp.next.prev = lp.next, lp.prev
	lp.prev, lp.next = nil, nil
}

// cutAll closes every linked pair and every pair added after it. It is safe
// to call more than once.
func (s *liveSet) cutAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut = true
	if s.head.next == nil {
		return
	}
	for lp := s.head.next; lp != &s.head; lp = lp.next {
		lp.close()
	}
}
