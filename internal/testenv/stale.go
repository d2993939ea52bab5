package testenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RemoveStale stops the kube-apiserver and etcd that an earlier, killed run left behind in
// directories named with prefix (orphans: their parent is gone, so they belong to no running
// test) and removes their directories and data. Processes of a run that is still going have a
// live parent and are left alone.
func RemoveStale(prefix string) {
	prefix = filepath.Join(os.TempDir(), prefix)
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var killed []int
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		argv := readArgs(p)
		if len(argv) == 0 || !strings.HasPrefix(argv[0], prefix) || parentOf(p) != 1 {
			continue
		}
		fmt.Fprintf(os.Stderr, "stopping stale %s (pid %d) of an earlier run\n", filepath.Base(argv[0]), pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		killed = append(killed, pid)
		for _, a := range argv[1:] {
			for _, flag := range []string{"--data-dir=", "--cert-dir="} {
				if dir, ok := strings.CutPrefix(a, flag); ok && strings.HasPrefix(dir, os.TempDir()) {
					defer os.RemoveAll(dir)
				}
			}
		}
	}
	for _, pid := range killed {
		for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	dirs, _ := filepath.Glob(prefix + "*")
	for _, d := range dirs {
		if !inUse(d) {
			_ = os.RemoveAll(d)
		}
	}
}

func readArgs(proc string) []string {
	raw, err := os.ReadFile(filepath.Join(proc, "cmdline"))
	if err != nil || len(raw) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
}

func parentOf(proc string) int {
	raw, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may hold spaces.
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}

// inUse says whether a live process runs a binary from dir (a run going on now).
func inUse(dir string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if argv := readArgs(p); len(argv) > 0 && strings.HasPrefix(argv[0], dir+string(filepath.Separator)) {
			return true
		}
	}
	return false
}
