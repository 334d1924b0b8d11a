package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vipd/vipd/internal/testenv"
)

// TestSystemdUnitVerifies runs systemd's own checker on the unit. verify
// insists that ExecStart's binary exists, so the unit is checked as a copy
// whose /usr/local/bin/vipd points at an executable in a temporary
// directory; nothing else changes. A warning (such as an unknown key,
// which systemd ignores) fails the test as an error does.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := testenv.NeedProgram(t, "systemd-analyze", "verifies the unit (sudo make test installs Debian's systemd)")
	unit, err := os.ReadFile("systemd/vipd.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "vipd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	const shipped = "/usr/local/bin/vipd"
	if !strings.Contains(string(unit), "ExecStart="+shipped+" ") {
		t.Fatalf("the unit's ExecStart does not run %s", shipped)
	}
	copyPath := filepath.Join(dir, "vipd.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(unit), shipped, bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", copyPath).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
