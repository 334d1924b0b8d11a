package balancer

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// copyBufferSize is the pooled user-space buffer of one read. A read that
// fills it says the direction is streaming, and splice takes over.
const copyBufferSize = 64 << 10

// spliceChunk is the most one splice(2) call moves into a pipe.
const spliceChunk = 1 << 20

// pipeSize is the capacity asked of each pooled pipe (F_SETPIPE_SZ), as Go's
// own splice does: fewer, larger moves while streaming. The pipe exists
// only while some direction streams, so idle connections pay nothing.
const pipeSize = 1 << 20

// mechanism is how a direction moves its next bytes.
type mechanism int

const (
	viaBuffer mechanism = iota // read into a pooled buffer, write it out
	viaSplice                  // socket → pooled pipe → socket in the kernel
)

// nextMechanism is the one place the copy strategy is chosen, from how much
// the last read returned or the first splice after a wait moved: filling
// the buffer says more is queued, so splice, which moves it without copying
// it through user space; less is a message, which one read and one write
// move with fewer system calls than splice's three. docs/benchmarks.md measures both and this mix.
func nextMechanism(lastRead int) mechanism {
	if lastRead >= copyBufferSize {
		return viaSplice
	}
	return viaBuffer
}

// keptBuffers bounds the buffers bufferPool keeps between uses.
const keptBuffers = 32

// bufferPool lends copy buffers. Unlike a sync.Pool it keeps them across
// GCs: a sync.Pool emptied at every cycle made short connections allocate
// and zero a fresh buffer each, which raised the GC rate that empties it.
// A buffer is out only between a read and its write, so the pool holds
// about as many as directions run at once, and never more than keptBuffers.
var bufferPool freeList

type freeList struct {
	mu   sync.Mutex
	free []*[]byte // guarded by mu
}

// Get takes a buffer from the list, or makes one.
func (l *freeList) Get() *[]byte {
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free = l.free[:n-1]
		l.mu.Unlock()
		return b
	}
	l.mu.Unlock()
	b := make([]byte, copyBufferSize)
	return &b
}

// Put gives b back; past keptBuffers it is left to the GC.
func (l *freeList) Put(b *[]byte) {
	l.mu.Lock()
	if len(l.free) < keptBuffers {
		l.free = append(l.free, b)
	}
	l.mu.Unlock()
}

// splicePipe is a pipe taken from pipePool while a direction streams.
type splicePipe struct {
	r, w     int
	buffered int // bytes in the pipe
	cleanup  runtime.Cleanup
}

// pipePool lends pipes to streaming directions. A pipe the pool drops at a
// GC is closed by its cleanup, so an idle proxy holds none for long.
var pipePool = sync.Pool{New: func() any {
	p, err := newSplicePipe()
	if err != nil {
		return err
	}
	return p
}}

func newSplicePipe() (*splicePipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("splice pipe: %w", err)
	}
	// A smaller pipe (the limit of an unprivileged user) still works.
	_, _ = unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize)
	p := &splicePipe{r: fds[0], w: fds[1]}
	p.cleanup = runtime.AddCleanup(p, closePipe, fds)
	return p, nil
}

// discard closes a pipe that still holds bytes of a failed write, of no use
// to anyone.
func (p *splicePipe) discard() {
	p.cleanup.Stop()
	closePipe([2]int{p.r, p.w})
}

func closePipe(fds [2]int) {
	_ = unix.Close(fds[0])
	_ = unix.Close(fds[1])
}

// getPipe takes a pipe from the pool, or says why none could be made.
func getPipe() (*splicePipe, error) {
	switch v := pipePool.Get().(type) {
	case *splicePipe:
		return v, nil
	case error:
		return nil, v
	}
	return nil, errors.New("splice pipe: pool holds neither a pipe nor an error")
}

// direction is one way of a relay: from src's socket to dst's. It holds no
// buffer and no pipe while it waits: it waits in the runtime poller until
// src is readable, then takes a pooled buffer for what is there, or a
// pooled pipe for as long as src streams. Once its connection has been
// idle for parkAfter it holds no goroutine either (parker).
type direction struct {
	src, dst       *net.TCPConn
	srcRaw, dstRaw syscall.RawConn

	// The last read's outcome, set by readFn.
	buf  *[]byte
	n    int
	rerr error
	// readFn and spliceFn are built once, so a wait allocates nothing.
	readFn, spliceFn, drainFn func(fd uintptr) bool
	pipe                      *splicePipe // while streaming
	moved                     int         // the last splice's count
	serr                      error       // the last splice's error
	perr                      error       // no pipe could be had
	waited                    bool        // the last splice-in waited in the poller first
	yield                     func()      // runtime.Gosched; tests count calls

	parkFields // while its connection is idle (park.go)
}

func newDirection(dst, src *net.TCPConn) (*direction, error) {
	d := &direction{src: src, dst: dst}
	var err error
	if d.srcRaw, err = src.SyscallConn(); err != nil {
		return nil, fmt.Errorf("copy from %s: %w", src.RemoteAddr(), err)
	}
	if d.dstRaw, err = dst.SyscallConn(); err != nil {
		return nil, fmt.Errorf("copy to %s: %w", dst.RemoteAddr(), err)
	}
	d.readFn = d.read
	d.spliceFn = d.spliceIn
	d.drainFn = d.spliceOut
	d.yield = runtime.Gosched
	return d, nil
}

// read is called by the poller when src may be readable: it reads into a
// pooled buffer and keeps it only when bytes arrived. The buffer goes back
// on EAGAIN (wait), and on EOF or an error too: every connection ends with
// an EOF read in each direction, and a buffer lost there is a 64 KiB
// allocation per direction that the GC has to collect.
func (d *direction) read(fd uintptr) bool {
	b := bufferPool.Get()
	for {
		d.n, d.rerr = unix.Read(int(fd), *b)
		if d.rerr != unix.EINTR {
			break
		}
	}
	if d.n <= 0 || d.rerr != nil {
		bufferPool.Put(b)
		return d.rerr != unix.EAGAIN
	}
	d.buf = b
	return true
}

// spliceIn moves what src has queued into the pipe, taking a pooled pipe
// first if the direction holds none. On EAGAIN the pipe, empty because
// every splice-in follows a full drain, goes back to the pool and the
// direction waits in the poller holding nothing; the wake splices again
// without a detour through the buffer.
func (d *direction) spliceIn(fd uintptr) bool {
	if d.pipe == nil {
		if d.pipe, d.perr = getPipe(); d.perr != nil {
			return true
		}
	}
	for {
		n, err := unix.Splice(int(fd), nil, d.pipe.w, nil, spliceChunk, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			pipePool.Put(d.pipe)
			d.pipe = nil
			d.waited = true
			return false
		}
		d.moved, d.serr = int(n), err
		return true
	}
}

// spliceOut moves the pipe's bytes to dst, waiting while dst is full.
func (d *direction) spliceOut(fd uintptr) bool {
	for d.pipe.buffered > 0 {
		n, err := unix.Splice(d.pipe.r, nil, int(fd), nil, d.pipe.buffered, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return false
		case err != nil:
			d.serr = err
			return true
		default:
			d.pipe.buffered -= int(n)
		}
	}
	return true
}

// copy moves bytes from src to dst until EOF (nil error), an error, or src's
// read deadline (os.ErrDeadlineExceeded), and returns how many it moved.
func (d *direction) copy() (int64, error) {
	var total int64
	for {
		d.buf = nil
		if err := d.srcRaw.Read(d.readFn); err != nil {
			return total, err
		}
		n, rerr := d.n, d.rerr
		if rerr != nil {
			return total, os.NewSyscallError("read", rerr)
		}
		if n == 0 {
			return total, nil // EOF
		}
		_, werr := d.dst.Write((*d.buf)[:n])
		bufferPool.Put(d.buf)
		d.buf = nil
		if werr != nil {
			return total, werr
		}
		total += int64(n)
		if nextMechanism(n) == viaSplice {
			m, eof, err := d.stream()
			total += m
			if err != nil || eof {
				return total, err
			}
		}
	}
}

// stream splices src to dst through pooled pipes while src streams: a
// wait in between holds no pipe, and a wake that finds less queued than a
// buffer holds (nextMechanism) hands the direction back to the buffer.
// eof reports that src ended.
func (d *direction) stream() (moved int64, eof bool, err error) {
	defer d.dropPipe()
	for {
		d.serr, d.perr, d.waited = nil, nil, false
		if err := d.srcRaw.Read(d.spliceFn); err != nil {
			return moved, false, err
		}
		switch {
		case d.perr != nil:
			return moved, false, d.perr
		case d.serr != nil:
			return moved, false, os.NewSyscallError("splice", d.serr)
		case d.moved == 0:
			return moved, true, nil
		}
		d.pipe.buffered = d.moved
		err := d.dstRaw.Write(d.drainFn)
		moved += int64(d.moved - d.pipe.buffered)
		if err != nil {
			return moved, false, err
		}
		if d.serr != nil {
			return moved, false, os.NewSyscallError("splice", d.serr)
		}
		if d.waited && nextMechanism(d.moved) == viaBuffer {
			return moved, false, nil
		}
		if !d.waited {
			// No wait in the poller this round, so no point where the
			// scheduler could run anything else on this P: a stream that
			// never runs dry would hold it until the runtime preempts it
			// (10 ms), and Raft's heartbeats and lease checks queue
			// behind it. Yield once per round instead.
			d.yield()
		}
	}
}

// dropPipe gives the direction's pipe back, or closes it if bytes of a
// failed write are still in it.
func (d *direction) dropPipe() {
	switch {
	case d.pipe == nil:
	case d.pipe.buffered == 0:
		pipePool.Put(d.pipe)
	default:
		d.pipe.discard()
	}
	d.pipe = nil
}
