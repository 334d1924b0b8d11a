package balancer

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Accepted sockets must carry the client keepalive although the accept path
// sets nothing: Linux copies it from the listening socket.
func TestAcceptedSocketsInheritKeepAliveFromListener(t *testing.T) {
	lc := net.ListenConfig{Control: listenControl, KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ level, name, value int }{
		"SO_KEEPALIVE":  {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		"TCP_KEEPIDLE":  {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAliveIdle / time.Second)},
		"TCP_KEEPINTVL": {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAliveInterval / time.Second)},
		"TCP_KEEPCNT":   {unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount},
	}
	rc.Control(func(fd uintptr) {
		for label, o := range want {
			got, err := unix.GetsockoptInt(int(fd), o.level, o.name)
			if err != nil || got != o.value {
				t.Errorf("accepted socket %s = %d (%v), want %d", label, got, err, o.value)
			}
		}
	})
}
