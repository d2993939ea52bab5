package expose

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestService(t *testing.T) {
	sel := map[string]string{"kubevirt.io/domain": "win10"}
	tests := []struct {
		name     string
		sel      map[string]string
		opts     Options
		wantErr  string
		wantType corev1.ServiceType
		wantTgt  intstr.IntOrString
		wantProt corev1.Protocol
	}{
		{"rdp nodeport as in the guide", sel, Options{Name: "windows-app-server", Port: 27017, TargetPort: "3389", Type: "NodePort"}, "", corev1.ServiceTypeNodePort, intstr.FromInt32(3389), corev1.ProtocolTCP},
		{"defaults", sel, Options{Name: "web", Port: 80}, "", corev1.ServiceTypeClusterIP, intstr.FromInt32(80), corev1.ProtocolTCP},
		{"named target port, udp, lb", sel, Options{Name: "dns", Port: 53, TargetPort: "dns", Protocol: "udp", Type: "LoadBalancer"}, "", corev1.ServiceTypeLoadBalancer, intstr.FromString("dns"), corev1.ProtocolUDP},
		{"no name", sel, Options{Port: 80}, "--name is required", "", intstr.IntOrString{}, ""},
		{"port zero", sel, Options{Name: "x"}, "--port must be 1-65535", "", intstr.IntOrString{}, ""},
		{"bad type", sel, Options{Name: "x", Port: 80, Type: "External"}, "--type must be", "", intstr.IntOrString{}, ""},
		{"bad protocol", sel, Options{Name: "x", Port: 80, Protocol: "ICMP"}, "--protocol must be", "", intstr.IntOrString{}, ""},
		{"bad target port", sel, Options{Name: "x", Port: 80, TargetPort: "70000"}, "--target-port must be", "", intstr.IntOrString{}, ""},
		{"no labels", nil, Options{Name: "x", Port: 80}, "no labels", "", intstr.IntOrString{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, err := Service("VirtualMachine", "vm1", tt.sel, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := svc.Spec.Ports[0]
			if svc.Spec.Type != tt.wantType || p.TargetPort != tt.wantTgt || p.Protocol != tt.wantProt || p.Port != tt.opts.Port {
				t.Fatalf("got type %s port %d target %v proto %s", svc.Spec.Type, p.Port, p.TargetPort, p.Protocol)
			}
			if svc.Spec.Selector["kubevirt.io/domain"] != "win10" || len(svc.Spec.Selector) != 1 {
				t.Fatalf("selector = %v", svc.Spec.Selector)
			}
		})
	}
}

func TestServiceCopiesSelector(t *testing.T) {
	sel := map[string]string{"app": "a"}
	svc, err := Service("VirtualMachineInstance", "v", sel, Options{Name: "s", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	sel["app"] = "changed"
	if svc.Spec.Selector["app"] != "a" {
		t.Fatal("Service shares the caller's selector map")
	}
}
