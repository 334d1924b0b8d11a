package bed

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/testenv"
)

// StartKubeBed is the start of every test that needs the control plane:
// it builds a bed of hosts plus the control plane's own host ("kcp" at
// ControlPlaneAddr) with process logs in logDir (empty: a temporary
// folder), starts etcd and kube-apiserver from kubeBin (`make kube-tools`)
// there, and tears the bed down when t ends, printing the processes' last
// log lines if t failed. Without root or the binaries it skips (fails
// under CI).
func StartKubeBed(t testing.TB, kubeBin, logDir string, hosts ...HostSpec) (*Bed, *ControlPlane) {
	t.Helper()
	testenv.NeedRoot(t, "the control plane runs in a network namespace of the bed")
	kubeBin, err := filepath.Abs(kubeBin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"etcd", "kube-apiserver", "kubectl"} {
		testenv.NeedFile(t, filepath.Join(kubeBin, p), "run make kube-tools first")
	}
	if _, err := SweepStale(); err != nil {
		t.Logf("sweep stale namespaces: %v", err)
	}
	// Registered before the bed's cleanup, so removed after every process
	// writing there is gone.
	cpDir := t.TempDir()
	if logDir == "" {
		logDir = t.TempDir()
	}
	b, err := New(append(hosts, HostSpec{Name: "kcp", Addr: ControlPlaneAddr}), logDir)
	if err != nil {
		t.Fatalf("build bed: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("process logs (last lines):\n%s", b.Tails(40))
		}
		if err := b.Close(); err != nil {
			t.Errorf("tear down bed: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	cp, err := b.StartControlPlane(ctx, b.Host("kcp"), kubeBin, cpDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane ready in %s", time.Since(start).Round(time.Millisecond))
	return b, cp
}
