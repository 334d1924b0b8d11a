//go:build !linux

package vip

import (
	"context"

	"go.uber.org/zap"
)

// RemoveStale is not supported on this system: it returns ErrNotSupported.
func (m *Manager) RemoveStale() error { return ErrNotSupported }

// RemoveStale is not supported on this system: it returns ErrNotSupported.
func (v *VIP) RemoveStale() error { return ErrNotSupported }

// Hold is not supported on this system: it returns ErrNotSupported at once.
func (v *VIP) Hold(ctx context.Context, holding func()) error { return ErrNotSupported }

// Watch cannot follow links on this system: as a Linux watch that cannot
// start, once the set has a VIP it reports the links down (LinkUp false)
// and logs ErrNotSupported once, then returns when ctx is done.
func (m *Manager) Watch(ctx context.Context) {
	if !m.waitForVIPs(ctx) {
		return
	}
	m.setLinkLost()
	m.log.Error("vip link watch unavailable", zap.Error(ErrNotSupported))
	<-ctx.Done()
}
