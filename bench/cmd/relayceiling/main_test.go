//go:build linux

package main

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vipd/vipd/internal/testenv"
)

// The relay must be right for its figures to mean anything: bytes both
// ways, a message larger than its buffer and than a socket's queue (a
// write that stops half way), and each side's end passed on while the
// other way still runs.
func TestRelayPassesBytesAndHalfCloses(t *testing.T) {
	for _, mode := range []string{"syscall", "raw", "sockmap"} {
		t.Run(mode, func(t *testing.T) {
			opts := loopOptions{raw: mode == "raw"}
			if mode == "sockmap" {
				opts.kernel = testKernelRelay(t)
			}
			backend, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer backend.Close()
			listen := startLoop(t, backend.Addr(), opts)

			// The backend reads the whole upload to its end, then answers
			// with twice what it got and closes.
			served := make(chan error, 1)
			go func() {
				c, err := backend.Accept()
				if err != nil {
					served <- err
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				got, err := io.ReadAll(c)
				if err == nil {
					_, err = c.Write(append(got, got...))
				}
				served <- err
			}()

			c, err := net.DialTimeout("tcp4", listen.String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			upload := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: many buffers, full queues
			go func() {
				_, _ = c.Write(upload)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read the answer: %v", err)
			}
			if err := <-served; err != nil {
				t.Fatalf("backend: %v", err)
			}
			if want := append(upload, upload...); !bytes.Equal(got, want) {
				t.Fatalf("answer: %d bytes, want %d equal to twice the upload", len(got), len(want))
			}
		})
	}
}

// A client's request can be in before the backend's connect completes:
// the link must hand those queued bytes to the verdict (which reads a
// queue only when more arrive), and when the client's FIN is in too, the
// sockhash refuses the socket (it takes only established ones) and the
// loop copies that pair itself. The backend's accept queue is full, so
// the proxy's connect waits for a retransmitted SYN (about a second).
func TestSockmapRelaysBytesThatCameBeforeTheLink(t *testing.T) {
	testenv.NeedRoot(t, "loads a BPF program")
	for _, fin := range []bool{false, true} {
		t.Run(map[bool]string{false: "request", true: "request and FIN"}[fin], func(t *testing.T) {
			backend := listenBacklogZero(t)
			defer backend.Close()
			filler, err := net.Dial("tcp4", backend.Addr().String()) // takes the one place in the queue
			if err != nil {
				t.Fatal(err)
			}
			defer filler.Close()
			listen := startLoop(t, backend.Addr(), loopOptions{kernel: testKernelRelay(t)})

			c, err := net.DialTimeout("tcp4", listen.String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			request := []byte("request")
			if _, err := c.Write(request); err != nil {
				t.Fatal(err)
			}
			if fin {
				_ = c.(*net.TCPConn).CloseWrite()
			}
			time.Sleep(200 * time.Millisecond) // the proxy's SYN was dropped by now

			first, err := backend.Accept() // the filler: frees the queue for the retransmitted SYN
			if err != nil {
				t.Fatal(err)
			}
			first.Close()
			b, err := backend.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			_ = b.SetDeadline(time.Now().Add(20 * time.Second))
			got := make([]byte, len(request))
			if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, request) {
				t.Fatalf("backend read %q, %v; want %q", got, err, request)
			}
			if _, err := b.Write([]byte("answer")); err != nil {
				t.Fatal(err)
			}
			b.Close()
			answer, err := io.ReadAll(c)
			if err != nil || string(answer) != "answer" {
				t.Fatalf("client read %q, %v; want the answer, then EOF", answer, err)
			}
		})
	}
}

// listenBacklogZero listens with a backlog of 0: one connection fills the
// accept queue, and the kernel drops the SYNs after it.
func listenBacklogZero(t *testing.T) net.Listener {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "backend")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestReadConfigNamesWhatIsWrong(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"frontends: []\n", "needs a frontend"},
		{"frontends: [{listen: nowhere}]\npools: [{backends: [{address: 127.0.0.1:1}]}]\nadmin: {listen: 127.0.0.1:2}\n", "frontend listen"},
		{"frontends: [{listen: '[::1]:3'}]\npools: [{backends: [{address: 127.0.0.1:1}]}]\nadmin: {listen: 127.0.0.1:2}\n", "IPv4"},
	} {
		p := filepath.Join(t.TempDir(), "vipd.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readConfig(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("readConfig(%q) = %v, want an error naming %q", tc.yaml, err, tc.want)
		}
	}
}

// startLoop runs a loop relaying to backend until the test ends, and
// returns the address it listens on.
func startLoop(t *testing.T, backend net.Addr, opts loopOptions) netip.AddrPort {
	t.Helper()
	listen := freeAddr(t)
	l, err := newLoop(listen, netip.MustParseAddrPort(backend.String()), opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.run() }()
	t.Cleanup(func() {
		l.stop()
		if err := <-done; err != errStopped {
			t.Errorf("run: %v, want errStopped", err)
		}
	})
	return listen
}

// testKernelRelay loads the sockmap relay for one test.
func testKernelRelay(t *testing.T) *kernelRelay {
	t.Helper()
	testenv.NeedRoot(t, "loads a BPF program")
	k, err := newKernelRelay()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.close() })
	return k
}

func freeAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String())
}
