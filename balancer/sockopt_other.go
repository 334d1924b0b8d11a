//go:build !linux

package balancer

import (
	"errors"
	"net"
	"syscall"
	"time"
)

var errNotSupported = errors.New("balancer: supported on linux only")

func listenControl(string, string, syscall.RawConn) error { return errNotSupported }

func quietFor(*net.TCPConn) (time.Duration, error) { return 0, errNotSupported }

func bytesAcked(*net.TCPConn) (uint64, error) { return 0, errNotSupported }
