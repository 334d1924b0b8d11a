package balancer

import (
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// listenControl sets SO_REUSEADDR (rebind at once after a restart),
// IP_FREEBIND / IPV6_FREEBIND (bind the VIP before this node holds it) and
// the client keepalive that accepted sockets inherit.
func listenControl(network, address string, c syscall.RawConn) error {
	freebind := sockopt{unix.SOL_IP, unix.IP_FREEBIND, 1, "IP_FREEBIND"}
	if network == "tcp6" {
		freebind = sockopt{unix.SOL_IPV6, unix.IPV6_FREEBIND, 1, "IPV6_FREEBIND"}
	}
	opts := []sockopt{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"},
		freebind,
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAliveIdle / time.Second), "TCP_KEEPIDLE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAliveInterval / time.Second), "TCP_KEEPINTVL"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount, "TCP_KEEPCNT"},
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		for _, o := range opts {
			if serr = unix.SetsockoptInt(int(fd), o.level, o.name, o.value); serr != nil {
				serr = fmt.Errorf("set %s: %w", o.label, serr)
				return
			}
		}
	})
	if err != nil {
		return fmt.Errorf("listen %s: %w", address, err)
	}
	if serr != nil {
		return fmt.Errorf("listen %s: %w", address, serr)
	}
	return nil
}

type sockopt struct {
	level, name, value int
	label              string
}

// quietFor asks the kernel (TCP_INFO) how long ago data last went either way
// on c. Reading it does not touch the socket's data path, so splice stays on.
func quietFor(c *net.TCPConn) (time.Duration, error) {
	info, err := tcpInfo(c)
	if err != nil {
		return 0, err
	}
	ms := min(info.Last_data_recv, info.Last_data_sent)
	return time.Duration(ms) * time.Millisecond, nil
}

// bytesAcked is how many bytes written to c its peer has acknowledged
// (TCP_INFO): never more than the writer has written, so it can stand in
// for a copy's byte count while the copy is still running.
func bytesAcked(c *net.TCPConn) (uint64, error) {
	info, err := tcpInfo(c)
	if err != nil {
		return 0, err
	}
	return info.Bytes_acked, nil
}

func tcpInfo(c *net.TCPConn) (*unix.TCPInfo, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tcp info: %w", err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO)
	}); err != nil {
		return nil, fmt.Errorf("tcp info: %w", err)
	}
	if ierr != nil {
		return nil, fmt.Errorf("tcp info: %w", ierr)
	}
	return info, nil
}
