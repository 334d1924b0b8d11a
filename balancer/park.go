package balancer

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// parkAfter is how long a connection must have moved no data before its
// directions park: the connection then holds no goroutine until its next
// byte. Shorter waits stay in the runtime poller, whose wake costs no
// system call and no new goroutine, so request/response traffic never
// parks.
const parkAfter = time.Second

// parker waits on behalf of idle directions: each parked direction's
// source socket is in its epoll set (one-shot), and its goroutine has
// ended. When the socket turns readable (or is closed, or the idle timeout
// runs out) the parker starts a goroutine that carries on the copy. Its own
// goroutine starts with the first park and ends with stop.
type parker struct {
	once     sync.Once
	stopOnce sync.Once
	err      error // why the parker could not start; directions then wait in the poller
	epfd     int
	wake     int // eventfd: stop's signal to the loop
	done     chan struct{}
	mu       sync.Mutex
	byKey    map[uint64]*direction // guarded by mu: directions that have parked and not ended
	next     uint64                // guarded by mu: the last key handed out
	release  memoryRelease
}

// memoryRelease hands the memory of ended goroutines back to the operating
// system after a wave of parks. A parked direction's goroutine ends, but
// the runtime frees a dead goroutine's stack only in a garbage collection,
// and returns freed pages to the system only after one; with connections
// open and no traffic, no collection comes for minutes (the runtime forces
// one every two), so the stacks of thousands of connections that went idle
// together would stay resident. One forced collection once the wave is over
// gives them back. At most one per releaseEvery, so connections that
// park and wake all the time cost a collection now and then, not per park.
type memoryRelease struct {
	mu      sync.Mutex
	parks   int         // guarded by mu: parks since the last release
	seen    int         // guarded by mu: parks when the timer was last armed
	timer   *time.Timer // guarded by mu: armed while a wave is under way
	last    time.Time   // guarded by mu: the last release
	stopped bool        // guarded by mu: no more releases
	free    func()      // debug.FreeOSMemory; tests count calls
}

const (
	releaseWave  = 1024             // parks that make a wave
	releaseEvery = 10 * time.Second // the least time between two releases
)

// parked counts one park and arms the release once a wave has begun.
func (r *memoryRelease) parked() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.parks++
	if r.parks < releaseWave || r.timer != nil || r.stopped {
		return
	}
	r.seen = r.parks
	wait := parkAfter
	if next := time.Until(r.last.Add(releaseEvery)); next > wait {
		wait = next
	}
	r.timer = time.AfterFunc(wait, r.fire)
}

// fire releases the memory once parks have stopped coming: while they still
// come, the wave is not over and it looks again a parkAfter later.
func (r *memoryRelease) fire() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	if r.parks > r.seen {
		r.seen = r.parks
		r.timer.Reset(parkAfter)
		r.mu.Unlock()
		return
	}
	r.parks, r.timer, r.last = 0, nil, time.Now()
	free := r.free
	r.mu.Unlock()
	if free == nil {
		free = debug.FreeOSMemory
	}
	free()
}

func (r *memoryRelease) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if r.timer != nil {
		r.timer.Stop()
	}
}

// Why a parked direction carries on.
type resumeReason int32

const (
	resumeReadable resumeReason = iota + 1 // its source has bytes, EOF or an error
	resumeTimer                            // its idle timeout ran out
	resumeClosed                           // its connection was closed
)

// Park states of a direction.
const (
	running int32 = iota
	parked
)

func (p *parker) start() error {
	p.once.Do(func() {
		var err error
		if p.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
			p.err = fmt.Errorf("park: epoll: %w", err)
			return
		}
		if p.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			_ = unix.Close(p.epfd)
			p.err = fmt.Errorf("park: eventfd: %w", err)
			return
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN} // key 0: the wake-up
		if err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, p.wake, &ev); err != nil {
			_ = unix.Close(p.epfd)
			_ = unix.Close(p.wake)
			p.err = fmt.Errorf("park: epoll add: %w", err)
			return
		}
		p.byKey = map[uint64]*direction{}
		p.done = make(chan struct{})
		go p.loop()
	})
	return p.err
}

// loop hands each readable socket's direction a goroutine, until stop.
func (p *parker) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return // EBADF after stop; nothing else is expected
		}
		for i := range events[:n] {
			key := eventKey(events[i])
			if key == 0 {
				return
			}
			p.mu.Lock()
			d := p.byKey[key]
			p.mu.Unlock()
			if d != nil {
				d.resume(resumeReadable)
			}
		}
	}
}

// stop ends the loop and closes the epoll set. Every direction must have
// ended: a parked one would never be resumed.
func (p *parker) stop() {
	p.once.Do(func() { p.err = errors.New("park: stopped") }) // no start after this
	p.release.stop()
	p.stopOnce.Do(func() {
		if p.done == nil {
			return
		}
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(p.wake, one[:])
		<-p.done
		_ = unix.Close(p.epfd)
		_ = unix.Close(p.wake)
	})
}

// park puts d's source in the epoll set and reports true when d is parked:
// its goroutine must return, and resume will call d.carryOn on a new one.
// With timeout > 0, d also resumes after that long. False: d could not
// park (its socket is closed, or the parker could not start) and its
// goroutine carries on.
func (p *parker) park(d *direction, timeout time.Duration) bool {
	if p.start() != nil {
		return false
	}
	d.pmu.Lock()
	defer d.pmu.Unlock()
	if d.key == 0 {
		p.mu.Lock()
		p.next++
		d.key = p.next
		p.byKey[d.key] = d
		p.mu.Unlock()
	}
	// Parked before it is in the set: a wake from the set, the timer or a
	// close always finds it parked. The goroutine it starts waits for pmu,
	// so it sees what this one set.
	d.parkState.Store(parked)
	if timeout > 0 {
		d.timer = resetTimer(d.timer, timeout, func() { d.resume(resumeTimer) })
	}
	op := unix.EPOLL_CTL_MOD
	if !d.registered {
		op = unix.EPOLL_CTL_ADD
	}
	var cerr error
	// Inside Control the descriptor cannot be closed and reused, so the
	// set never holds another socket's number.
	err := d.srcRaw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(d.key)), Pad: int32(d.key >> 32)}
		cerr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
	})
	if err == nil && cerr == nil {
		d.registered = true
		p.release.parked()
		return true
	}
	// Not in the set: carry on here unless something resumed d meanwhile.
	if d.parkState.CompareAndSwap(parked, running) {
		stopTimer(d.timer)
		return false
	}
	return true
}

// forget drops an ended direction.
func (p *parker) forget(d *direction) {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	if d.key == 0 {
		return
	}
	stopTimer(d.timer)
	if d.registered {
		_ = d.srcRaw.Control(func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	}
	p.mu.Lock()
	delete(p.byKey, d.key)
	p.mu.Unlock()
}

// resume hands a parked d a goroutine; once per park, whoever comes first
// (readable socket, idle timer, close).
func (d *direction) resume(why resumeReason) {
	if !d.parkState.CompareAndSwap(parked, running) {
		return
	}
	go func() {
		d.pmu.Lock() // until park has returned
		if why != resumeTimer {
			stopTimer(d.timer)
		}
		d.pmu.Unlock()
		d.carryOn(why)
	}()
}

// eventKey is the key park stored in an event's data (Fd and Pad are its
// two halves; the kernel hands them back as they were).
func eventKey(ev unix.EpollEvent) uint64 { return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32 }

func resetTimer(t *time.Timer, d time.Duration, f func()) *time.Timer {
	if t == nil {
		return time.AfterFunc(d, f)
	}
	t.Reset(d)
	return t
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// parkFields are what a direction keeps for parking.
type parkFields struct {
	pmu        sync.Mutex   // held by park, forget and a resumed goroutine's start
	key        uint64       // its entry in the parker; 0 before its first park
	registered bool         // its source is in the epoll set (one-shot, maybe disarmed)
	parkState  atomic.Int32 // running or parked
	timer      *time.Timer  // its idle timeout while parked
	carryOn    func(resumeReason)
}
