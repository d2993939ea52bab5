package plugin_test

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/cni/internal/nettest"
)

// TestVMNetCommand: slimvirt-vmnet serves a pod's VM network by hand, from outside the netns.
func TestVMNetCommand(t *testing.T) {
	c := nettest.NewCluster(t)
	bin := filepath.Join(t.TempDir(), "slimvirt-vmnet")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/slimvirt/slimvirt/cni/cmd/slimvirt-vmnet").CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	podNS := nettest.NewNS(t, "pod")
	pod := launcherPod(t, c.Key, "virt-launcher-cmd", podNS, bridgeIfaces())
	res, err := c.AddPod(t, nettest.Styles()[0], pod, true)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	podIP, podMAC := res.IPs[0].Address.IP.String(), res.Interfaces[*res.IPs[0].Interface].Mac

	cmd := exec.Command(bin, "--netns", podNS.Path(), "--resolv-conf", "/nonexistent", "--hostname", "by-hand", "--binding", "bridge")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	serving := make(chan string, 1)
	var logs strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "serving vm network") {
				serving <- sc.Text()
			}
		}
	}()
	select {
	case <-serving:
	case <-time.After(10 * time.Second):
		t.Fatalf("slimvirt-vmnet did not start serving")
	}
	vm := attachVM(t, podNS, podMAC)
	ack := dhcpLease(t, vm)
	if ack.YourIPAddr.String() != podIP || ack.HostName() != "by-hand" {
		t.Errorf("lease %s hostname %q, want %s by-hand", ack.YourIPAddr, ack.HostName(), podIP)
	}
}

// TestNeedsPrevResult: slimvirt is a chained plugin; alone it fails with a clear error.
func TestNeedsPrevResult(t *testing.T) {
	c := nettest.NewCluster(t)
	podNS := nettest.NewNS(t, "pod")
	conf := `{"cniVersion":"1.1.0","name":"svtest","type":"slimvirt","stateDir":"` + c.StateDir + `"}`
	_, err := nettest.ExecPlugin(c.PluginDir, "slimvirt", "ADD", podNS.Path(), "c1", "", []byte(conf))
	if err == nil || !strings.Contains(err.Error(), "no prevResult") {
		t.Errorf("ADD without prevResult = %v, want an error saying so", err)
	}
}
