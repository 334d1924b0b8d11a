package deploy

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vipd/vipd/internal/testenv"
)

// imageBuilder says how `make image` will build here: a docker daemon if
// one answers, else buildah as root (make test installs it); without
// either the test stops, and under CI fails.
func imageBuilder(t *testing.T) string {
	t.Helper()
	if exec.Command("docker", "info").Run() == nil {
		return "docker"
	}
	testenv.NeedProgram(t, "buildah", "builds the image without a docker daemon (sudo make test installs Debian's buildah)")
	testenv.NeedRoot(t, "buildah with vfs storage")
	return "buildah"
}

// makefileImage is the IMAGE that `make image` tags by default.
func makefileImage(t *testing.T) string {
	t.Helper()
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*(\S+)\s*$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("Makefile: no IMAGE ?= line")
	}
	return string(m[1])
}

// The static pod runs the image that `make image` builds, as UID 0: the
// image's default user is not root, and only root gets the added
// capabilities that the VIP needs.
func TestStaticPodNamesTheBuiltImage(t *testing.T) {
	c := loadStaticPod(t).Spec.Containers[0]
	if got, want := c.Image, makefileImage(t); got != want {
		t.Errorf("the static pod runs image %q; make image builds %q", got, want)
	}
	if u := c.SecurityContext.RunAsUser; u == nil || *u != 0 {
		t.Errorf("securityContext.runAsUser %v: want 0, or NET_ADMIN and NET_RAW never reach vipd", u)
	}
}

// imageConfig is the part of an image's config the static pod depends on.
type imageConfig struct {
	Config struct {
		User       string   `json:"User"`
		Entrypoint []string `json:"Entrypoint"`
		Cmd        []string `json:"Cmd"`
	} `json:"config"`
}

// TestMakeImageBuildsAStaticNonRootImage runs `make image` into a temporary
// directory (with buildah, its own storage there too) and opens the saved
// archive: the default user is not root, the entrypoint and command are the
// static pod's, the vipd inside is a static executable and runs.
func TestMakeImageBuildsAStaticNonRootImage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the image build compiles vipd once more")
	}
	builder := imageBuilder(t)
	dir := t.TempDir()
	const tag = "localhost/vipd-image-test:latest"
	args := []string{"-C", "..", "image", "BIN=" + filepath.Join(dir, "bin"), "IMAGE=" + tag,
		"BUILDAH=buildah --storage-driver vfs --root " + filepath.Join(dir, "storage") + " --runroot " + filepath.Join(dir, "run")}
	if out, err := exec.Command("make", args...).CombinedOutput(); err != nil {
		t.Fatalf("make image (%s): %v\n%s", builder, err, out)
	}
	if builder == "docker" {
		t.Cleanup(func() { exec.Command("docker", "rmi", tag).Run() })
	} else {
		// vfs storage leaves read-only layer files that TempDir's removal
		// would trip over; buildah removes its own.
		t.Cleanup(func() {
			exec.Command("buildah", "--storage-driver", "vfs", "--root", filepath.Join(dir, "storage"),
				"--runroot", filepath.Join(dir, "run"), "rmi", "--all", "--force").Run()
		})
	}

	archive, err := os.Open(filepath.Join(dir, "bin", "vipd-image.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer archive.Close()
	files := readTar(t, "vipd-image.tar", archive)
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v %s", err, files["manifest.json"])
	}
	var cfg imageConfig
	if err := json.Unmarshal(files[manifest[0].Config], &cfg); err != nil {
		t.Fatalf("image config: %v", err)
	}
	if u := cfg.Config.User; u == "" || u == "0" || strings.HasPrefix(u, "0:") || u == "root" {
		t.Errorf("image user %q: want a non-root default", u)
	}
	if got, want := append(cfg.Config.Entrypoint, cfg.Config.Cmd...), loadStaticPod(t).Spec.Containers[0].Command; !slices.Equal(got, want) {
		t.Errorf("the image runs %q, the static pod %q", got, want)
	}

	var vipd []byte
	for _, layer := range manifest[0].Layers {
		if b, ok := readTar(t, layer, bytes.NewReader(files[layer]))["usr/local/bin/vipd"]; ok {
			vipd = b
		}
	}
	if vipd == nil {
		t.Fatal("no /usr/local/bin/vipd in the image's layers")
	}
	bin := filepath.Join(dir, "vipd-from-image")
	if err := os.WriteFile(bin, vipd, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("vipd in the image is dynamically linked (it has an ELF interpreter): scratch has no libc")
		}
	}
	if out, err := exec.Command(bin, "--check").CombinedOutput(); err != nil || !strings.Contains(string(out), "config ok") {
		t.Errorf("vipd from the image, --check: %v\n%s", err, out)
	}
}

// readTar returns the regular files of a tar archive by name.
func readTar(t *testing.T, name string, r io.Reader) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s in %s: %v", h.Name, name, err)
		}
		out[strings.TrimPrefix(h.Name, "./")] = b
	}
}
