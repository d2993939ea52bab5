package nettest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/slimvirt/slimvirt/images/guest"
)

// GuestDir finds the test guest that `make guest` builds (SLIMVIRT_GUEST_DIR overrides). When it
// is missing the test is skipped, after waiting SLIMVIRT_GUEST_WAIT (a duration, e.g. 5m) for
// another build to finish it.
func GuestDir(t testing.TB) string {
	t.Helper()
	wait, _ := time.ParseDuration(os.Getenv("SLIMVIRT_GUEST_WAIT"))
	dir := os.Getenv("SLIMVIRT_GUEST_DIR")
	if dir == "" {
		wd, _ := os.Getwd()
		for d := wd; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "_output", "guest")
				break
			}
		}
	}
	deadline := time.Now().Add(wait)
	for {
		_, e1 := os.Stat(filepath.Join(dir, "vmlinuz"))
		_, e2 := os.Stat(filepath.Join(dir, "initrd.gz"))
		if e1 == nil && e2 == nil {
			return dir
		}
		if time.Now().After(deadline) {
			t.Skipf("no test guest in %s (make guest)", dir)
		}
		time.Sleep(2 * time.Second)
	}
}

// Guest is the test guest running under QEMU (TCG) in a pod netns on tap0.
type Guest struct {
	t     testing.TB
	cmd   *exec.Cmd
	conn  net.Conn
	mu    sync.Mutex
	lines []string
	cond  *sync.Cond
}

// BootGuest starts QEMU inside podNS with its NIC on the existing tap0 and mac.
func BootGuest(t testing.TB, podNS ns.NetNS, mac string) *Guest {
	t.Helper()
	dir := GuestDir(t)
	sock := filepath.Join(t.TempDir(), "serial.sock")
	args := []string{"--net=" + podNS.Path(), "qemu-system-x86_64",
		"-machine", "q35", "-accel", "tcg", "-m", "256", "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", filepath.Join(dir, "vmlinuz"), "-initrd", filepath.Join(dir, "initrd.gz"),
		"-append", "console=ttyS0 panic=-1",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac,
		"-chardev", "socket,id=s0,path=" + sock + ",server=on,wait=off",
		"-serial", "chardev:s0",
	}
	cmd := exec.Command("nsenter", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	g := &Guest{t: t, cmd: cmd}
	g.cond = sync.NewCond(&g.mu)
	// A capture of the pod's bridge, shown when the test fails.
	var capture strings.Builder
	dump := exec.Command("nsenter", "--net="+podNS.Path(), "tcpdump", "-i", "any", "-n", "-e", "-l", "-c", "200", "not", "ip6")
	dump.Stdout, dump.Stderr = &capture, &capture
	if os.Getenv("SLIMVIRT_TEST_TCPDUMP") != "" && dump.Start() == nil {
		t.Cleanup(func() {
			_ = dump.Process.Kill()
			_ = dump.Wait()
			if t.Failed() {
				t.Logf("pod capture:\n%s", capture.String())
			}
		})
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if g.conn != nil {
			_ = g.conn.Close()
		}
		if t.Failed() {
			t.Logf("guest serial console:\n%s\nqemu stderr: %s", strings.Join(g.Lines(), "\n"), stderr.String())
		}
	})
	var conn net.Conn
	var err error
	for i := 0; i < 100; i++ {
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connect to the guest's serial port: %v (qemu: %s)", err, stderr.String())
	}
	g.conn = conn
	go g.read()
	return g
}

func (g *Guest) read() {
	sc := bufio.NewScanner(g.conn)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		g.mu.Lock()
		g.lines = append(g.lines, strings.TrimRight(sc.Text(), "\r"))
		g.cond.Broadcast()
		g.mu.Unlock()
	}
	g.mu.Lock()
	g.lines = append(g.lines, "<serial closed>")
	g.cond.Broadcast()
	g.mu.Unlock()
}

// Lines returns what the guest printed so far.
func (g *Guest) Lines() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.lines...)
}

// WaitFor returns the first line from index from on that contains s, and its index.
func (g *Guest) WaitFor(s string, from int, timeout time.Duration) (string, int, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		g.mu.Lock()
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer timer.Stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		for i := from; i < len(g.lines); i++ {
			if strings.Contains(g.lines[i], s) {
				return g.lines[i], i, nil
			}
		}
		from = len(g.lines)
		if time.Now().After(deadline) {
			return "", 0, fmt.Errorf("guest did not print %q within %s", s, timeout)
		}
		g.cond.Wait()
	}
}

// Up waits for the guest's boot marker.
func (g *Guest) Up(timeout time.Duration) (guest.Up, error) {
	line, _, err := g.WaitFor(guest.MarkerUp, 0, timeout)
	if err != nil {
		return guest.Up{}, err
	}
	up, ok := guest.ParseUp(line)
	if !ok {
		return guest.Up{}, fmt.Errorf("cannot parse %q", line)
	}
	return up, nil
}

// Shell runs a command on the guest's serial shell and returns its output.
func (g *Guest) Shell(command string, timeout time.Duration) (string, error) {
	g.mu.Lock()
	from := len(g.lines)
	g.mu.Unlock()
	tag := fmt.Sprint(time.Now().UnixNano())
	// The tags are quoted in the command, so only their output (not the echoed command line,
	// which the terminal may also wrap) matches.
	if _, err := fmt.Fprintf(g.conn, "echo BEG\"%s\"; %s; echo END\"%s\" rc=$?\n", tag, command, tag); err != nil {
		return "", err
	}
	_, begin, err := g.WaitFor("BEG"+tag, from, timeout)
	if err != nil {
		return "", err
	}
	endLine, end, err := g.WaitFor("END"+tag+" rc=", begin, timeout)
	if err != nil {
		return "", err
	}
	lines := g.Lines()
	out := strings.Join(lines[begin+1:end], "\n")
	if rc := endLine[strings.Index(endLine, "rc=")+3:]; rc != "0" {
		return out, fmt.Errorf("guest command %q: exit %s: %s", command, rc, out)
	}
	return out, nil
}
