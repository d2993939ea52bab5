package plugin_test

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/internal/nettest"
)

const prevResult = `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"0a:58:0a:63:00:05","sandbox":"%s"}],` +
	`"ips":[{"interface":0,"address":"10.99.0.5/24","gateway":"10.99.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}`

// TestPassThrough: a pod that is not a verified launcher pod comes out exactly as it came in,
// and its netns is not touched.
func TestPassThrough(t *testing.T) {
	c := nettest.NewCluster(t)
	value := `[{"name":"default","binding":"bridge"}]`
	deleted := launcherpod.PodRef{Namespace: "default", Name: "virt-launcher-a", UID: "6a0e7f1c-uid-of-the-deleted-pod"}
	good := launcherpod.SignPod(c.Key, deleted, value)
	signed := func(sig string) map[string]string {
		return map[string]string{launcherpod.AnnotationInterfaces: value, launcherpod.AnnotationSignature: sig}
	}
	tests := []struct {
		name        string
		keyFile     string
		stateDir    string // "-": none
		pod, uid    string
		annotations map[string]string
	}{
		{name: "no annotation", pod: "nginx", annotations: map[string]string{"foo": "bar"}},
		{name: "no annotations at all", pod: "nginx"},
		{name: "unsigned", pod: "virt-launcher-a", uid: deleted.UID, annotations: map[string]string{launcherpod.AnnotationInterfaces: value}},
		{name: "signature of another pod", pod: "nginx", uid: deleted.UID, annotations: signed(good)},
		{name: "annotations of a deleted launcher pod on a new pod of the same name", pod: "virt-launcher-a", uid: "9b3d2c4e-uid-of-the-new-pod", annotations: signed(good)},
		{name: "no pod UID in CNI_ARGS", pod: "virt-launcher-a", annotations: signed(good)},
		{name: "signature bound to the name only", pod: "virt-launcher-a", uid: "9b3d2c4e-uid-of-the-new-pod",
			annotations: signed(launcherpod.SignPod(c.Key, launcherpod.PodRef{Namespace: "default", Name: "virt-launcher-a"}, value))},
		{name: "tampered value", pod: "virt-launcher-a", uid: deleted.UID, annotations: map[string]string{
			launcherpod.AnnotationInterfaces: `[{"name":"default","binding":"masquerade"}]`, launcherpod.AnnotationSignature: good}},
		{name: "garbage signature", pod: "virt-launcher-a", uid: deleted.UID, annotations: signed("not-hex")},
		{name: "no key file on the node", keyFile: "/nonexistent/key", pod: "virt-launcher-a", uid: deleted.UID, annotations: signed(good)},
		{name: "broken entry (no state dir)", stateDir: "-", pod: "nginx", annotations: map[string]string{"a": "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			podNS := nettest.NewNS(t, "pod")
			nettest.Run(t, podNS, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
			nettest.Run(t, podNS, "ip", "addr", "add", "10.99.0.5/24", "dev", "eth0")
			before := links(t, podNS)
			keyFile := c.KeyFile
			if tt.keyFile != "" {
				keyFile = tt.keyFile
			}
			prev := fmt.Sprintf(prevResult, podNS.Path())
			stateDir := c.StateDir
			if tt.stateDir == "-" {
				stateDir = ""
			}
			conf := map[string]any{
				"cniVersion": "1.1.0", "name": "svtest", "type": "slimvirt", "signingKeyFile": keyFile, "stateDir": stateDir,
				"prevResult":    json.RawMessage(prev),
				"runtimeConfig": map[string]any{"io.kubernetes.cri.pod-annotations": tt.annotations},
			}
			args := "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + tt.pod
			if tt.uid != "" {
				args += ";K8S_POD_UID=" + tt.uid
			}
			out, err := nettest.ExecPlugin(c.PluginDir, "slimvirt", "ADD", podNS.Path(), "c1", args, nettest.MustJSON(conf))
			if err != nil {
				t.Fatal(err)
			}
			var got, want any
			_ = json.Unmarshal(out, &got)
			_ = json.Unmarshal([]byte(prev), &want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("result\n%s\nwant prevResult\n%s", out, prev)
			}
			if after := links(t, podNS); !reflect.DeepEqual(after, before) {
				t.Errorf("netns changed:\n%+v\nwant\n%+v", after, before)
			}
			if _, err := nettest.ExecPlugin(c.PluginDir, "slimvirt", "DEL", podNS.Path(), "c1", args, nettest.MustJSON(conf)); err != nil {
				t.Errorf("DEL: %v", err)
			}
			if after := links(t, podNS); !reflect.DeepEqual(after, before) {
				t.Errorf("DEL changed the netns:\n%+v", after)
			}
		})
	}
}

// TestRejectsInvalidSignedAnnotation: a signed annotation is still checked field by field; ADD
// fails with a clear error and leaves the pod as the cluster CNI made it.
func TestRejectsInvalidSignedAnnotation(t *testing.T) {
	c := nettest.NewCluster(t)
	chain := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	tests := []struct {
		name  string
		iface launcherpod.Interface
		want  string
	}{
		{"bad mac", launcherpod.Interface{Name: "default", Binding: "bridge", MAC: "zz:zz"}, "parse mac"},
		{"multicast mac", launcherpod.Interface{Name: "default", Binding: "bridge", MAC: "01:00:5e:00:00:01"}, "multicast"},
		{"unknown binding", launcherpod.Interface{Name: "default", Binding: "sriov"}, "not bridge or masquerade"},
		{"bad name", launcherpod.Interface{Name: "../etc", Binding: "bridge"}, "not a DNS label"},
		{"port out of range", launcherpod.Interface{Name: "default", Binding: "masquerade", Ports: []launcherpod.Port{{Protocol: "TCP", Port: 70000}}}, "out of range"},
		{"bad protocol", launcherpod.Interface{Name: "default", Binding: "masquerade", Ports: []launcherpod.Port{{Protocol: "SCTP", Port: 80}}}, "protocol"},
		{"bad cidr", launcherpod.Interface{Name: "default", Binding: "masquerade", VMNetworkCIDR: "10.0.2.0/31"}, "prefix"},
		{"cidr with host bits", launcherpod.Interface{Name: "default", Binding: "masquerade", VMNetworkCIDR: "10.0.2.1/24"}, "host bits"},
		{"negative tap owner", launcherpod.Interface{Name: "default", Binding: "bridge", TapOwner: new(int)}, ""},
	}
	*tests[len(tests)-1].iface.TapOwner = -5
	tests[len(tests)-1].want = "not a valid uid"
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			podNS := nettest.NewNS(t, "pod")
			pod := launcherPod(t, c.Key, fmt.Sprintf("virt-launcher-bad%d", i), podNS, []launcherpod.Interface{tt.iface})
			_, err := chain.Add(pod)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ADD = %v, want an error about %q", err, tt.want)
			}
			l := links(t, podNS)
			if l["eth0"].Type != "veth" || len(l["eth0"].Addrs) != 1 {
				t.Errorf("eth0 = %+v, want the cluster CNI's veth", l["eth0"])
			}
			if _, ok := l["k6t-eth0"]; ok {
				t.Error("k6t-eth0 exists after a rejected ADD")
			}
			if err := chain.Del(pod); err != nil {
				t.Errorf("DEL: %v", err)
			}
		})
	}
}

// TestAddRollsBack: a failure late in ADD (after the NIC was moved) leaves the netns as before.
func TestAddRollsBack(t *testing.T) {
	c := nettest.NewCluster(t)
	bridgeOnly := nettest.NewChain(t, c.Host, c.PluginDir, nettest.Conflist(c.BridgeEntry()))
	ours := bridgeOnly.WithList(t, nettest.Conflist(c.BridgeEntry(), c.Ours()))
	tests := []struct {
		name    string
		breakIt []string
	}{
		{"tap name taken", []string{"ip", "link", "add", "tap0", "type", "veth", "peer", "name", "tap0p"}},
		{"anti-spoofing chain taken", []string{"nft", "add table bridge slimvirt; add chain bridge slimvirt spoofcheck { type filter hook input priority 0; }"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			podNS := nettest.NewNS(t, "pod")
			iface := launcherpod.Interface{Name: "default", Binding: launcherpod.BindingBridge}
			pod := launcherPod(t, c.Key, fmt.Sprintf("virt-launcher-rb%d", i), podNS, []launcherpod.Interface{iface})
			if _, err := bridgeOnly.Add(pod); err != nil {
				t.Fatal(err)
			}
			if err := bridgeOnly.Del(pod); err != nil {
				t.Fatal(err)
			}
			nettest.Run(t, podNS, tt.breakIt[0], tt.breakIt[1:]...)
			if _, err := ours.Add(pod); err == nil {
				t.Fatal("ADD succeeded, want a failure")
			}
			after := links(t, podNS)
			for _, gone := range []string{"k6t-eth0", "eth0-nic", "eth0-twin"} {
				if _, ok := after[gone]; ok {
					t.Errorf("%s left after a failed ADD", gone)
				}
			}
			if e := after["eth0"]; e.Type != "veth" || len(e.Addrs) != 1 || !strings.Contains(strings.Join(e.Routes, ";"), "0.0.0.0/0 via "+c.Gateway) {
				t.Errorf("eth0 = %+v, want the veth with its address and default route", e)
			}
			if entries, _ := os.ReadDir(c.StateDir + "/attachments/svtest"); len(entries) != 0 {
				t.Errorf("state left after a failed ADD: %v", entries)
			}
			if err := ours.Del(pod); err != nil {
				t.Errorf("DEL: %v", err)
			}
		})
	}
}
