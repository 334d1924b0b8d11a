package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

// FreePort returns a loopback port that was free for both TCP and UDP a
// moment ago (gossip binds both), never the same one twice in this
// process. It draws from below Linux's default ephemeral range
// (32768-60999): a port from listening on port 0 is an ephemeral one, and
// any outgoing connection of the test process (Raft, gossip, a health
// check) may take it before the daemon meant to bind it starts.
func FreePort(t TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			portsGiven[port] = true
			return port
		}
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)
