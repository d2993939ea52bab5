//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
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
	// The node agent reports the pause on the VMI (condition Paused) and in the metrics.
	mustSlimctl(t, "pause", "vmi", name)
	if s := status(); !strings.Contains(strings.ToLower(s), "paused") {
		t.Fatalf("after pause the launcher says %q", s)
	}
	waitPaused(t, ns, name, true)
	waitMetric(t, fmt.Sprintf(`slimvirt_vmi_info{name=%q,namespace=%q,node=%q,state="paused"} 1`, name, ns, vmi.Status.NodeName))
	mustSlimctl(t, "unpause", "vmi", name)
	if s := status(); !strings.Contains(strings.ToLower(s), "running") {
		t.Fatalf("after unpause the launcher says %q", s)
	}
	waitPaused(t, ns, name, false)
	waitMetric(t, fmt.Sprintf(`slimvirt_vmi_info{name=%q,namespace=%q,node=%q,state="running"} 1`, name, ns, vmi.Status.NodeName))

	// Soft reboot: the guest gets the ACPI power button, powers off, and libvirt starts it again
	// in the same QEMU and the same VMI: a second boot on the console.
	ups := func() int {
		out, _ := kubectl(t, "-n", ns, "logs", vmi.Status.LauncherPod, "-c", "compute")
		return strings.Count(out, "SLIMVIRT-GUEST-UP")
	}
	before := ups()
	mustSlimctl(t, "soft-reboot", "vmi", name, "--namespace", ns)
	eventually(t, 3*time.Minute, "the guest up again after soft-reboot", func() (bool, error) {
		return ups() > before, nil
	})
	if now, err := getVMI(t, ns, name); err != nil || now.UID != vmi.UID || now.Status.Phase != "Running" {
		t.Fatalf("soft-reboot replaced or stopped the VMI: %v", err)
	}
}

// TestSlimctlCLI: the CLI's own commands and its errors, as a plugin of kubectl too.
func TestSlimctlCLI(t *testing.T) {
	out := mustSlimctl(t, "version")
	if !strings.Contains(out, "Client Version:") || !strings.Contains(out, "Server Version: v1.") {
		t.Errorf("slimctl version: %q", out)
	}
	if out := mustSlimctl(t, "completion", "bash"); !strings.Contains(out, "__start_slimctl") {
		t.Errorf("slimctl completion bash prints no completion script: %.200q", out)
	}
	// Commands served by the aggregated API name the object as namespace/name; the others say
	// the namespace in words. Either way the user learns what was not found, and where.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"pause", "vmi", "no-such-vmi"}, "default/no-such-vmi: not found"},
		{[]string{"console", "no-such-vmi"}, "default/no-such-vmi: not found"},
		{[]string{"expose", "vm", "no-such-vm", "--port", "80", "--name", "x"}, "not found in namespace default"},
	} {
		out, err := slimctl(t, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("slimctl %s: %v %q, want a not-found error containing %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
	out, err := slimctl(t, "--namespace", "no-such-ns", "start", "testvm")
	if err == nil || !strings.Contains(out, "no-such-ns/testvm: not found") {
		t.Errorf("--namespace not honoured: %v %q", err, out)
	}
	// kubectl finds kubectl-slim on PATH and passes its flags through.
	bin, _ := filepath.Abs("../_output/bin")
	cmd := exec.Command(cluster.kubectl, "slim", "version", "--kubeconfig", cluster.kubeconfig)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	plugin, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(plugin), "Server Version: v1.") {
		t.Errorf("kubectl slim version: %v %q", err, plugin)
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
