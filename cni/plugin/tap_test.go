package plugin_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
	"github.com/slimvirt/slimvirt/cni/netconf"
)

// TestTapOpensInQEMU: the tap is multi-queue exactly when the interface asks for more than one
// queue, and QEMU opens it with the matching queue count (a mismatch is refused by the kernel).
func TestTapOpensInQEMU(t *testing.T) {
	c := nettest.NewCluster(t)
	chain := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	owner := 107
	for _, queues := range []int{0, 4} {
		t.Run(fmt.Sprintf("queues=%d", queues), func(t *testing.T) {
			podNS := nettest.NewNS(t, "pod")
			iface := netconf.VMInterface{Interface: launcherpod.Interface{Name: "default", Binding: launcherpod.BindingBridge, TapOwner: &owner, Queues: queues}}
			value := string(nettest.MustJSON([]netconf.VMInterface{iface}))
			name := fmt.Sprintf("virt-launcher-q%d", queues)
			pod := nettest.Pod{Namespace: "default", Name: name, UID: "uid-" + name, ContainerID: "c-" + name, Netns: podNS,
				Annotations: map[string]string{launcherpod.AnnotationInterfaces: value,
					launcherpod.AnnotationSignature: launcherpod.SignPod(c.Key, launcherpod.PodRef{Namespace: "default", Name: name, UID: "uid-" + name}, value)}}
			if _, err := chain.Add(pod); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			defer func() {
				if err := chain.Del(pod); err != nil {
					t.Errorf("DEL: %v", err)
				}
			}()
			details := nettest.Run(t, podNS, "ip", "-d", "link", "show", "tap0")
			if got := strings.Contains(details, "multi_queue"); got != (queues > 1) {
				t.Errorf("multi_queue = %v, want %v:\n%s", got, queues > 1, details)
			}
			if !strings.Contains(details, "user 107") || !strings.Contains(details, "vnet_hdr on") {
				t.Errorf("tap not owned by 107 with vnet_hdr:\n%s", details)
			}
			netdev := "tap,id=n0,ifname=tap0,script=no,downscript=no"
			device := "virtio-net-pci,netdev=n0"
			if queues > 1 {
				netdev += fmt.Sprintf(",queues=%d", queues)
				device += ",mq=on"
			}
			qemu := exec.Command("nsenter", "--net="+podNS.Path(), "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg",
				"-nodefaults", "-display", "none", "-S", "-netdev", netdev, "-device", device)
			var stderr strings.Builder
			qemu.Stderr = &stderr
			if err := qemu.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- qemu.Wait() }()
			select {
			case err := <-exited:
				t.Errorf("qemu could not open the tap: %v: %s", err, stderr.String())
			case <-time.After(3 * time.Second):
				_ = qemu.Process.Kill()
				t.Logf("qemu killed: %v", <-exited)
			}
		})
	}
}
