package netconf

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/pkg/version"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

var fuzzKey = []byte("fuzz-signing-key")

// checkAccepted fails when an accepted list is one the plugin must not act on.
func checkAccepted(t *testing.T, ifaces []VMInterface) {
	t.Helper()
	if len(ifaces) == 0 || len(ifaces) > MaxInterfaces {
		t.Fatalf("accepted %d interfaces", len(ifaces))
	}
	if err := Validate(ifaces); err != nil {
		t.Fatalf("accepted interfaces that do not validate: %v", err)
	}
	for _, i := range ifaces {
		if i.Binding != launcherpod.BindingBridge && i.Binding != launcherpod.BindingMasquerade {
			t.Fatalf("accepted binding %q", i.Binding)
		}
		if i.MAC != "" {
			if _, err := GuestMAC(i.MAC); err != nil {
				t.Fatalf("accepted mac %q: %v", i.MAC, err)
			}
		}
		if i.Binding == launcherpod.BindingMasquerade {
			if _, err := VMNetwork(i.VMNetworkCIDR); err != nil {
				t.Fatalf("accepted vmNetworkCIDR %q: %v", i.VMNetworkCIDR, err)
			}
		}
		if i.Queues < 0 || i.Queues > MaxQueues || len(i.Ports) > 128 {
			t.Fatalf("accepted queues %d, %d ports", i.Queues, len(i.Ports))
		}
	}
}

// FuzzParse reads a network configuration as the plugin does on ADD: the stdin config, its
// prevResult, CNI_ARGS, and the interfaces annotation from runtimeConfig. The annotation is
// signed here, as the controller signs what it builds from a tenant's VMI, so the checks behind
// the signature are reached too.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"slimvirt","stateDir":"/var/lib/slimvirt/cni",`+
		`"signingKeyFile":"/etc/slimvirt/key","prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],`+
		`"ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":0}]},`+
		`"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"slimvirt.io/interfaces":"[{\"name\":\"default\",\"binding\":\"bridge\"}]"}}}`),
		"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=virt-launcher-a;K8S_POD_UID=3f1c2e9a-0b7d-4c55-9d2e-6a1b8c0d4e7f")
	f.Add([]byte(`{"cniVersion":"0.3.1","type":"slimvirt","prevResult":{"ips":[{"version":"4","address":"10.0.0.2/32"}]},`+
		`"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"slimvirt.io/interfaces":"[{\"name\":\"default\",\"binding\":\"masquerade\",\"vmNetworkCIDR\":\"10.0.2.0/24\",\"ports\":[{\"protocol\":\"TCP\",\"port\":80}]}]"}}}`),
		"K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u-1")
	f.Add([]byte(`{"type":"slimvirt","stateDir":"relative","prevResult":null}`), "")
	f.Add([]byte(`{"prevResult":{"cniVersion":"9.9.9"}}`), "K8S_POD_NAME")
	f.Add([]byte(`{`), "=;=")
	f.Fuzz(func(t *testing.T, stdin []byte, args string) {
		conf, err := Parse(stdin)
		if err != nil {
			if conf != nil {
				t.Fatal("Parse returned a config with its error")
			}
			return
		}
		_ = conf.CheckStateDir()
		if conf.RawPrevResult != nil {
			_ = version.ParsePrevResult(&conf.PluginConf)
		}
		pod, err := ParseArgs(args)
		if err != nil {
			return
		}
		annotations := map[string]string{}
		for k, v := range conf.RuntimeConfig.PodAnnotations {
			annotations[k] = v
		}
		if v, ok := annotations[launcherpod.AnnotationInterfaces]; ok {
			annotations[launcherpod.AnnotationSignature] = launcherpod.SignPod(fuzzKey, pod, v)
		}
		ifaces, err := Interfaces(fuzzKey, pod, annotations)
		if err == nil && ifaces != nil {
			checkAccepted(t, ifaces)
		}
	})
}

// FuzzInterfaces checks a signed interfaces annotation: accepted lists are valid, the rest are
// errors, and an unsigned annotation is never acted on.
func FuzzInterfaces(f *testing.F) {
	for _, seed := range []string{
		`[{"name":"default","binding":"bridge","tapOwner":107,"queues":4,"mac":"02:00:00:00:00:01"}]`,
		`[{"name":"default","binding":"masquerade","vmNetworkCIDR":"192.168.7.4/30","ports":[{"protocol":"UDP","port":53}]}]`,
		`[{"name":"a","binding":"bridge"},{"name":"b","binding":"bridge"}]`,
		`[{"name":"default","binding":"masquerade","vmNetworkCIDR":"fd10::/120"}]`,
		`[{"name":"default","binding":"bridge","mac":"01:00:5e:00:00:01","tapOwner":-1}]`,
		`[]`, `null`, `{}`, `[null]`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		unsigned := map[string]string{launcherpod.AnnotationInterfaces: value, launcherpod.AnnotationSignature: "x"}
		ref := launcherpod.PodRef{Namespace: "ns", Name: "p", UID: "5e0c6f43-2d8b-4f0e-8a57-1c9b2d3e4f60"}
		if ifaces, err := Interfaces(fuzzKey, ref, unsigned); ifaces != nil || err != nil {
			t.Fatalf("unsigned annotation acted on: %v, %v", ifaces, err)
		}
		signed := map[string]string{launcherpod.AnnotationInterfaces: value,
			launcherpod.AnnotationSignature: launcherpod.SignPod(fuzzKey, ref, value)}
		ifaces, err := Interfaces(fuzzKey, ref, signed)
		if err != nil {
			if ifaces != nil {
				t.Fatal("interfaces returned with an error")
			}
			return
		}
		if ifaces == nil {
			t.Fatal("a signed annotation was neither accepted nor refused")
		}
		checkAccepted(t, ifaces)
		if _, err := json.Marshal(ifaces); err != nil {
			t.Fatalf("accepted interfaces do not encode: %v", err)
		}
	})
}
