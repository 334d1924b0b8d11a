package election

import "errors"

// Errors of admin calls that the cluster's state refuses. Callers tell them
// apart with errors.Is; the returned errors wrap them with what was asked.
var (
	// ErrNoPeer: no voter peer is alive, reachable and eligible to take
	// leadership (TransferLeadership, and the leader's own hand-over).
	ErrNoPeer = errors.New("no alive voter peer may take leadership")
	// ErrLocalNode: Remove was asked to remove this node; Leave does that.
	ErrLocalNode = errors.New("this is the local node; use leave")
	// ErrNotMember: Remove named a node that is not in the Raft configuration.
	ErrNotMember = errors.New("not in the raft configuration")
)
