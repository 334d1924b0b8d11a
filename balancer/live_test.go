package balancer

import (
	"errors"
	"net"
	"testing"
)

// openPair returns a livePair of two loopback TCP sockets, closed at the
// end of the test.
func openPair(t *testing.T) *livePair {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lp := &livePair{be: &backend{backendState: &backendState{}}, fe: &frontend{}}
	lp.client, lp.server = tcpPair(t, ln)
	t.Cleanup(lp.close)
	return lp
}

func isClosed(c *net.TCPConn) bool {
	_, err := c.Write([]byte("x"))
	return errors.Is(err, net.ErrClosed)
}

func TestLiveSetCutClosesLinkedPairsOnly(t *testing.T) {
	var s liveSet
	linked, ended := openPair(t), openPair(t)
	if !s.add(linked) || !s.add(ended) {
		t.Fatal("add before the cut refused")
	}
	s.finish(ended, 0, 0)
	s.cutAll()
	if !isClosed(linked.client) || !isClosed(linked.server) {
		t.Fatal("a linked pair survived the cut")
	}
	if isClosed(ended.client) || isClosed(ended.server) {
		t.Fatal("the cut closed a pair already removed")
	}
	s.finish(linked, 0, 0) // after the cut, as handle does
	s.finish(linked, 0, 0) // and a second time is harmless
	s.cutAll()             // a second Shutdown
}

func TestLiveSetAddAfterCutClosesAtOnce(t *testing.T) {
	var s liveSet
	s.cutAll()
	late := openPair(t)
	if s.add(late) {
		t.Fatal("add after the cut accepted the pair")
	}
	if !isClosed(late.client) || !isClosed(late.server) {
		t.Fatal("a pair added after the cut is still open")
	}
	s.finish(late, 0, 0)
}

// retire closes the pairs of a removed frontend or backend, and a pair of
// theirs that links afterwards (a connect that was in flight), but no other.
func TestLiveSetRetireClosesPairsOfRemovedFrontendsAndBackends(t *testing.T) {
	var s liveSet
	onGoneBackend, onGoneFrontend, kept := openPair(t), openPair(t), openPair(t)
	onGoneFrontend.fe = &frontend{}
	for _, lp := range []*livePair{onGoneBackend, onGoneFrontend, kept} {
		if !s.add(lp) {
			t.Fatal("add refused before any retire")
		}
	}
	if n := s.retire([]*frontend{onGoneFrontend.fe}, []*backendState{onGoneBackend.be.backendState}); n != 2 {
		t.Fatalf("retire closed %d pairs, want 2", n)
	}
	for name, lp := range map[string]*livePair{"removed backend": onGoneBackend, "removed frontend": onGoneFrontend} {
		if !isClosed(lp.client) || !isClosed(lp.server) {
			t.Fatalf("the pair of the %s is still open", name)
		}
	}
	if isClosed(kept.client) || isClosed(kept.server) {
		t.Fatal("retire closed a pair of a frontend and backend that stay")
	}
	late := openPair(t)
	late.be = onGoneBackend.be
	if s.add(late) || !isClosed(late.client) {
		t.Fatal("a pair of a retired backend linked after the retire stays open")
	}
	if n := s.count(); n != 3 {
		t.Fatalf("%d pairs linked, want the 3 added before (closed ones stay until their goroutine finishes)", n)
	}
	for _, lp := range []*livePair{onGoneBackend, onGoneFrontend, kept, late} {
		s.finish(lp, 0, 0)
	}
	if n := s.count(); n != 0 {
		t.Fatalf("%d pairs linked after every finish", n)
	}
}
