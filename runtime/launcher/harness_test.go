package launcher_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// The launcher under test runs as PID 1 of fresh PID, mount and network namespaces, as in a
// pod: tmpfs over every directory libvirt writes (so nothing of it reaches the machine), the
// test's own directory bound at the launcher pod's RunDir, and copies of passwd/group (the
// launcher adds libvirt's QEMU account). When PID 1 dies the kernel kills everything else in
// the namespace, QEMU included; unshare --kill-child and the test's parent-death signal make
// sure PID 1 dies with the test. With NONROOT set, the launcher runs as uid 107 with no
// capabilities at all, as the compute container does (libvirt in session mode).
const wrapper = `set -e
for d in /run /var/lib /var/cache /var/log /etc/libvirt; do mount -t tmpfs -o mode=0755 tmpfs $d; done
cp /etc/passwd /etc/group "$T/"
echo "qemu:x:107:107:qemu:/var/run/libvirt:/usr/sbin/nologin" >>"$T/passwd"
echo "qemu:x:107:" >>"$T/group"
mount --bind "$T/passwd" /etc/passwd
mount --bind "$T/group" /etc/group
mkdir -p /run/slimvirt /run/libvirt
mount --bind "$T/run" /run/slimvirt
if [ -n "$EMPTY_PVC" ]; then mount -t tmpfs -o size=64m tmpfs "/run/slimvirt/pvcs/$EMPTY_PVC"; fi
if [ -n "$SMALL_PVC" ]; then mount -t tmpfs -o size=16m tmpfs "/run/slimvirt/pvcs/$SMALL_PVC"; truncate -s 64M "/run/slimvirt/pvcs/$SMALL_PVC/disk.img"; fi
if [ -n "$BLOCK" ]; then
  # A container's /dev: a fresh tmpfs with the usual nodes bound in, plus the block PVC's
  # device node at /dev/slimvirt/<volume> (BLOCK is volume:major:minor).
  mkdir -p "$T/dev"
  mount --rbind /dev "$T/dev"
  mount -t tmpfs -o mode=0755 tmpfs /dev
  for n in null zero full random urandom tty ptmx; do touch /dev/$n; mount --bind "$T/dev/$n" /dev/$n; done
  mkdir -p /dev/net /dev/pts /dev/shm /dev/slimvirt
  touch /dev/net/tun && mount --bind "$T/dev/net/tun" /dev/net/tun
  mount --rbind "$T/dev/pts" /dev/pts
  mount -t tmpfs tmpfs /dev/shm
  IFS=: read vol major minor <<EOB
$BLOCK
EOB
  mknod "/dev/slimvirt/$vol" b "$major" "$minor"
fi
if [ -n "$TAP" ]; then
  # What a device plugin gives the compute container: /dev/net/tun it may open. A private node,
  # so the machine's own stays as it is.
  mknod "$T/tun" c 10 200 && chmod 0666 "$T/tun" && mount --bind "$T/tun" /dev/net/tun
  owner=0; [ -n "$NONROOT" ] && owner=107
  ip tuntap add dev "$TAP" mode tap user $owner
  ip link set dev "$TAP" mtu 1400 up
fi
if [ -n "$NONROOT" ]; then
  chown 107:107 /run/libvirt "$T/run"
  chmod o+x "$(dirname "$T")"
  touch "$T/termination-log" && chown 107:107 "$T/termination-log"
  exec setpriv --reuid 107 --regid 107 --clear-groups --bounding-set -all --inh-caps -all --no-new-privs -- \
    "$LAUNCHER" --termination-log "$T/termination-log" $LAUNCHER_ARGS
fi
exec "$LAUNCHER" --termination-log "$T/termination-log" $LAUNCHER_ARGS
`

var bins struct {
	launcher, diskcopy string
	guest              string
	// dir holds the binaries and the files that removeStale must find after a killed run.
	dir      string
	build    sync.Once
	buildErr error
}

// removeStale ends what an earlier, killed run of these tests left: launchers still running
// from its binaries (normally gone with the test through the parent-death signal) and its
// directories.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "slimvirt-runtime-test-*"))
	for _, dir := range dirs {
		b, _ := os.ReadFile(filepath.Join(dir, "pid"))
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && syscall.Kill(pid, 0) == nil {
			continue // a run in progress
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/exe")
		for _, exe := range procs {
			if target, err := os.Readlink(exe); err == nil && strings.HasPrefix(target, dir+"/") {
				if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(exe))); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		// Loop devices over its files (the block PVC test).
		if out, err := exec.Command("losetup", "-a").Output(); err == nil {
			for _, l := range strings.Split(string(out), "\n") {
				if dev, _, ok := strings.Cut(l, ":"); ok && strings.Contains(l, dir+"/") {
					_ = exec.Command("losetup", "-d", dev).Run()
				}
			}
		}
		_ = os.RemoveAll(dir)
	}
}

func TestMain(m *testing.M) {
	removeStale()
	dir, err := os.MkdirTemp("", "slimvirt-runtime-test-")
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		panic(err)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		bins.dir = dir
		bins.launcher = filepath.Join(dir, "slimvirt-launcher")
		bins.diskcopy = filepath.Join(dir, "slimvirt-diskcopy")
		bins.guest = os.Getenv("SLIMVIRT_GUEST_DIR")
		if bins.guest == "" {
			bins.guest = "../../_output/guest"
		}
		return m.Run()
	}()
	os.Exit(code)
}

// buildBinaries builds the launcher and the copier for the tests that run them, once; the
// unit tests of the package do without.
func buildBinaries() error {
	bins.build.Do(func() {
		for _, b := range []struct{ out, pkg, cgo string }{
			{bins.launcher, "../cmd/slimvirt-launcher", "1"},
			{bins.diskcopy, "../cmd/slimvirt-diskcopy", "0"},
		} {
			cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.buildErr = fmt.Errorf("build %s: %w\n%s", b.pkg, err, out)
				return
			}
		}
	})
	return bins.buildErr
}

// needGuest fails (not skips) when the environment cannot run the real tests: they are the
// point of this package, and `make test-runtime` builds the guest first.
func needGuest(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "runtime tests run libvirtd and QEMU in namespaces")
	testutil.Must(t, buildBinaries())
	for _, f := range []string{"disk.qcow2", "disk.raw"} {
		if _, err := os.Stat(filepath.Join(bins.guest, f)); err != nil {
			t.Fatalf("test guest missing (run make guest): %v", err)
		}
	}
}

// run is one launcher under test.
type run struct {
	t    *testing.T
	dir  string // bound at launcherpod.RunDir
	root string
	cmd  *exec.Cmd
	// nonRoot runs the launcher as uid 107 without capabilities; args are extra flags.
	nonRoot bool
	args    []string

	mu     sync.Mutex
	lines  []string
	notify chan struct{}
	exited chan struct{}
	code   int
}

// newRun makes the test's pod directory; setup may put volumes into it before start.
func newRun(t *testing.T) *run {
	root := t.TempDir()
	r := &run{t: t, root: root, dir: filepath.Join(root, "run"), notify: make(chan struct{}, 1), exited: make(chan struct{})}
	for _, d := range []string{r.dir, r.path(launcherpod.ContainerDiskDir), r.path(launcherpod.PVCDir), r.path(launcherpod.HostDiskDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// path maps a path under launcherpod.RunDir to the test's directory.
func (r *run) path(podPath string) string {
	rel, err := filepath.Rel(launcherpod.RunDir, podPath)
	if err != nil || strings.HasPrefix(rel, "..") {
		r.t.Fatalf("%s is not under %s", podPath, launcherpod.RunDir)
	}
	return filepath.Join(r.dir, rel)
}

func (r *run) start(vmi *v1.VirtualMachineInstance, env ...string) {
	r.t.Helper()
	b, err := json.Marshal(vmi)
	if err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--propagation", "private", "--net", "sh", "-c", wrapper)
	cmd.Env = append([]string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"T=" + r.root,
		"LAUNCHER=" + bins.launcher,
		launcherpod.EnvVMI + "=" + string(b),
		launcherpod.EnvAllowEmulation + "=true",
		"LAUNCHER_ARGS=" + strings.Join(r.args, " "),
	}, env...)
	if r.nonRoot {
		cmd.Env = append(cmd.Env, "NONROOT=1")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(r.root, "launcher.log"))
	if err != nil {
		r.t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.cmd = cmd
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			r.mu.Lock()
			r.lines = append(r.lines, s.Text())
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
		err := cmd.Wait()
		_ = logf.Close()
		var ee *exec.ExitError
		switch {
		case err == nil:
			r.code = 0
		case errors.As(err, &ee):
			r.code = ee.ExitCode()
		default:
			r.code = -1
		}
		close(r.exited)
	}()
	r.t.Cleanup(r.kill)
}

// kill ends PID 1 of the namespace, which takes everything in it along.
func (r *run) kill() {
	select {
	case <-r.exited:
		return
	default:
	}
	if pid := r.launcherPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = r.cmd.Process.Kill()
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
	}
	if r.t.Failed() {
		b, _ := os.ReadFile(filepath.Join(r.root, "launcher.log"))
		r.t.Logf("launcher log:\n%s", b)
		r.t.Logf("console:\n%s", strings.Join(r.consoleLines(), "\n"))
	}
}

// launcherPID is the host PID of the launcher: unshare's only child.
func (r *run) launcherPID() int {
	pid := r.cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

func (r *run) signal(sig syscall.Signal) {
	r.t.Helper()
	pid := r.launcherPID()
	if pid == 0 {
		r.t.Fatal("no launcher process")
	}
	if err := syscall.Kill(pid, sig); err != nil {
		r.t.Fatal(err)
	}
}

func (r *run) consoleLines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// waitLine waits for a console line containing s and returns it.
func (r *run) waitLine(s string, timeout time.Duration) string {
	r.t.Helper()
	deadline := time.After(timeout)
	seen := 0
	for {
		lines := r.consoleLines()
		for _, l := range lines[seen:] {
			if strings.Contains(l, s) {
				return l
			}
		}
		seen = len(lines)
		select {
		case <-r.notify:
		case <-time.After(200 * time.Millisecond):
		case <-r.exited:
			for _, l := range r.consoleLines()[seen:] {
				if strings.Contains(l, s) {
					return l
				}
			}
			r.t.Fatalf("launcher exited with %d before the console printed %q", r.code, s)
		case <-deadline:
			r.t.Fatalf("the console did not print %q in %s", s, timeout)
		}
	}
}

// waitCount waits until n console lines contain s.
func (r *run) waitCount(s string, n int, timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		count := 0
		for _, l := range r.consoleLines() {
			if strings.Contains(l, s) {
				count++
			}
		}
		if count >= n {
			return
		}
		select {
		case <-r.exited:
			r.t.Fatalf("launcher exited with %d after %d of %d lines with %q", r.code, count, n, s)
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d of %d console lines with %q after %s", count, n, s, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitExit waits for the launcher to end and returns its exit code.
func (r *run) waitExit(timeout time.Duration) int {
	r.t.Helper()
	select {
	case <-r.exited:
		return r.code
	case <-time.After(timeout):
		r.t.Fatalf("launcher still running after %s", timeout)
	}
	return -1
}

func (r *run) status() launcherpod.Status {
	r.t.Helper()
	st, err := launcherpod.ReadStatus(r.path(launcherpod.StatusFile))
	if err != nil {
		r.t.Fatalf("read status: %v", err)
	}
	return st
}

// waitPhase waits until the status file shows phase.
func (r *run) waitPhase(phase string, timeout time.Duration) launcherpod.Status {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := launcherpod.ReadStatus(r.path(launcherpod.StatusFile))
		if err == nil && st.Phase == phase {
			return st
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("status phase is %q (%v), want %q after %s", st.Phase, err, phase, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *run) terminationMessage() string {
	b, _ := os.ReadFile(filepath.Join(r.root, "termination-log"))
	return string(b)
}

// launcherCmd runs the launcher binary's client subcommands (probe, ctl) against the run's
// sockets, inside the launcher's mount namespace, as kubectl exec would in the pod.
func (r *run) launcherCmd(args ...string) (string, error) {
	pid := r.launcherPID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid), "-m", "-n", bins.launcher}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// log is what the launcher has logged so far.
func (r *run) log() string {
	b, _ := os.ReadFile(filepath.Join(r.root, "launcher.log"))
	return string(b)
}

// copier is slimvirt-diskcopy copy --stay, running as a pod's copier container does.
type copier struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the copier has ended, with err
	err    error
}

// startCopier starts the copier after delay.
func startCopier(t *testing.T, src, dstDir string, delay time.Duration) *copier {
	t.Helper()
	c := &copier{cmd: exec.Command(bins.diskcopy, "copy", "--src", src, "--dst", dstDir, "--stay"), exited: make(chan struct{})}
	time.Sleep(delay)
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start the copier: %v", err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() { _ = c.cmd.Process.Kill(); <-c.exited })
	return c
}

// stop checks that the copier still runs, then that it ends at once with status 0 on SIGTERM.
func (c *copier) stop(t *testing.T) {
	t.Helper()
	select {
	case <-c.exited:
		t.Fatalf("the copier ended by itself: %v", c.err)
	default:
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
		if c.err != nil {
			t.Errorf("the copier ended with %v on SIGTERM, want status 0", c.err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the copier ignored SIGTERM")
	}
}

// copyDisk runs slimvirt-diskcopy as a copier container would, before the launcher starts.
func copyDisk(t *testing.T, src, dstDir string) {
	t.Helper()
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bins.diskcopy, "copy", "--src", src, "--dst", dstDir).CombinedOutput(); err != nil {
		t.Fatalf("diskcopy: %v: %s", err, out)
	}
}

// proc is what the test reads of one process of the launcher's namespace.
type proc struct {
	pid    int
	name   string
	uid    string
	capEff string
}

// processes are the launcher and its children (libvirtd, virtlogd and QEMU, which libvirtd
// double-forks and so becomes the launcher's child).
func (r *run) processes() []proc {
	r.t.Helper()
	read := func(pid int) proc {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		p := proc{pid: pid}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "Name":
				p.name = v
			case "Uid":
				p.uid = strings.Fields(v)[0]
			case "CapEff":
				p.capEff = v
			}
		}
		return p
	}
	pid := r.launcherPID()
	out := []proc{read(pid)}
	// Each thread lists the children it forked.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, read(n))
		}
	}
	return out
}
