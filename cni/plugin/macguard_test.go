package plugin_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
)

// TestGuestMACTakeover: a VM on the bridge binding may not take a MAC that another pod, VM or
// interface of the node already uses (on a bridge-style cluster CNI the node's bridge would send
// that party's inbound frames to the VM), nor, unless the admin allows custom MACs, a MAC that
// is not locally administered. The refused pod's netns is left as the cluster CNI made it, and
// the pod whose MAC was asked for keeps answering.
func TestGuestMACTakeover(t *testing.T) {
	c := nettest.NewCluster(t)
	chain := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	allowing := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(),
		strings.Replace(c.Ours(), `"type":"slimvirt"`, `"type":"slimvirt","allowCustomMACs":true`, 1)))

	// A plain pod on the cluster bridge that has talked to its gateway: the node's bridge has
	// learnt its MAC and the node holds a neighbour entry for it.
	victimNS := nettest.NewNS(t, "victim")
	victim := nettest.Pod{Namespace: "other", Name: "database", UID: "uid-database", ContainerID: "c-database", Netns: victimNS}
	res, err := chain.Add(victim)
	if err != nil {
		t.Fatalf("ADD victim: %v", err)
	}
	t.Cleanup(func() { _ = chain.Del(victim) })
	victimMAC := res.Interfaces[*res.IPs[0].Interface].Mac
	victimIP := res.IPs[0].Address.IP.String()
	nettest.Run(t, victimNS, "busybox", "ping", "-c", "1", "-W", "2", c.Gateway)

	// Another VM, already running with a custom MAC.
	firstNS := nettest.NewNS(t, "pod")
	first := launcherPod(t, c.Key, "virt-launcher-first", firstNS, []launcherpod.Interface{{Name: "default", Binding: launcherpod.BindingBridge, MAC: "02:5a:00:00:00:01"}})
	if _, err := chain.Add(first); err != nil {
		t.Fatalf("ADD the first VM: %v", err)
	}
	t.Cleanup(func() { _ = chain.Del(first) })

	// A VM whose sandbox went without a DEL (the node restarted): its record stays, its netns is gone.
	goneNS := nettest.NewNS(t, "pod")
	gone := launcherPod(t, c.Key, "virt-launcher-gone", goneNS, []launcherpod.Interface{{Name: "default", Binding: launcherpod.BindingBridge, MAC: "02:5a:00:00:00:05"}})
	if _, err := chain.Add(gone); err != nil {
		t.Fatalf("ADD the VM that goes: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "delete", filepath.Base(goneNS.Path())).CombinedOutput(); err != nil {
		t.Fatalf("remove the gone VM's netns: %v %s", err, out)
	}

	// A node interface and a neighbour the node holds for a host off the bridge.
	nettest.Run(t, c.Host, "ip", "link", "add", "nodenic0", "address", "02:5a:00:00:00:02", "type", "veth", "peer", "name", "nodenic0p")
	nettest.Run(t, c.Host, "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p")
	nettest.Run(t, c.Host, "ip", "link", "set", "uplink0p", "up")
	nettest.Run(t, c.Host, "ip", "link", "set", "uplink0", "up")
	nettest.Run(t, c.Host, "ip", "neigh", "add", "192.0.2.7", "lladdr", "02:5a:00:00:00:03", "dev", "uplink0", "nud", "permanent")
	// A stale neighbour entry is a host gone, not a MAC in use.
	nettest.Run(t, c.Host, "ip", "neigh", "add", "192.0.2.8", "lladdr", "02:5a:00:00:00:04", "dev", "uplink0", "nud", "stale")

	tests := []struct {
		name  string
		chain *nettest.Chain
		mac   string
		want  string // "" = accepted
	}{
		{"another pod's MAC, learnt by the node's bridge", chain, victimMAC, "forwarding database"},
		{"another VM's MAC", chain, "02:5a:00:00:00:01", "the VM of pod sandbox c-virt-launch"},
		{"a node interface's MAC", chain, "02:5a:00:00:00:02", "address of interface nodenic0"},
		{"a neighbour's MAC", chain, "02:5a:00:00:00:03", "neighbour 192.0.2.7 on uplink0"},
		{"a vendor MAC", chain, "00:16:3e:12:34:56", "not locally administered"},
		{"a vendor MAC the admin allows", allowing, "00:16:3e:12:34:56", ""},
		{"a vendor MAC the admin allows, taken", allowing, "02:5a:00:00:00:01", "already in use"},
		{"a stale neighbour's MAC", chain, "02:5a:00:00:00:04", ""},
		{"the MAC of a VM whose sandbox is gone", chain, "02:5a:00:00:00:05", ""},
		{"a free locally administered MAC", chain, "02:5a:00:00:00:99", ""},
		{"a free MAC on masquerade (never leaves the pod)", chain, "00:16:3e:12:34:57", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			podNS := nettest.NewNS(t, "pod")
			binding := launcherpod.BindingBridge
			if strings.Contains(tt.name, "masquerade") {
				binding = launcherpod.BindingMasquerade
			}
			pod := launcherPod(t, c.Key, fmt.Sprintf("virt-launcher-mac%d", i), podNS, []launcherpod.Interface{{Name: "default", Binding: binding, MAC: tt.mac}})
			_, err := tt.chain.Add(pod)
			defer func() {
				if err := tt.chain.Del(pod); err != nil {
					t.Errorf("DEL: %v", err)
				}
			}()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ADD = %v, want the VM wired", err)
				}
				if _, ok := links(t, podNS)["k6t-eth0"]; !ok {
					t.Error("no k6t-eth0 after ADD")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), strings.ToLower(tt.mac)) {
				t.Fatalf("ADD = %v, want a refusal naming %s and %q", err, tt.mac, tt.want)
			}
			l := links(t, podNS)
			if l["eth0"].Type != "veth" || len(l["eth0"].Addrs) != 1 {
				t.Errorf("eth0 = %+v, want the cluster CNI's veth", l["eth0"])
			}
			for _, gone := range []string{"k6t-eth0", "tap0", "eth0-nic"} {
				if _, ok := l[gone]; ok {
					t.Errorf("%s exists after a refused ADD", gone)
				}
			}
			if _, err := nettest.Exec(c.Host, "busybox", "ping", "-c", "1", "-W", "2", victimIP); err != nil {
				t.Errorf("the victim pod %s stopped answering: %v", victimIP, err)
			}
		})
	}
}
