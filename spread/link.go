package spread

import (
	"context"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/vipd/vipd/lease"
)

// link is the holder's connection to one leader: it dials (and redials)
// through the election, writes what the holder queues and hands what the
// leader answers to the holder's loop. close ends it without waiting, and
// done says when its goroutines have ended: a dial to a dead leader can
// take its whole timeout, and the holder loop must not wait for it, or a
// lease would outlive its end on this node while the new leader, rightly,
// gives the VIP away.
type link struct {
	leader string
	out    chan outgoing
	cancel context.CancelFunc
	done   chan struct{}
}

type outgoing struct {
	msg  lease.Message
	sent chan struct{} // closed once written (or given up); nil: nobody waits
}

// linkQueue bounds the messages waiting for a slow connection; past it
// the oldest requests are dropped (the next one asks again).
const linkQueue = 64

func openLink(c Cluster, leader, raftAddr string, retry time.Duration, answers chan<- lease.Message, log *zap.Logger) *link {
	ctx, cancel := context.WithCancel(context.Background())
	l := &link{leader: leader, out: make(chan outgoing, linkQueue), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.run(ctx, c, raftAddr, retry, answers, log)
		l.drain()
	}()
	return l
}

// send queues m without waiting; when the queue is full m is dropped and
// its sent channel closed.
func (l *link) send(m lease.Message, sent chan struct{}) {
	select {
	case l.out <- outgoing{msg: m, sent: sent}:
	default:
		if sent != nil {
			close(sent)
		}
	}
}

// close ends the link; it returns at once (done closes once it ended).
func (l *link) close() { l.cancel() }

// ended reports whether the link's goroutines have ended.
func (l *link) ended() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// drain gives up the messages still queued once the link ended: their
// waiters go on.
func (l *link) drain() {
	for {
		select {
		case o := <-l.out:
			if o.sent != nil {
				close(o.sent)
			}
		default:
			return
		}
	}
}

func (l *link) run(ctx context.Context, c Cluster, raftAddr string, retry time.Duration, answers chan<- lease.Message, log *zap.Logger) {
	for ctx.Err() == nil {
		conn, err := c.DialLease(ctx, raftAddr)
		if err != nil {
			log.Debug("lease connection to the leader failed", zap.String("leader", l.leader), zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
				continue
			}
		}
		l.serve(ctx, conn, answers, log)
	}
}

// serve writes queued messages to conn and reads answers until either
// fails or ctx ends; then conn is closed and its reader waited for.
func (l *link) serve(ctx context.Context, conn net.Conn, answers chan<- lease.Message, log *zap.Logger) {
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			m, err := lease.ReadMessage(conn)
			if err != nil {
				log.Debug("lease connection to the leader ended", zap.String("leader", l.leader), zap.Error(err))
				return
			}
			select {
			case answers <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		_ = conn.Close()
		<-readerDone
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-readerDone:
			return
		case o := <-l.out:
			_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			err := lease.WriteMessage(conn, o.msg)
			if o.sent != nil {
				close(o.sent)
			}
			if err != nil {
				log.Debug("lease message to the leader failed", zap.String("leader", l.leader), zap.Error(err))
				return
			}
		}
	}
}

// writeTimeout bounds one write on a lease connection: a leader that
// takes longer is as good as gone, and the holder's lease rules do not
// depend on it.
const writeTimeout = time.Second
