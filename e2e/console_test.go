//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects a command's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSlimctlConsoleVNCPause: the serial console answers a typed command, VNC gives the RFB
// banner on a local port, and pause/unpause reach the domain.
func TestSlimctlConsoleVNCPause(t *testing.T) {
	const ns, name = "default", "testvmi-nocloud2"
	_, _ = kubectl(t, "delete", "-f", "../examples/vmi-linux.yaml", "--ignore-not-found", "--wait=true")
	mustKubectl(t, "apply", "-f", "../examples/vmi-linux.yaml")
	t.Cleanup(func() {
		_, _ = kubectl(t, "delete", "-f", "../examples/vmi-linux.yaml", "--ignore-not-found", "--wait=true", "--timeout=90s")
	})
	vmi := waitVMIRunning(t, ns, name, "")
	eventually(t, 3*time.Minute, "guest up", func() (bool, error) {
		out, err := kubectl(t, "-n", ns, "logs", vmi.Status.LauncherPod, "-c", "compute")
		return strings.Contains(out, "SLIMVIRT-GUEST-UP"), err
	})

	bin, _ := filepath.Abs("../_output/bin/slimctl")

	// Console: type a command whose answer cannot be an echo of what was typed.
	cmd := exec.Command(bin, "--kubeconfig", cluster.kubeconfig, "console", name)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() }()
	eventually(t, 90*time.Second, "console answer", func() (bool, error) {
		_, _ = io.WriteString(stdin, "echo CONSOLE-$((6*7))\n")
		time.Sleep(time.Second)
		return strings.Contains(out.String(), "CONSOLE-42"), nil
	})
	_, _ = stdin.Write([]byte{0x1d})
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("slimctl console did not end cleanly on ^]: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("slimctl console ignored ^]")
	}

	// VNC: a local port that speaks RFB.
	port := freePort(t)
	vnc := exec.Command(bin, "--kubeconfig", cluster.kubeconfig, "vnc", name, "--proxy-only", "--port", strconv.Itoa(port))
	vncOut := &lockedBuffer{}
	vnc.Stdout, vnc.Stderr = vncOut, vncOut
	if err := vnc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = vnc.Process.Kill(); _, _ = vnc.Process.Wait() }()
	var banner string
	eventually(t, 60*time.Second, "RFB banner", func() (bool, error) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
		if err != nil {
			return false, err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
		banner, err = bufio.NewReader(c).ReadString('\n')
		return strings.HasPrefix(banner, "RFB "), err
	})
	t.Logf("VNC banner %q", strings.TrimSpace(banner))

	// Pause and unpause reach the domain (the launcher's status says so).
	status := func() string {
		return mustKubectl(t, "-n", ns, "exec", vmi.Status.LauncherPod, "-c", "compute", "--", "/usr/bin/slimvirt-launcher", "ctl", "status")
	}
	mustSlimctl(t, "pause", "vmi", name)
	if s := status(); !strings.Contains(strings.ToLower(s), "paused") {
		t.Fatalf("after pause the launcher says %q", s)
	}
	mustSlimctl(t, "unpause", "vmi", name)
	if s := status(); !strings.Contains(strings.ToLower(s), "running") {
		t.Fatalf("after unpause the launcher says %q", s)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
