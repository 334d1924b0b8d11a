//go:build linux

// Command relayceiling is a measuring stick, not a proxy to run: the least
// a TCP relay with an epoll loop of its own does, written in Go, so that
// `vipbench -compare ceiling=PATH` shows how far that design could take
// vipd's data plane against HAProxy before the balancer is rebuilt on it
// (issue 12). It reads the vipbench configuration of one frontend and one
// backend, answers /readyz on the admin address, and relays: one loop per
// core on a thread of its own, each with its own SO_REUSEPORT listener and
// epoll set, edge-triggered, raw accept4 and connect, one read and one write
// per message from the loop's one buffer, no goroutine per connection.
//
// With -relay sockmap the loop moves no bytes itself: it links each
// connected pair into a BPF sockhash whose verdict program redirects every
// segment to the peer inside the kernel (sockmap.go), and wakes only to
// connect, pass a FIN on and close.
//
// It leaves out everything a product needs around the copy: health, retry,
// limits, idle timeout, PROXY headers, counters, drain. What it measures is
// the cost of the loop itself, which is a ceiling for a full version.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"
)

// defaultWait is -wait's default. vipbench starts every build it compares
// with the same arguments, so the Makefile builds one binary per mode
// (-ldflags -X main.defaultWait=raw).
var defaultWait, defaultRelay = "syscall", "user"

func main() {
	cfgPath := flag.String("config", "", "vipbench's vipd.yaml: the first frontend's listen, the first pool's first backend, admin.listen")
	wait := flag.String("wait", defaultWait, "how a loop waits in epoll: syscall (the runtime's system call, which lets the scheduler take its P) or raw (a raw system call: the loop keeps its P, and GOMAXPROCS grows by the loops so the rest of the program keeps as many)")
	relay := flag.String("relay", defaultRelay, "who moves the bytes: user (the loop reads and writes them) or sockmap (a BPF verdict redirects them inside the kernel)")
	flag.Parse()
	if *wait != "syscall" && *wait != "raw" {
		fmt.Fprintf(os.Stderr, "relayceiling: -wait %q: want syscall or raw\n", *wait)
		os.Exit(2)
	}
	if *relay != "user" && *relay != "sockmap" {
		fmt.Fprintf(os.Stderr, "relayceiling: -relay %q: want user or sockmap\n", *relay)
		os.Exit(2)
	}
	cfg, err := readConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relayceiling:", err)
		os.Exit(2)
	}
	opts := loopOptions{raw: *wait == "raw"}
	if *relay == "sockmap" {
		if opts.kernel, err = newKernelRelay(); err != nil {
			fmt.Fprintln(os.Stderr, "relayceiling:", err)
			os.Exit(1)
		}
	}
	loops := runtime.GOMAXPROCS(0)
	if opts.raw {
		runtime.GOMAXPROCS(2 * loops)
	}
	errc := make(chan error, loops+1)
	for range loops {
		l, err := newLoop(cfg.listen, cfg.backend, opts)
		if err != nil {
			fmt.Fprintln(os.Stderr, "relayceiling:", err)
			os.Exit(1)
		}
		go func() { errc <- l.run() }()
	}
	go func() {
		mux := http.NewServeMux()
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		errc <- http.ListenAndServe(cfg.admin, mux)
	}()
	fmt.Fprintln(os.Stderr, "relayceiling:", <-errc)
	os.Exit(1)
}

type config struct {
	listen, backend netip.AddrPort
	admin           string
}

func readConfig(path string) (config, error) {
	var raw struct {
		Frontends []struct{ Listen string }
		Pools     []struct {
			Backends []struct{ Address string }
		}
		Admin struct{ Listen string }
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return config{}, err
	}
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return config{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(raw.Frontends) == 0 || len(raw.Pools) == 0 || len(raw.Pools[0].Backends) == 0 {
		return config{}, fmt.Errorf("%s: needs a frontend and a pool with a backend", path)
	}
	var c config
	if c.listen, err = netip.ParseAddrPort(raw.Frontends[0].Listen); err != nil {
		return config{}, fmt.Errorf("%s: frontend listen: %w", path, err)
	}
	if c.backend, err = netip.ParseAddrPort(raw.Pools[0].Backends[0].Address); err != nil {
		return config{}, fmt.Errorf("%s: backend address: %w", path, err)
	}
	if !c.listen.Addr().Is4() || !c.backend.Addr().Is4() {
		return config{}, fmt.Errorf("%s: IPv4 addresses only", path)
	}
	c.admin = raw.Admin.Listen
	if _, _, err := net.SplitHostPort(c.admin); err != nil {
		return config{}, fmt.Errorf("%s: admin listen: %w", path, err)
	}
	return c, nil
}

// side is one socket of a relayed pair.
type side struct {
	fd      int
	peer    *side
	pending []byte // read from peer, not yet written to fd
	eof     bool   // fd has read to EOF
	shut    bool   // fd's write side is shut (peer's EOF passed on)
	// sockmap only:
	dialing bool   // the backend side, until its connect completes and the pair is linked
	copied  bool   // the pair could not be linked: the loop copies it
	finSeen bool   // epoll reported the peer's FIN (or a hang-up)
	sent    uint64 // bytes in fd's send stream when the pair was linked
}

// loopOptions choose how a loop waits and who moves the bytes.
type loopOptions struct {
	raw    bool         // wait in a raw system call, holding the P
	kernel *kernelRelay // nil: the loop copies; else linked pairs are relayed in the kernel
}

type loop struct {
	epfd, lfd int
	stopfd    int // eventfd: stop's signal
	backend   unix.SockaddrInet4
	sides     map[int]*side
	buf       []byte
	loopOptions
	flushing []*side // sockmap: sides whose EOF waits for their bytes to reach the peer's send queue
}

func newLoop(listen, backend netip.AddrPort, opts loopOptions) (*loop, error) {
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen socket: %w", err)
	}
	// Accepted sockets inherit TCP_NODELAY from the listener on Linux.
	for _, o := range [][2]int{{unix.SOL_SOCKET, unix.SO_REUSEADDR}, {unix.SOL_SOCKET, unix.SO_REUSEPORT}, {unix.IPPROTO_TCP, unix.TCP_NODELAY}} {
		if err := unix.SetsockoptInt(lfd, o[0], o[1], 1); err != nil {
			return nil, fmt.Errorf("listen socket option %d: %w", o[1], err)
		}
	}
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: listen.Addr().As4(), Port: int(listen.Port())}); err != nil {
		return nil, fmt.Errorf("bind %s: %w", listen, err)
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		return nil, fmt.Errorf("listen %s: %w", listen, err)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return nil, fmt.Errorf("epoll add listener: %w", err)
	}
	stopfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, stopfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(stopfd)}); err != nil {
		return nil, fmt.Errorf("epoll add eventfd: %w", err)
	}
	return &loop{epfd: epfd, lfd: lfd, stopfd: stopfd, backend: unix.SockaddrInet4{Addr: backend.Addr().As4(), Port: int(backend.Port())},
		sides: map[int]*side{}, buf: make([]byte, 64<<10), loopOptions: opts}, nil
}

// run serves the loop's sockets on a thread of its own until stop, and
// then closes them all.
func (l *loop) run() error {
	runtime.LockOSThread()
	defer l.closeAll()
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := l.wait(events)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll wait: %w", err)
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == l.stopfd {
				return errStopped
			}
			if fd == l.lfd {
				l.accept()
				continue
			}
			s := l.sides[fd]
			if s == nil {
				continue // closed by an earlier event of this batch
			}
			if l.kernel != nil && !s.copied {
				l.kernelEvent(s, ev.Events)
				continue
			}
			if ev.Events&(unix.EPOLLOUT|unix.EPOLLERR) != 0 && len(s.pending) > 0 {
				if !l.flush(s) {
					continue
				}
				if !l.relay(s.peer, true) { // the peer stopped reading while s was full
					continue
				}
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				l.relay(s, ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
			}
		}
		if l.kernel != nil {
			l.retryFlushing()
		}
	}
}

// wait is epoll_wait. Raw (with read and write), the runtime does not see the thread leave:
// its P is not handed to another thread while it sleeps, and no thread is
// woken to take it; the runtime's preemption signal (every 10 ms, and at a
// collection's stop) ends the wait with EINTR, and the timeout bounds a
// signal that came just before it. While a FIN waits for its bytes to be
// flushed (sockmap), the wait is short so that it is passed on soon after.
func (l *loop) wait(events []unix.EpollEvent) (int, error) {
	timeout := -1
	switch {
	case len(l.flushing) > 0:
		timeout = 1
	case l.raw:
		timeout = 10
	}
	if !l.raw {
		return unix.EpollWait(l.epfd, events, timeout)
	}
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(timeout), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// read and write are the per-message calls; raw, like wait, they skip the
// runtime's system-call bookkeeping (non-blocking sockets: they never wait).
func (l *loop) read(fd int, b []byte) (int, error) {
	if !l.raw {
		return unix.Read(fd, b)
	}
	return rawIO(unix.SYS_READ, fd, b)
}

func (l *loop) write(fd int, b []byte) (int, error) {
	if !l.raw {
		return unix.Write(fd, b)
	}
	return rawIO(unix.SYS_WRITE, fd, b)
}

func rawIO(trap uintptr, fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func (l *loop) accept() {
	for range 64 {
		cfd, _, err := unix.Accept4(l.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN, or EMFILE: the prototype just waits for the next edge
		}
		bfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			unix.Close(cfd)
			continue
		}
		_ = unix.SetsockoptInt(bfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if err := unix.Connect(bfd, &l.backend); err != nil && err != unix.EINPROGRESS {
			unix.Close(cfd)
			unix.Close(bfd)
			continue
		}
		c, b := &side{fd: cfd}, &side{fd: bfd, dialing: l.kernel != nil}
		c.peer, b.peer = b, c
		l.sides[cfd], l.sides[bfd] = c, b
		// Both directions registered once, edge-triggered: no epoll_ctl
		// after this, the close takes the sockets out of the set.
		cev, bev := unix.EpollEvent{Events: copyEvents, Fd: int32(cfd)}, unix.EpollEvent{Events: copyEvents, Fd: int32(bfd)}
		if l.kernel != nil {
			cev.Events, bev.Events = kernelEvents, kernelEvents|unix.EPOLLOUT
		}
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, cfd, &cev)
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, bfd, &bev)
	}
}

// The epoll interests: a pair the loop copies wants readable and writable
// edges; a linked pair only its FINs (and the backend's connect). The
// kernel wakes a socket's readers after each redirected segment, so a
// linked socket registered for EPOLLIN would wake the loop per message.
const (
	copyEvents   = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	kernelEvents = unix.EPOLLRDHUP | unix.EPOLLET
)

// relay moves what src has to its peer until src is drained or the peer is
// full. untilEOF: the event said a FIN or error is queued, so src is read
// to the end; otherwise a short read means drained. It reports whether
// the pair is still open.
func (l *loop) relay(src *side, untilEOF bool) bool {
	dst := src.peer
	for !src.eof && len(dst.pending) == 0 {
		n, err := l.read(src.fd, l.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return true
		case err != nil:
			l.close(src)
			return false
		case n == 0:
			src.eof = true
			return l.passEOF(dst)
		}
		w, err := l.write(dst.fd, l.buf[:n])
		if err != nil && err != unix.EAGAIN {
			l.close(src)
			return false
		}
		w = max(w, 0)
		if w < n {
			dst.pending = append(dst.pending[:0], l.buf[w:n]...)
			return true
		}
		if n < len(l.buf) && !untilEOF {
			return true
		}
	}
	if src.eof && len(dst.pending) == 0 {
		return l.passEOF(dst)
	}
	return true
}

// flush writes dst's pending bytes; false: the pair closed.
func (l *loop) flush(dst *side) bool {
	for len(dst.pending) > 0 {
		w, err := l.write(dst.fd, dst.pending)
		if err == unix.EAGAIN {
			return true
		}
		if err != nil {
			l.close(dst)
			return false
		}
		dst.pending = dst.pending[w:]
	}
	dst.pending = nil
	if dst.peer.eof {
		return l.passEOF(dst)
	}
	return true
}

// passEOF half-closes dst once its source ended, and closes the pair when
// both ways have ended.
func (l *loop) passEOF(dst *side) bool {
	if !dst.shut {
		dst.shut = true
		if dst.eof { // both ways done: the close sends the FIN
			l.close(dst)
			return false
		}
		if err := unix.Shutdown(dst.fd, unix.SHUT_WR); err != nil && !errors.Is(err, unix.ENOTCONN) {
			l.close(dst)
			return false
		}
	}
	return true
}

var errStopped = errors.New("stopped")

// stop ends run.
func (l *loop) stop() {
	one := [8]byte{1}
	_, _ = unix.Write(l.stopfd, one[:])
}

func (l *loop) closeAll() {
	for _, s := range l.sides {
		unix.Close(s.fd)
	}
	for _, fd := range []int{l.lfd, l.stopfd, l.epfd} {
		unix.Close(fd)
	}
}

func (l *loop) close(s *side) {
	for _, x := range []*side{s, s.peer} {
		delete(l.sides, x.fd)
		unix.Close(x.fd)
	}
}

// kernelEvent is run's work for a sockmap loop: link a pair once its
// backend is connected, and pass each side's FIN on once its bytes are out.
func (l *loop) kernelEvent(s *side, events uint32) {
	if events&unix.EPOLLERR != 0 {
		l.close(s)
		return
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		s.finSeen = true
	}
	if s.dialing {
		if events&unix.EPOLLOUT == 0 {
			return
		}
		s.dialing = false
		if err := l.kernel.link(s.peer, s); err != nil {
			// The client's FIN came before the backend answered, and
			// the hash takes only established sockets: this pair is
			// copied by the loop.
			s.copied, s.peer.copied = true, true
			for _, x := range []*side{s, s.peer} {
				_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, x.fd, &unix.EpollEvent{Events: copyEvents, Fd: int32(x.fd)})
			}
			if l.relay(s.peer, true) {
				l.relay(s, true)
			}
			return
		}
		l.kernelEOF(s.peer)
	}
	if s.peer.dialing {
		return // the client's FIN before the backend answered: noted, passed on once linked
	}
	l.kernelEOF(s)
}

// kernelEOF passes src's FIN on to its peer once the kernel has moved all
// of src's bytes, or puts src on the list retried after each wait.
func (l *loop) kernelEOF(src *side) {
	dst := src.peer
	if !src.finSeen || dst.shut {
		return
	}
	done, err := flushed(src, dst)
	switch {
	case err != nil:
		l.close(src)
	case !done:
		if !slices.Contains(l.flushing, src) {
			l.flushing = append(l.flushing, src)
		}
	case src.shut: // the other way ended before: close sends the FIN
		dst.shut = true
		l.close(src)
	default:
		dst.shut = true
		if err := unix.Shutdown(dst.fd, unix.SHUT_WR); err != nil && !errors.Is(err, unix.ENOTCONN) {
			l.close(dst)
		}
	}
}

func (l *loop) retryFlushing() {
	waiting := l.flushing
	l.flushing = nil
	for _, s := range waiting {
		if l.sides[s.fd] == s { // not closed since
			l.kernelEOF(s)
		}
	}
}
