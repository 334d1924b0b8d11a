package testenv

import (
	"fmt"
	"net"
	"testing"
)

// Every port FreePort gives is below the ephemeral range, new to this
// process, and bindable on TCP and UDP.
func TestFreePortIsBelowTheEphemeralRangeAndBindable(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := FreePort(t)
		if p >= 32768 || p < 1024 {
			t.Fatalf("port %d: want one below the ephemeral range (32768) and above 1023", p)
		}
		if seen[p] {
			t.Fatalf("port %d given twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d: tcp: %v", p, err)
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err != nil {
			t.Fatalf("port %d: udp: %v", p, err)
		}
		u.Close()
	}
}
