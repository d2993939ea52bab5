package launcher_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// seedCaps runs "slimvirt-launcher seed-caps" as the node agent's seed init container does (as
// uid 107) and returns the seed directory it filled.
func seedCaps(t *testing.T) string {
	t.Helper()
	r := newRun(t)
	r.nonRoot = true
	r.args = []string{"seed-caps", launcherpod.RunDir + "/seed"}
	r.start(testVMI("seeder", 30, nil, nil))
	if code := r.waitExit(90 * time.Second); code != 0 {
		log, _ := os.ReadFile(filepath.Join(r.root, "launcher.log"))
		t.Fatalf("seed-caps exited %d: %s", code, log)
	}
	seed := r.path(launcherpod.RunDir + "/seed")
	// One cache file per QEMU binary (the launcher image has only qemu-system-x86_64).
	files, _ := filepath.Glob(filepath.Join(seed, "*.xml"))
	found := false
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		found = found || strings.Contains(string(b), "<emulator>/usr/bin/qemu-system-x86_64</emulator>")
	}
	if !found {
		t.Fatalf("seed-caps left %v, without libvirt's capabilities of qemu-system-x86_64", files)
	}
	return seed
}

// startSeeded starts a guest whose launcher finds seed (a copy) at its --caps-seed-dir and
// returns the launcher's log line that says what libvirtd did with it.
func startSeeded(t *testing.T, seed string, edit func([]byte) []byte) string {
	t.Helper()
	r := newRun(t)
	r.nonRoot = true
	dir := r.path(launcherpod.RunDir + "/node-seed")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(seed, "*.xml"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), edit(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.args = []string{"--caps-seed-dir", launcherpod.RunDir + "/node-seed"}
	copyDisk(t, filepath.Join(bins.guest, "disk.qcow2"), filepath.Join(r.path(launcherpod.ContainerDiskDir), "root"))
	r.start(testVMI("seeded", 30,
		[]v1.Disk{{Name: "root", Disk: &v1.DiskTarget{Bus: "virtio"}}},
		[]v1.Volume{{Name: "root", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "guest"}}}}))
	r.waitPhase(launcherpod.PhaseRunning, bootTimeout)
	r.waitLine("SLIMVIRT-GUEST-UP", bootTimeout)
	log, _ := os.ReadFile(filepath.Join(r.root, "launcher.log"))
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "libvirt ready") {
			return l
		}
	}
	t.Fatalf("no 'libvirt ready' line in the launcher's log:\n%s", log)
	return ""
}

// The node's seed of QEMU capabilities: libvirtd takes it as its own cache and does not probe
// QEMU; a seed that does not match this QEMU (here its ctime) is probed again, and the guest
// boots either way.
func TestSeededQEMUCapabilities(t *testing.T) {
	needGuest(t)
	seed := seedCaps(t)

	line := startSeeded(t, seed, func(b []byte) []byte { return b })
	if !strings.Contains(line, "QEMU capabilities from the node's seed") {
		t.Errorf("a matching seed was not used: %s", line)
	}

	stale := regexp.MustCompile(`<qemuctime>[0-9]+</qemuctime>`)
	line = startSeeded(t, seed, func(b []byte) []byte { return stale.ReplaceAll(b, []byte("<qemuctime>1</qemuctime>")) })
	if !strings.Contains(line, "QEMU probed again") {
		t.Errorf("a stale seed was not probed again: %s", line)
	}
}
