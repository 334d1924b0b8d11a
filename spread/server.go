package spread

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vipd/vipd/lease"
)

// inbound is one message for the granter loop.
type inbound struct {
	msg     lease.Message
	arrived time.Duration // the granter's clock when it was read
	reply   func(lease.Message)
	move    *moveRequest
	handing chan error // a hand-over of this node's own VIPs; answered when done
}

// leaderInbox is the running granter loop's queue; the lease server puts
// requests and releases into it.
type leaderInbox struct {
	ch chan inbound
}

// inboxSize bounds what waits for the granter loop: a few requests per
// node between two rounds.
const inboxSize = 256

// idleTimeout closes a lease connection that has said nothing for this
// many lease periods: a holder asks every renewal period.
const idleLeases = 10

// ServeConn serves one lease connection (the election hands it over after
// its first byte) until it ends or sends garbage, which is counted and
// ends it. A request or release that reaches a node that is not granting
// is answered with not_leader.
func (r *Runner) ServeConn(conn net.Conn) {
	var wmu sync.Mutex
	reply := func(m lease.Message) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := lease.WriteMessage(conn, m); err != nil {
			r.log.Debug("lease answer not sent", zap.Stringer("remote", conn.RemoteAddr()), zap.Error(err))
		}
	}
	for {
		_ = conn.SetReadDeadline(time.Now().Add(idleLeases * r.o.Timing.Duration))
		m, err := lease.ReadMessage(conn)
		switch {
		case errors.Is(err, lease.ErrMalformed):
			r.o.Metrics.refused(reasonMalformed)
			r.log.Warn("lease connection sent garbage; closing it", zap.Stringer("remote", conn.RemoteAddr()), zap.Error(err))
			return
		case errors.Is(err, io.EOF):
			return
		case err != nil:
			r.log.Debug("lease connection ended", zap.Stringer("remote", conn.RemoteAddr()), zap.Error(err))
			return
		}
		if m.Kind != lease.KindRequest && m.Kind != lease.KindRelease {
			r.o.Metrics.refused(reasonUnexpected)
			r.log.Warn("lease connection sent a leader's message; closing it", zap.Stringer("remote", conn.RemoteAddr()), zap.String("kind", string(m.Kind)))
			return
		}
		in := r.inbox.Load()
		if in == nil {
			reply(lease.Message{Kind: lease.KindNotLeader})
			continue
		}
		select {
		case in.ch <- inbound{msg: m, arrived: r.o.Clock(), reply: reply}:
		default:
			r.o.Metrics.refused(reasonOverloaded)
		}
	}
}
