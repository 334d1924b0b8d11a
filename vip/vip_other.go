//go:build !linux

package vip

import (
	"context"

	"go.uber.org/zap"
)

// RemoveStale is not supported on this system: it returns ErrNotSupported.
func (m *Manager) RemoveStale() error { return ErrNotSupported }

// Hold is not supported on this system: it returns ErrNotSupported at once.
func (m *Manager) Hold(ctx context.Context) error { return ErrNotSupported }

// Watch cannot follow links on this system: as a Linux watch that cannot
// start, it reports the links down (LinkUp false) and logs ErrNotSupported
// once, then returns when ctx is done.
func (m *Manager) Watch(ctx context.Context) {
	if len(m.vips) > 0 {
		m.setLinkLost()
		m.log.Error("vip link watch unavailable", zap.Error(ErrNotSupported))
	}
	<-ctx.Done()
}
