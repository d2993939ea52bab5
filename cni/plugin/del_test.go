package plugin_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/binding"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
)

// podView is what a user of the pod sees of its network namespace.
type podView struct {
	Links      map[string]linkInfo
	Groups     map[string]uint32
	Neighbours string
	Ruleset    string
	Sysctls    map[string]string
}

func viewPod(t *testing.T, netns ns.NetNS) podView {
	t.Helper()
	v := podView{Links: links(t, netns), Groups: map[string]uint32{}, Sysctls: map[string]string{}}
	err := netns.Do(func(ns.NetNS) error {
		ls, err := netlink.LinkList()
		for _, l := range ls {
			v.Groups[l.Attrs().Name] = l.Attrs().Group
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	v.Neighbours = nettest.Run(t, netns, "ip", "-4", "neigh", "show", "nud", "permanent")
	v.Ruleset = nettest.Run(t, netns, "nft", "list", "ruleset")
	for _, s := range []string{"net/ipv4/conf/all/arp_ignore", "net/ipv4/conf/all/rp_filter", "net/ipv4/ip_forward"} {
		v.Sysctls[s] = readSysctl(t, netns, s)
	}
	return v
}

// TestDelLeavesPodAsBefore: after our DEL the pod's netns is exactly as the cluster CNI left it
// (links with their MACs, addresses, routes and link groups, permanent neighbours, nftables
// ruleset, sysctls) and the state record is gone; a second DEL changes nothing. DEL deletes the
// binding's links in one request through a link group: a link of the pod that is in that group
// already is not the plugin's and stays.
func TestDelLeavesPodAsBefore(t *testing.T) {
	c := nettest.NewCluster(t)
	vpc := nettest.Styles()[2]
	masquerade := []launcherpod.Interface{{Name: "default", Binding: launcherpod.BindingMasquerade}}
	tests := []struct {
		name   string
		style  nettest.Style
		ifaces []launcherpod.Interface
		before []string // run in the pod before our ADD
		after  []string // run in the pod between our ADD and DEL
	}{
		{name: "bridge", style: vpc, ifaces: bridgeIfaces()},
		{name: "masquerade", style: nettest.Styles()[0], ifaces: masquerade},
		{name: "tap already gone", style: vpc, ifaces: bridgeIfaces(), after: []string{"ip link del tap0"}},
		{name: "foreign link in the group", style: vpc, ifaces: bridgeIfaces(), before: []string{
			"ip link add foreign0 type veth peer name foreign1",
			fmt.Sprintf("ip link set foreign0 group %d", binding.TeardownGroup),
		}},
		{name: "masquerade, foreign link in the group", style: nettest.Styles()[0], ifaces: masquerade, before: []string{
			"ip link add foreign0 type veth peer name foreign1",
			fmt.Sprintf("ip link set foreign0 group %d", binding.TeardownGroup),
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			podNS := nettest.NewNS(t, "pod")
			pod := launcherPod(t, c.Key, fmt.Sprintf("virt-launcher-del%d", i), podNS, tt.ifaces)
			prev, err := c.AddPod(t, tt.style, pod, false)
			if err != nil {
				t.Fatalf("ADD of the cluster CNI: %v", err)
			}
			for _, cmd := range tt.before {
				f := strings.Fields(cmd)
				nettest.Run(t, podNS, f[0], f[1:]...)
			}
			want := viewPod(t, podNS)
			if _, err := c.AddOurs(pod, prev); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if _, ok := links(t, podNS)["k6t-eth0"]; !ok {
				t.Fatal("no k6t-eth0 after ADD")
			}
			for _, cmd := range tt.after {
				f := strings.Fields(cmd)
				nettest.Run(t, podNS, f[0], f[1:]...)
			}
			for n := 1; n <= 2; n++ {
				if err := c.DelOurs(pod, prev); err != nil {
					t.Fatalf("DEL %d: %v", n, err)
				}
				if got := viewPod(t, podNS); !reflect.DeepEqual(got, want) {
					t.Errorf("after DEL %d the pod is\n%+v\nwant (before ADD)\n%+v", n, got, want)
				}
				for _, f := range stateFiles(t, c) {
					if strings.HasPrefix(f, pod.ContainerID+"_") {
						t.Errorf("after DEL %d the state file %s is left", n, f)
					}
				}
			}
		})
	}
}
