package plugin_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

func bridgeIfaces() []launcherpod.Interface {
	return []launcherpod.Interface{{Name: "default", Binding: launcherpod.BindingBridge}}
}

func stateFiles(t *testing.T, c *nettest.Cluster) []string {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(c.StateDir, "attachments", "svtest"))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestSpecVersions runs ADD, CHECK (where the version has it) and DEL for every version the
// plugin speaks.
func TestSpecVersions(t *testing.T) {
	c := nettest.NewCluster(t)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			list := strings.Replace(string(nettest.Conflist(c.BridgeEntry(), c.Ours())), `"1.1.0"`, `"`+v+`"`, 1)
			chain := nettest.NewChain(t, c.Host, c.PluginDir, []byte(list))
			ours := chain.WithList(t, []byte(strings.Replace(string(nettest.Conflist(c.Ours())), `"1.1.0"`, `"`+v+`"`, 1)))
			podNS := nettest.NewNS(t, "pod")
			pod := launcherPod(t, c.Key, "virt-launcher-v"+strings.ReplaceAll(v, ".", ""), podNS, bridgeIfaces())
			res, err := chain.AddRaw(pod)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Errorf("result version %s, want %s", res.Version(), v)
			}
			if _, ok := links(t, podNS)["k6t-eth0"]; !ok {
				t.Error("no k6t-eth0 after ADD")
			}
			if v != "0.3.1" {
				if err := ours.Check(pod); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if err := chain.Del(pod); err != nil {
				t.Errorf("DEL: %v", err)
			}
			if l := links(t, podNS); len(l) != 1 {
				t.Errorf("after DEL the pod has %v, want only lo", l)
			}
		})
	}
}

// TestCheckReportsMissingPiece: CHECK passes after ADD and names the piece someone removed.
func TestCheckReportsMissingPiece(t *testing.T) {
	c := nettest.NewCluster(t)
	chain := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	ours := chain.WithList(t, nettest.Conflist(c.Ours()))
	tests := []struct {
		name   string
		remove []string
		want   string
	}{
		{"tap", []string{"ip", "link", "del", "tap0"}, "tap0"},
		{"bridge", []string{"ip", "link", "del", "k6t-eth0"}, "k6t-eth0"},
		{"nic off the bridge", []string{"ip", "link", "set", "eth0-nic", "nomaster"}, "eth0-nic"},
		{"anti-spoofing table", []string{"nft", "delete table bridge slimvirt"}, "anti-spoofing"},
		{"pod guard table", []string{"nft", "delete table ip slimvirt"}, "table ip slimvirt"},
		{"gateway arp table", []string{"nft", "delete table netdev slimvirt"}, "gateway arp"},
		{"record", []string{"ip", "link", "set", "k6t-eth0", "alias", "something else"}, "record"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			podNS := nettest.NewNS(t, "pod")
			pod := launcherPod(t, c.Key, fmt.Sprintf("virt-launcher-chk%d", i), podNS, bridgeIfaces())
			if _, err := chain.Add(pod); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			defer func() {
				if err := chain.Del(pod); err != nil {
					t.Errorf("DEL: %v", err)
				}
			}()
			if err := ours.Check(pod); err != nil {
				t.Fatalf("CHECK after ADD: %v", err)
			}
			nettest.Run(t, podNS, tt.remove[0], tt.remove[1:]...)
			err := ours.Check(pod)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CHECK = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

// TestDelTolerates: DEL succeeds without a netns, after the netns is gone, and twice.
func TestDelTolerates(t *testing.T) {
	c := nettest.NewCluster(t)
	chain := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	ours := chain.WithList(t, nettest.Conflist(c.Ours()))
	for _, tt := range []string{"no netns", "netns gone"} {
		t.Run(tt, func(t *testing.T) {
			podNS := nettest.NewNS(t, "pod")
			pod := launcherPod(t, c.Key, "virt-launcher-"+strings.ReplaceAll(tt, " ", "-"), podNS, bridgeIfaces())
			if _, err := chain.Add(pod); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			gone := pod
			if tt == "no netns" {
				gone.Netns = nil
			} else {
				nettest.Run(t, c.Host, "ip", "netns", "delete", filepath.Base(podNS.Path()))
			}
			for i := 0; i < 2; i++ {
				if err := ours.Del(gone); err != nil {
					t.Errorf("DEL %d: %v", i+1, err)
				}
			}
			if f := stateFiles(t, c); len(f) != 0 {
				t.Errorf("state files left: %v", f)
			}
			if err := chain.Del(gone); err != nil {
				t.Errorf("DEL of the chain: %v", err)
			}
		})
	}
}

// TestRepeatedAdd: a second ADD of a bound pod answers the same and binds nothing twice.
func TestRepeatedAdd(t *testing.T) {
	c := nettest.NewCluster(t)
	podNS := nettest.NewNS(t, "pod")
	pod := launcherPod(t, c.Key, "virt-launcher-twice", podNS, bridgeIfaces())
	first, err := c.AddPod(t, nettest.Styles()[0], pod, true)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	before := links(t, podNS)
	var prev = *first
	prev.Interfaces = first.Interfaces[:len(first.Interfaces)-2] // what the cluster CNI returned
	second, err := c.AddOurs(pod, &prev)
	if err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	if fmt.Sprint(second.IPs[0].Address.String(), len(second.Interfaces)) != fmt.Sprint(first.IPs[0].Address.String(), len(first.Interfaces)) {
		t.Errorf("second ADD answered %+v, want %+v", second, first)
	}
	if after := links(t, podNS); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("second ADD changed the netns:\n%v\nwas\n%v", after, before)
	}
}

// TestDelRestoresWhatIsLeft: DEL puts the pod NIC back even when pieces of the binding are
// already gone (the twin, the bridge and the tap), from the state record.
func TestDelRestoresWhatIsLeft(t *testing.T) {
	c := nettest.NewCluster(t)
	chain := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	ours := chain.WithList(t, nettest.Conflist(c.Ours()))
	podNS := nettest.NewNS(t, "pod")
	pod := launcherPod(t, c.Key, "virt-launcher-partial", podNS, bridgeIfaces())
	res, err := chain.Add(pod)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	podIP, podMAC := res.IPs[0].Address.IP.String(), res.Interfaces[*res.IPs[0].Interface].Mac
	for _, l := range []string{"eth0", "tap0", "k6t-eth0"} {
		nettest.Run(t, podNS, "ip", "link", "del", l)
	}
	if err := ours.Del(pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	l := links(t, podNS)
	if e := l["eth0"]; e.Type != "veth" || e.MAC != podMAC || len(e.Addrs) != 1 || !strings.HasPrefix(e.Addrs[0], podIP+"/") ||
		!strings.Contains(strings.Join(e.Routes, ";"), "0.0.0.0/0 via "+c.Gateway) {
		t.Errorf("eth0 = %+v, want the veth back with %s, %s and its default route", e, podMAC, podIP)
	}
	if err := chain.Del(pod); err != nil {
		t.Errorf("DEL of the chain: %v", err)
	}
}

// TestGC removes the attachments that are not valid (also one whose netns is already gone) and
// keeps the others.
func TestGC(t *testing.T) {
	c := nettest.NewCluster(t)
	chain := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	ours := chain.WithList(t, nettest.Conflist(c.Ours()))
	keepNS, dropNS, goneNS := nettest.NewNS(t, "pod"), nettest.NewNS(t, "pod"), nettest.NewNS(t, "pod")
	keep := launcherPod(t, c.Key, "virt-launcher-keep", keepNS, bridgeIfaces())
	drop := launcherPod(t, c.Key, "virt-launcher-drop", dropNS, bridgeIfaces())
	gone := launcherPod(t, c.Key, "virt-launcher-gone", goneNS, bridgeIfaces())
	for _, p := range []nettest.Pod{keep, drop, gone} {
		if _, err := chain.Add(p); err != nil {
			t.Fatalf("ADD %s: %v", p.Name, err)
		}
	}
	nettest.Run(t, c.Host, "ip", "netns", "delete", filepath.Base(goneNS.Path()))
	if err := ours.GC(types.GCAttachment{ContainerID: keep.ContainerID, IfName: "eth0"}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if f := stateFiles(t, c); len(f) != 1 || !strings.HasPrefix(f[0], keep.ContainerID+"_") {
		t.Errorf("state files %v, want only %s's", f, keep.ContainerID)
	}
	if l := links(t, dropNS); l["eth0"].Type != "veth" || l["k6t-eth0"].Type != "" {
		t.Errorf("collected pod still bound: %v", l)
	}
	if err := ours.Check(keep); err != nil {
		t.Errorf("CHECK of the kept pod: %v", err)
	}
	for _, p := range []nettest.Pod{keep, drop} {
		if err := chain.Del(p); err != nil {
			t.Errorf("DEL %s: %v", p.Name, err)
		}
	}
}

// TestStatus: available with a usable state dir, error 50 without.
func TestStatus(t *testing.T) {
	c := nettest.NewCluster(t)
	chain := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.Ours()))
	if err := chain.Status(); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	blocker := filepath.Join(t.TempDir(), "file")
	testutil.Must(t, os.WriteFile(blocker, nil, 0o644))
	entry := strings.Replace(c.Ours(), c.StateDir, filepath.Join(blocker, "state"), 1)
	err := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(entry)).Status()
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != 50 {
		t.Errorf("STATUS with an unusable state dir = %v, want error 50", err)
	}
}

// TestConcurrent: 20 launcher pods added at once, then deleted at once, leave nothing behind.
func TestConcurrent(t *testing.T) {
	const n = 20
	c := nettest.NewCluster(t)
	chain := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	pods := make([]nettest.Pod, n)
	for i := range pods {
		iface := bridgeIfaces()
		if i%2 == 1 {
			iface = []launcherpod.Interface{{Name: "default", Binding: launcherpod.BindingMasquerade}}
		}
		pods[i] = launcherPod(t, c.Key, fmt.Sprintf("virt-launcher-%02d", i), nettest.NewNS(t, "pod"), iface)
	}
	run := func(op func(nettest.Pod) error) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = op(pods[i])
			}()
		}
		wg.Wait()
		return errs
	}
	for i, err := range run(func(p nettest.Pod) error { _, err := chain.Add(p); return err }) {
		if err != nil {
			t.Errorf("ADD %d: %v", i, err)
		}
	}
	if f := stateFiles(t, c); len(f) != n {
		t.Errorf("%d state files after ADD, want %d", len(f), n)
	}
	for i, err := range run(chain.Del) {
		if err != nil {
			t.Errorf("DEL %d: %v", i, err)
		}
	}
	for i, p := range pods {
		if l := links(t, p.Netns); len(l) != 1 {
			t.Errorf("pod %d keeps %v", i, l)
		}
		if out := nettest.Run(t, p.Netns, "nft", "list", "tables"); strings.TrimSpace(out) != "" {
			t.Errorf("pod %d keeps nft tables %q", i, out)
		}
	}
	if f := stateFiles(t, c); len(f) != 0 {
		t.Errorf("state files left: %v", f)
	}
	if l := links(t, c.Host); len(l) != 2 {
		t.Errorf("host keeps %v, want lo and svbr0", l)
	}
}
