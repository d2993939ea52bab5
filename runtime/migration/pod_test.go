package migration_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/runtime/libvirtd"
	"github.com/slimvirt/slimvirt/runtime/migration"
	"github.com/slimvirt/slimvirt/runtime/reaper"
)

// A pod of these tests is this test binary run again as PID 1 of fresh PID and mount
// namespaces inside a network namespace of the test, as a launcher pod's compute container
// runs: tmpfs over every directory libvirt writes but its logs, which the test shows when it
// fails, copies of passwd and group, the pod's own directory bound at /run/slimvirt. It runs a
// libvirtd through package libvirtd, as the launcher does, until it is killed; the kernel then
// ends everything in its namespace. With UNPRIVILEGED set it runs as the launcher's uid
// without capabilities, as in a launcher pod, and libvirtd runs in session mode.
const podWrapper = `set -e
for d in /run /var/lib /var/cache /etc/libvirt; do mount -t tmpfs -o mode=0755 tmpfs $d; done
mkdir -p "$POD/log" && mount --bind "$POD/log" /var/log
cp /etc/passwd /etc/group "$POD/"
if [ -n "$UNPRIVILEGED" ]; then
  echo "qemu:x:$UNPRIVILEGED:$UNPRIVILEGED:qemu:/run/slimvirt:/usr/sbin/nologin" >>"$POD/passwd"
  echo "qemu:x:$UNPRIVILEGED:" >>"$POD/group"
fi
mount --bind "$POD/passwd" /etc/passwd
mount --bind "$POD/group" /etc/group
mkdir -p /run/slimvirt /run/libvirt
mount --bind "$POD/run" /run/slimvirt
if [ -n "$UNPRIVILEGED" ]; then
  chown -R "$UNPRIVILEGED:$UNPRIVILEGED" /run/slimvirt
  exec setpriv --reuid "$UNPRIVILEGED" --regid "$UNPRIVILEGED" --clear-groups --bounding-set -all --inh-caps -all --no-new-privs -- "$POD_BINARY"
fi
exec "$POD_BINARY"
`

const (
	// podEnv set makes the test binary a pod.
	podEnv = "SLIMVIRT_MIGRATION_POD"
	// podRun is the pod's directory, as the launcher's RunDir.
	podRun = "/run/slimvirt"
	// prefix names the namespaces and directories of these tests, followed by the test's PID.
	prefix = "svmig-"
)

func TestMain(m *testing.M) {
	if os.Getenv(podEnv) != "" {
		os.Exit(runPod())
	}
	if os.Geteuid() == 0 {
		removeStale()
	}
	if err := libvirt.EventRegisterDefaultImpl(); err != nil {
		fmt.Fprintln(os.Stderr, "register libvirt's event loop:", err)
		os.Exit(1)
	}
	go func() {
		for {
			if err := libvirt.EventRunDefaultImpl(); err != nil {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	os.Exit(m.Run())
}

// runPod is a pod's PID 1: libvirtd until SIGTERM.
func runPod() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	r := reaper.New()
	go r.Loop(ctx)
	d, err := libvirtd.Start(ctx, libvirtd.Config{
		RunDir:     podRun + "/libvirt",
		ConfDir:    "/etc/libvirt",
		PasswdFile: "/etc/passwd",
		GroupFile:  "/etc/group",
		Libvirtd:   "/usr/sbin/libvirtd",
		DriverDir:  "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver",
		QEMUUser:   "root",
		QEMUGroup:  "root",
		HostUUID:   os.Getenv("HOST_UUID"),
	}, r, log)
	if err != nil {
		log.Error("start libvirtd", "err", err)
		return 1
	}
	defer d.Stop()
	fmt.Println("ready")
	select {
	case <-ctx.Done():
		return 0
	case why := <-d.Died():
		log.Error("libvirtd ended", "why", why)
		return 1
	}
}

// removeStale removes what a killed run of these tests left: its network namespaces, its
// directory, and its unprivileged pods (those running its copy of the binary: the others died
// with it through parent-death signals).
func removeStale() {
	alive := func(name string) bool {
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, prefix), "-", 2)[0])
		return err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == nil
	}
	if entries, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) && !alive(e.Name()) {
				_ = exec.Command("ip", "netns", "delete", e.Name()).Run()
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	exes, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, d := range dirs {
		if alive(filepath.Base(d)) {
			continue
		}
		for _, exe := range exes {
			if target, err := os.Readlink(exe); err == nil && strings.HasPrefix(target, d+"/") {
				if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(exe))); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		_ = os.RemoveAll(d)
	}
}

// network is a node network made of namespaces: a bridge in its own namespace and one
// namespace per pod on it, each with eth0 at 10.77.0.<n>/24.
type network struct {
	t      *testing.T
	bridge string
	pods   map[string]string // role -> netns name
	addrs  map[string]string // role -> IP
	macs   map[string]string // role -> MAC, kept when a pod is plugged again
}

func nsName(role string) string { return fmt.Sprintf("%s%d-%s", prefix, os.Getpid(), role) }

func newNetwork(t *testing.T, roles ...string) *network {
	t.Helper()
	n := &network{t: t, bridge: nsName("net"), pods: map[string]string{}, addrs: map[string]string{}, macs: map[string]string{}}
	n.addNS(n.bridge)
	n.ip(n.bridge, "link", "add", "br0", "type", "bridge")
	n.ip(n.bridge, "link", "set", "br0", "up")
	for i, role := range roles {
		n.pods[role] = nsName(role)
		n.addrs[role] = fmt.Sprintf("10.77.0.%d", i+1)
		n.macs[role] = fmt.Sprintf("02:00:0a:4d:00:%02x", i+1)
		n.addNS(n.pods[role])
		n.plug(role)
	}
	return n
}

func (n *network) addNS(name string) {
	n.t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		n.t.Fatalf("add netns %s: %v: %s", name, err, out)
	}
	n.t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	n.ip(name, "link", "set", "lo", "up")
}

// plug gives a pod its eth0 on the bridge.
func (n *network) plug(role string) {
	port := "v" + role
	n.ip(n.bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n.pods[role])
	n.ip(n.bridge, "link", "set", port, "master", "br0", "up")
	n.ip(n.pods[role], "link", "set", "eth0", "address", n.macs[role])
	n.ip(n.pods[role], "addr", "add", n.addrs[role]+"/24", "dev", "eth0")
	n.ip(n.pods[role], "link", "set", "eth0", "up")
}

// unplug deletes a pod's veth: its eth0 and address are gone with it.
func (n *network) unplug(role string) { n.ip(n.bridge, "link", "del", "v"+role) }

func (n *network) ip(netns string, args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", netns}, args...)...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip -n %s %s: %v: %s", netns, strings.Join(args, " "), err, out)
	}
}

func (n *network) path(role string) string { return "/var/run/netns/" + n.pods[role] }

// listen opens a TCP port in a pod's namespace.
func (n *network) listen(role string) net.Listener {
	n.t.Helper()
	var ln net.Listener
	err := ns.WithNetNSPath(n.path(role), func(ns.NetNS) (err error) {
		ln, err = migration.Listen(context.Background(), n.addrs[role]+":0")
		return err
	})
	testutil.Must(n.t, err)
	return ln
}

// dialer connects from a pod's namespace: the socket is made there and stays there.
func (n *network) dialer(role string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (c net.Conn, err error) {
		nerr := ns.WithNetNSPath(n.path(role), func(ns.NetNS) error {
			c, err = migration.Dial(ctx, addr)
			return nil
		})
		return c, errors.Join(nerr, err)
	}
}

// pod is one launcher pod: its libvirtd, in its network namespace.
type pod struct {
	name string
	// dir is the pod's directory on the machine, bound at podRun in the pod.
	dir  string
	cmd  *exec.Cmd
	conn *libvirt.Connect
	end  sync.Once
	// unprivileged pods run as the launcher's uid: what the test makes for them must be theirs.
	unprivileged bool
}

// own gives the pod what the test made for it.
func (p *pod) own(t *testing.T, paths ...string) {
	t.Helper()
	if !p.unprivileged {
		return
	}
	for _, path := range paths {
		testutil.Must(t, os.Lchown(path, launcherpod.LauncherUID, launcherpod.LauncherUID))
	}
}

// kill ends the pod at once: its PID 1 dies, and the kernel ends the rest of its namespace.
// PID 1 is killed by PID: unshare's parent-death signal does not reach an unprivileged pod
// (the kernel clears it when setpriv changes the uid).
func (p *pod) kill() {
	p.end.Do(func() {
		pid := p.cmd.Process.Pid
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if child, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(child, syscall.SIGKILL)
				}
			}
		}
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	})
}

// host maps a path of the pod under podRun to the machine's. The launcher and its libvirtd
// share a mount namespace, so there is no such mapping in a pod; the test reaches into two.
func (p *pod) host(podPath string) string {
	return filepath.Join(p.dir, strings.TrimPrefix(podPath, podRun))
}

func startPod(t *testing.T, root, name, netnsPath, binary string, unprivileged bool) *pod {
	t.Helper()
	p := &pod{name: name, dir: filepath.Join(root, name, "run"), unprivileged: unprivileged}
	for _, d := range []string{p.dir, p.host(podRun + "/disks"), p.host(podRun + "/migration")} {
		testutil.Must(t, os.MkdirAll(d, 0o755))
	}
	p.cmd = exec.Command("nsenter", "--net="+netnsPath, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
		"--mount", "--propagation", "private", "sh", "-c", podWrapper)
	p.cmd.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"POD=" + filepath.Dir(p.dir),
		"POD_BINARY=" + binary,
		podEnv + "=1",
		"HOST_UUID=" + randomUUID(t),
	}
	uri := "qemu:///system?socket="
	if unprivileged {
		p.cmd.Env = append(p.cmd.Env, fmt.Sprintf("UNPRIVILEGED=%d", launcherpod.LauncherUID))
		uri = "qemu:///session?socket="
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.Create(filepath.Join(root, name, "pod.log"))
	testutil.Must(t, err)
	p.cmd.Stderr = logf
	stdout, err := p.cmd.StdoutPipe()
	testutil.Must(t, err)
	testutil.Must(t, p.cmd.Start())
	t.Cleanup(func() {
		if p.conn != nil {
			_, _ = p.conn.Close()
		}
		p.kill()
		_ = logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("pod %s log:\n%s", name, b)
			logs, _ := filepath.Glob(filepath.Join(root, name, "log", "libvirt", "qemu", "*.log"))
			session, _ := filepath.Glob(p.host(podRun + "/libvirt/cache/libvirt/qemu/log/*.log"))
			logs = append(logs, session...)
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("pod %s, %s:\n%s", name, filepath.Base(l), b)
			}
		}
	})
	ready := make(chan bool, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if s.Text() == "ready" {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("pod %s ended before libvirtd was ready:\n%s", name, b)
		}
	case <-time.After(120 * time.Second):
		t.Fatalf("pod %s: libvirtd not ready after 2 minutes", name)
	}
	p.conn, err = libvirt.NewConnect(uri + p.host(podRun+"/libvirt/libvirt-sock"))
	testutil.Must(t, err)
	return p
}

func randomUUID(t *testing.T) string {
	b, err := os.ReadFile("/proc/sys/kernel/random/uuid")
	testutil.Must(t, err)
	return strings.TrimSpace(string(b))
}

// startPods starts the pods at once: each libvirtd probes QEMU on start. Unprivileged pods
// run a copy of this binary that their uid may execute (go test's directory is root's only).
func startPods(t *testing.T, root string, n *network, unprivileged bool, roles ...string) map[string]*pod {
	t.Helper()
	binary, err := os.Executable()
	testutil.Must(t, err)
	if unprivileged {
		testutil.Must(t, os.Chmod(root, 0o755))
		copied := filepath.Join(root, "pod")
		if out, err := exec.Command("cp", binary, copied).CombinedOutput(); err != nil {
			t.Fatalf("copy the test binary: %v: %s", err, out)
		}
		binary = copied
	}
	var mu sync.Mutex
	pods := map[string]*pod{}
	var wg sync.WaitGroup
	for _, role := range roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := startPod(t, root, role, n.path(role), binary, unprivileged)
			mu.Lock()
			pods[role] = p
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(pods) != len(roles) {
		t.FailNow()
	}
	return pods
}
