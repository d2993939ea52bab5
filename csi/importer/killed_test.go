package importer_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

	child, exited := startChild(t, "TestStagingChild", "SLIMVIRT_STAGING_CHILD="+dir)

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
	if err := <-exited; err == nil {
		t.Fatal("the importing child exited cleanly although it was killed")
	}
	exited <- nil
	entries, err := os.ReadDir(scratchDir)
	testutil.Must(t, err)
	if len(entries) != 0 {
		t.Fatalf("a killed import left %d files in %s", len(entries), scratchDir)
	}
}

// startChild runs this test binary's test as an importing child with env added; exited yields
// how it ended (and takes it back). The child is killed at cleanup.
func startChild(t *testing.T, test string, env ...string) (*exec.Cmd, chan error) {
	t.Helper()
	child := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	child.Env = append(os.Environ(), env...)
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	testutil.Must(t, child.Start())
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	t.Cleanup(func() {
		_ = child.Process.Kill() // already gone when the test got that far
		if err := <-exited; err != nil {
			t.Logf("importing child: %v", err)
		}
	})
	return child, exited
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
	_ = importer.Write(context.Background(), importer.Stream{R: io.MultiReader(strings.NewReader(string(img[:len(img)/2])), pr), Total: int64(len(img))}, target)
}

// TestKilledStreamingImportLeavesNoProcess: a driver killed while qemu-img convert reads a
// streamed qcow2 from it leaves no qemu-img behind: its end of the socketpair closes with the
// driver, and qemu-img exits.
func TestKilledStreamingImportLeavesNoProcess(t *testing.T) {
	url := stallingConvert(t)
	dir := t.TempDir()
	child, _ := startChild(t, "TestStreamingChild", "SLIMVIRT_STREAMING_CHILD="+dir, "SLIMVIRT_STREAMING_URL="+url)
	var convert []int
	for deadline := time.Now().Add(30 * time.Second); len(convert) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("qemu-img convert never started in the importing child")
		}
		convert = childrenOf(child.Process.Pid, "convert")
	}
	testutil.Must(t, child.Process.Signal(syscall.SIGKILL))
	for deadline := time.Now().Add(10 * time.Second); running(convert[0]); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("qemu-img convert (pid %d) still runs 10 s after its driver was killed", convert)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, ".scratch")); len(entries) != 0 {
		t.Fatalf("a killed import left %d scratch files", len(entries))
	}
}

// TestStreamingChild is the process TestKilledStreamingImportLeavesNoProcess kills.
func TestStreamingChild(t *testing.T) {
	dir := os.Getenv("SLIMVIRT_STREAMING_CHILD")
	if dir == "" {
		return // only run as the child of TestKilledStreamingImportLeavesNoProcess
	}
	_ = newImporter().Fetch(context.Background(), importer.Request{URL: os.Getenv("SLIMVIRT_STREAMING_URL")}, newTarget(t, dir, volSize), nil)
}

// childrenOf returns the pids of the children of parent whose command line contains word.
func childrenOf(parent int, word string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so count from its closing parenthesis.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(parent) {
			continue
		}
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Contains(cmd, []byte(word)) {
			out = append(out, pid)
		}
	}
	return out
}

// running says whether pid is a live process (not gone, not a zombie).
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
