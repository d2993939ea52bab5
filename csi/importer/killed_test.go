package importer_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestKilledImportLeavesNoScratch: a driver killed while it stages a qcow2 (an upload cut by
// a crash, a node reboot) leaves nothing in the pool's scratch directory.
func TestKilledImportLeavesNoScratch(t *testing.T) {
	dir := t.TempDir()
	_, raw := images(t)
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "img.raw"), raw, 0o644))
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "img.raw"), filepath.Join(dir, "img.qcow2"))
	target := newTarget(t, dir, volSize)

	child := exec.Command(os.Args[0], "-test.run=^TestStagingChild$")
	child.Env = append(os.Environ(), "SLIMVIRT_STAGING_CHILD="+dir)
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	testutil.Must(t, child.Start())
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	t.Cleanup(func() { child.Process.Kill(); <-exited })

	scratchDir := filepath.Dir(target.Scratch)
	staging := func() bool {
		if _, err := os.Stat(target.Scratch); err == nil {
			return true
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", child.Process.Pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", child.Process.Pid, fd.Name())); err == nil && strings.HasPrefix(l, scratchDir+"/") {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(30 * time.Second); !staging(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the import never started staging")
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the importing process ended: %v", err)
		default:
		}
	}
	testutil.Must(t, child.Process.Signal(syscall.SIGKILL))
	<-exited
	exited <- nil
	entries, err := os.ReadDir(scratchDir)
	testutil.Must(t, err)
	if len(entries) != 0 {
		t.Fatalf("a killed import left %d files in %s", len(entries), scratchDir)
	}
}

// TestStagingChild is the process TestKilledImportLeavesNoScratch kills: it stages the first
// half of a qcow2 and then waits for bytes that never come.
func TestStagingChild(t *testing.T) {
	dir := os.Getenv("SLIMVIRT_STAGING_CHILD")
	if dir == "" {
		return // only run as the child of TestKilledImportLeavesNoScratch
	}
	img, err := os.ReadFile(filepath.Join(dir, "img.qcow2"))
	testutil.Must(t, err)
	pr, _ := io.Pipe() // never written: the rest of the image never arrives
	target := importer.Target{Disk: filepath.Join(dir, "vol", "disk.img"), Size: volSize, Scratch: filepath.Join(dir, ".scratch", "vol.qcow2")}
	importer.Write(context.Background(), importer.Stream{R: io.MultiReader(strings.NewReader(string(img[:len(img)/2])), pr), Total: int64(len(img))}, target)
}
