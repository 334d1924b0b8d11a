package balancer

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestAcceptBacksOffOnEMFILEAndRecovers(t *testing.T) {
	be := startBackend(t, namedEcho("a"))
	b, reg := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	fe := b.Addr("fe").(*net.TCPAddr)

	// The client socket exists before the file table is cut, so its
	// connect needs no new descriptor and completes in the kernel's backlog.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	file := os.NewFile(uintptr(fd), "client")
	defer file.Close()

	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
			t.Errorf("restore RLIMIT_NOFILE: %v", err)
		}
	}
	t.Cleanup(restore)
	// Below every free descriptor number: each new fd fails with EMFILE.
	low := saved
	low.Cur = 3
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: fe.Port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		restore()
		t.Fatal(err)
	}
	waitFor(t, func() bool { return b.layout.Load().frontends[0].acceptErrors.Load() >= 3 })
	restore()

	c, err := net.FileConn(file)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(ioWait))
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "a\n" {
		t.Fatalf("after the file table recovered the pending client got %q, %v", buf, err)
	}
	t.Logf("accept errors before recovery: %v",
		metricValue(t, reg, "vipd_frontend_accept_errors_total", map[string]string{"frontend": "fe"}))
}
