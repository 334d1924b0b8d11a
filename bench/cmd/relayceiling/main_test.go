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
)

// The relay must be right for its figures to mean anything: bytes both
// ways, a message larger than its buffer and than a socket's queue (a
// write that stops half way), and each side's end passed on while the
// other way still runs.
func TestRelayPassesBytesAndHalfCloses(t *testing.T) {
	for _, raw := range []bool{false, true} {
		t.Run(map[bool]string{false: "syscall", true: "raw"}[raw], func(t *testing.T) {
			backend, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer backend.Close()
			listen := freeAddr(t)
			l, err := newLoop(listen, netip.MustParseAddrPort(backend.Addr().String()), raw)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- l.run() }()
			defer func() {
				l.stop()
				if err := <-done; err != errStopped {
					t.Errorf("run: %v, want errStopped", err)
				}
			}()

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

func freeAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String())
}
