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
