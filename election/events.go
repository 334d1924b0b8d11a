package election

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// Event is a change of this node's leadership. A gain is sent only after the
// leader confirmed its term (Barrier); a loss is sent as soon as it is seen.
type Event struct {
	Leader bool
	Term   uint64
	// Seq numbers this node's events from 1, in the order emitted; a
	// coalesced event carries the later one's. A consumer that reports the
	// Seq it has acted on lets a transfer wait for exactly its own loss
	// (Options.Released), not an older one with a gain still queued behind.
	Seq uint64
}

// eventQueue hands events to a slow consumer without ever blocking the
// producer. Undelivered events coalesce so the queue holds at most a loss and
// a gain, in order: a loss is never hidden behind a later gain.
type eventQueue struct {
	out     chan Event
	wake    chan struct{} // buffered 1: pending changed
	stop    chan struct{} // closed by close(): flush and end
	done    chan struct{} // closed when the dispatcher has closed out
	log     *zap.Logger
	running bool // start was called; start and close are called in turn, never at once

	mu      sync.Mutex
	pending []Event
}

// flushTimeout bounds how long Shutdown waits for a consumer to take the last events.
const flushTimeout = time.Second

func newEventQueue(log *zap.Logger) *eventQueue {
	q := &eventQueue{
		out:  make(chan Event, 2),
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
		log:  log,
	}
	return q
}

// start runs the dispatcher. Call at most once, before close.
func (q *eventQueue) start() {
	q.running = true
	go q.run()
}

// push queues e. With pending [a] and e of the same kind, e replaces a. With
// pending [a, b] and e (so e is of a's kind), b was never seen, and a's
// consumer-visible effect is what e says: pending becomes [e].
func (q *eventQueue) push(e Event) {
	q.mu.Lock()
	switch n := len(q.pending); {
	case n == 0:
		q.pending = append(q.pending, e)
	case q.pending[n-1].Leader == e.Leader:
		q.pending[n-1] = e
	case n == 1:
		q.pending = append(q.pending, e)
	default:
		q.pending = append(q.pending[:0], e)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) pop() (Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return Event{}, false
	}
	e := q.pending[0]
	q.pending = q.pending[1:]
	return e, true
}

func (q *eventQueue) run() {
	defer close(q.done)
	defer close(q.out)
	for {
		e, ok := q.pop()
		if !ok {
			select {
			case <-q.wake:
				continue
			case <-q.stop:
				if e, ok := q.pop(); ok {
					q.flush(e)
				}
				return
			}
		}
		select {
		case q.out <- e:
		case <-q.stop:
			q.flush(e)
			return
		}
	}
}

// flush gives a consumer a last chance to read e and what is pending.
func (q *eventQueue) flush(e Event) {
	t := time.NewTimer(flushTimeout)
	defer t.Stop()
	for {
		select {
		case q.out <- e:
		case <-t.C:
			q.log.Warn("events not read before shutdown; dropped", zap.Bool("leader", e.Leader), zap.Uint64("term", e.Term))
			return
		}
		var ok bool
		if e, ok = q.pop(); !ok {
			return
		}
	}
}

// close flushes what is pending (bounded) and closes the channel. Call once,
// after the last push.
func (q *eventQueue) close() {
	if !q.running {
		close(q.out)
		return
	}
	close(q.stop)
	<-q.done
}
