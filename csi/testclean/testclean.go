// Package testclean removes what a killed run of slimvirt-csi's tests left behind: mounts and
// loop devices under its temporary directories, and orphaned helper processes (kube-apiserver,
// etcd, external-provisioner, kube-controller-manager) it had started. Only leftovers carrying
// the caller's own markers are touched, and only processes whose parent is gone.
package testclean

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Mounts unmounts every mount point inside a temp directory whose name starts with one of the
// prefixes (Go names t.TempDir() after the test: /tmp/TestDiskFull123/001), detaches loop
// devices backed by files there, and removes the directories.
func Mounts(prefixes ...string) { MountsUnder(os.TempDir(), prefixes...) }

// MountsUnder is Mounts for directories in base instead of the temp directory. It is best
// effort: what cannot be cleaned now is left for the next run, so its errors are dropped.
func MountsUnder(base string, prefixes ...string) {
	tmp := filepath.Clean(base) + "/"
	match := func(p string) bool {
		rest, ok := strings.CutPrefix(p, tmp)
		if !ok {
			return false
		}
		for _, pre := range prefixes {
			if strings.HasPrefix(rest, pre) {
				return true
			}
		}
		return false
	}
	if out, err := exec.Command("losetup", "--noheadings", "--output", "NAME,BACK-FILE", "--list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && match(f[1]) {
				_ = exec.Command("losetup", "--detach", f[0]).Run()
			}
		}
	}
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var mps []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 4 && match(f[4]) {
			mps = append(mps, f[4])
		}
	}
	for i := len(mps) - 1; i >= 0; i-- { // innermost first
		_ = syscall.Unmount(mps[i], syscall.MNT_DETACH)
	}
	entries, _ := os.ReadDir(tmp)
	for _, e := range entries {
		if match(tmp + e.Name()) {
			_ = os.RemoveAll(tmp + e.Name())
		}
	}
}

// Processes kills orphaned processes (parent gone, reparented to PID 1) whose command line
// contains one of the markers.
func Processes(markers ...string) {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err != nil {
			continue
		}
		hit := false
		for _, m := range markers {
			if bytes.Contains(cmdline, []byte(m)) {
				hit = true
			}
		}
		if hit && parent(p.Name()) == 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL) // it may have exited meanwhile
		}
	}
}

func parent(pid string) int {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}
