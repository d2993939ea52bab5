package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/slimvirt/slimvirt/internal/testenv"
)

// TestControllerBinary runs the real slimvirt-controller binary (main, flags, leader election,
// metrics and health endpoints) in place of the suite's controller: it must take the lease the
// suite's controller released, make a VMI's pod, serve its metrics, and stop on SIGTERM.
func TestControllerBinary(t *testing.T) {
	needController(t)
	dir := t.TempDir()
	bin := os.Getenv("SLIMVIRT_CONTROLLER_BIN")
	if bin != "" && !filepath.IsAbs(bin) {
		bin = filepath.Join(testenv.RepoRoot(), bin)
	}
	if bin == "" {
		// Built as controller/controller.mk builds it, so a `make build` before shares the cache.
		bin = filepath.Join(dir, "slimvirt-controller")
		build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "../cmd/slimvirt-controller")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	metricsAddr, probeAddr := freeAddr(t), freeAddr(t)

	env.stopController()
	t.Cleanup(func() {
		if err := env.startController(); err != nil {
			t.Fatalf("restart the suite's controller: %v", err)
		}
	})
	cmd := exec.Command(bin, "--kubeconfig", kubeconfig, "--signing-key-file", env.keyFile,
		"--launcher-image", launcherImage, "--allow-emulation", "--launcher-memory-overhead", "100Mi",
		"--leader-elect", "--leader-election-namespace", "default",
		"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", probeAddr)
	logs, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			if err := <-exited; err != nil && t.Failed() {
				t.Logf("controller: %v", err) // killed, unless it ended by itself
			}
		}
		if t.Failed() {
			raw, _ := os.ReadFile(logs.Name())
			t.Logf("controller log:\n%s", raw)
		}
	}()

	ns := newNamespace(t)
	vmi := loadExampleVMI(t, ns)
	if err := env.c.Create(context.Background(), vmi); err != nil {
		t.Fatal(err)
	}
	pod := launcherPod(t, ns, vmi.Name)
	compute := computeOf(t, pod)
	want := resource.MustParse("1024M")
	want.Add(resource.MustParse("100Mi"))
	if mem := compute.Resources.Requests.Memory(); mem.Cmp(want) != 0 {
		t.Errorf("memory request %s, want %s (the example's 1024M + the flag's 100Mi)", mem, want.String())
	}
	waitPhase(t, ns, vmi.Name, "Scheduling")
	eventually(t, "/readyz", func() (bool, error) {
		body, err := get("http://" + probeAddr + "/readyz")
		return err == nil && body == "ok", err
	})
	body, err := get("http://" + metricsAddr + "/metrics")
	if err != nil || !strings.Contains(body, `slimvirt_vmis{phase="Scheduling"}`) {
		t.Errorf("metrics lack slimvirt_vmis: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("controller exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("controller did not stop within 30 s of SIGTERM")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(raw), fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(raw), err
}
