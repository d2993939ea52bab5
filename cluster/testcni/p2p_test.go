package testcni_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/slimvirt/slimvirt/cluster/testcni"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// The host-local IPAM plugin the modes delegate to; `make cluster-up` (or `make test-cluster`)
// builds it into this cache.
const cniBinDir = "/var/cache/slimvirt/cni-plugins/v1.9.1"

const nodeIP = "10.88.0.1"

func requireRootAndIPAM(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "network namespaces need root")
	if _, err := os.Stat(filepath.Join(cniBinDir, "host-local")); err != nil {
		t.Fatalf("host-local IPAM plugin missing (%v); run: make cluster-up", err)
	}
	// testutils hands the plugin PATH as CNI_PATH.
	t.Setenv("PATH", cniBinDir+":"+os.Getenv("PATH"))
}

// newNS makes a network namespace that the test removes.
func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}

// setupNode gives the "node" namespace what the local cluster's node netns has: the node IP
// on an empty bridge and a default route to it (what proxy ARP answers for).
func setupNode(t *testing.T, node ns.NetNS) {
	t.Helper()
	err := node.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "node0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(nodeIP), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(br); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: br.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}})
	})
	if err != nil {
		t.Fatalf("set up node netns: %v", err)
	}
}

func conf(t *testing.T, mode string) []byte {
	t.Helper()
	c := map[string]any{
		"cniVersion": "1.0.0", "name": "testcni", "type": "slimvirt-testcni", "mode": mode,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": "10.244.9.0/24"}}},
			"dataDir": t.TempDir(),
		},
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialNode connects from the pod namespace to a listener on the node IP: the pod must resolve
// its gateway 169.254.1.1 (ARP) for this to work.
func dialNode(t *testing.T, node, pod ns.NetNS) error {
	t.Helper()
	var ln net.Listener
	err := node.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", nodeIP+":0")
		return err
	})
	if err != nil {
		t.Fatalf("listen in node netns: %v", err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	return pod.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 5)
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(buf); err != nil {
			return err
		}
		if string(buf) != "hello" {
			return fmt.Errorf("read %q", buf)
		}
		return nil
	})
}

func sysctl(t *testing.T, node ns.NetNS, key string) string {
	t.Helper()
	var v []byte
	err := node.Do(func(ns.NetNS) error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + key)
		return err
	})
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return strings.TrimSpace(string(v))
}

func TestPointToPoint(t *testing.T) {
	requireRootAndIPAM(t)
	tests := []struct {
		mode          string
		wantProxyARP  string
		wantPermanent bool
		wantHostMAC   string
	}{
		{mode: testcni.ModeCalico, wantProxyARP: "1", wantPermanent: false, wantHostMAC: "ee:ee:ee:ee:ee:ee"},
		{mode: testcni.ModeVPC, wantProxyARP: "0", wantPermanent: true},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			node, pod := newNS(t), newNS(t)
			setupNode(t, node)
			args := &skel.CmdArgs{ContainerID: "c-" + tt.mode, Netns: pod.Path(), IfName: "eth0", StdinData: conf(t, tt.mode)}
			var raw []byte
			err := node.Do(func(ns.NetNS) error {
				r, _, err := testutils.CmdAddWithArgs(args, func() error { return testcni.Add(args) })
				if err == nil {
					raw, err = json.Marshal(r)
				}
				return err
			})
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var res current.Result
			if err := json.Unmarshal(raw, &res); err != nil {
				t.Fatalf("decode result: %v", err)
			}
			if len(res.IPs) != 1 || res.IPs[0].Gateway.String() != testcni.GatewayIP {
				t.Fatalf("result IPs %+v: want one IP with gateway %s", res.IPs, testcni.GatewayIP)
			}
			if ones, _ := res.IPs[0].Address.Mask.Size(); ones != 32 {
				t.Errorf("pod address %s: want a /32", res.IPs[0].Address.String())
			}
			hostName := testcni.HostVethName(tt.mode, args.ContainerID, "eth0")
			if got := sysctl(t, node, "net/ipv4/conf/"+hostName+"/proxy_arp"); got != tt.wantProxyARP {
				t.Errorf("proxy_arp on %s = %s, want %s", hostName, got, tt.wantProxyARP)
			}
			var hostMAC string
			_ = node.Do(func(ns.NetNS) error {
				l, err := netlinksafe.LinkByName(hostName)
				if err == nil {
					hostMAC = l.Attrs().HardwareAddr.String()
				}
				return err
			})
			if tt.wantHostMAC != "" && hostMAC != tt.wantHostMAC {
				t.Errorf("host veth MAC %s, want %s", hostMAC, tt.wantHostMAC)
			}

			if err := dialNode(t, node, pod); err != nil {
				t.Fatalf("pod -> node %s: %v", nodeIP, err)
			}
			var neigh *netlink.Neigh
			_ = pod.Do(func(ns.NetNS) error {
				l, err := netlinksafe.LinkByName("eth0")
				if err != nil {
					return err
				}
				ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
				for i := range ns {
					if ns[i].IP.String() == testcni.GatewayIP {
						neigh = &ns[i]
					}
				}
				return err
			})
			if neigh == nil {
				t.Fatalf("no neighbour entry for %s in the pod", testcni.GatewayIP)
			}
			if got := neigh.State&netlink.NUD_PERMANENT != 0; got != tt.wantPermanent {
				t.Errorf("neighbour %s permanent = %v, want %v", testcni.GatewayIP, got, tt.wantPermanent)
			}
			if neigh.HardwareAddr.String() != hostMAC {
				t.Errorf("neighbour %s is %s, want the host veth's %s", testcni.GatewayIP, neigh.HardwareAddr, hostMAC)
			}
			if tt.mode == testcni.ModeVPC {
				// Without the pinned entry nobody answers ARP for the gateway: the pod is cut off.
				_ = pod.Do(func(ns.NetNS) error { return netlink.NeighDel(neigh) })
				if err := dialNode(t, node, pod); err == nil {
					t.Errorf("vpc: pod reached the node without its permanent neighbour: the node answers ARP")
				}
			}

			check := &skel.CmdArgs{ContainerID: args.ContainerID, Netns: args.Netns, IfName: "eth0"}
			var withPrev map[string]any
			_ = json.Unmarshal(args.StdinData, &withPrev)
			withPrev["prevResult"] = json.RawMessage(raw)
			check.StdinData, _ = json.Marshal(withPrev)
			if err := node.Do(func(ns.NetNS) error {
				return testutils.CmdCheckWithArgs(check, func() error { return testcni.Check(check) })
			}); err != nil {
				t.Errorf("CHECK: %v", err)
			}

			for i := 0; i < 2; i++ { // DEL is repeatable
				if err := node.Do(func(ns.NetNS) error {
					return testutils.CmdDelWithArgs(args, func() error { return testcni.Del(args) })
				}); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			_ = node.Do(func(ns.NetNS) error {
				if _, err := netlinksafe.LinkByName(hostName); err == nil {
					t.Errorf("host veth %s still there after DEL", hostName)
				}
				return nil
			})
		})
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{"calico", `{"mode":"calico","ipam":{"type":"host-local"}}`, false},
		{"vpc", `{"mode":"vpc","ipam":{"type":"host-local"}}`, false},
		{"record", `{"mode":"record","file":"/tmp/x"}`, false},
		{"no ipam", `{"mode":"calico"}`, true},
		{"record without file", `{"mode":"record"}`, true},
		{"unknown mode", `{"mode":"flannel","ipam":{"type":"host-local"}}`, true},
		{"not json", `{`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testcni.ParseConfig([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Errorf("ParseConfig(%s) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestHostVethName(t *testing.T) {
	for _, mode := range []string{testcni.ModeCalico, testcni.ModeVPC} {
		n := testcni.HostVethName(mode, strings.Repeat("a", 64), "eth0")
		if len(n) > 15 {
			t.Errorf("%s: %q is longer than 15 characters", mode, n)
		}
		if n == testcni.HostVethName(mode, strings.Repeat("b", 64), "eth0") {
			t.Errorf("%s: two containers got the same veth name %q", mode, n)
		}
	}
}
