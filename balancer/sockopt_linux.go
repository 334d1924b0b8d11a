package balancer

import (
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// listenControl sets SO_REUSEADDR (rebind at once after a restart) and
// IP_FREEBIND / IPV6_FREEBIND (bind the VIP before this node holds it).
func listenControl(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			serr = fmt.Errorf("set SO_REUSEADDR: %w", serr)
			return
		}
		if network == "tcp6" {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1); serr != nil {
				serr = fmt.Errorf("set IPV6_FREEBIND: %w", serr)
			}
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1); serr != nil {
			serr = fmt.Errorf("set IP_FREEBIND: %w", serr)
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

// quietFor asks the kernel (TCP_INFO) how long ago data last went either way
// on c. Reading it does not touch the socket's data path, so splice stays on.
func quietFor(c *net.TCPConn) (time.Duration, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("tcp info: %w", err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, fmt.Errorf("tcp info: %w", err)
	}
	if ierr != nil {
		return 0, fmt.Errorf("tcp info: %w", ierr)
	}
	ms := min(info.Last_data_recv, info.Last_data_sent)
	return time.Duration(ms) * time.Millisecond, nil
}
