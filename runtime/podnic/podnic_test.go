package podnic

import (
	"context"
	"net"
	"testing"

	"k8s.io/utils/ptr"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// For takes the interface, model and hostname from the VMI as the CNI plugin sees it.
func TestFor(t *testing.T) {
	vmi := &v1.VirtualMachineInstance{}
	vmi.Name = "vm"
	b, err := For(vmi)
	if err != nil || b == nil {
		t.Fatalf("no interface listed: %v, %v", b, err)
	}
	if b.iface.Name != v1.DefaultInterfaceName || b.iface.Binding != launcherpod.BindingBridge || b.model != "" || b.hostname != "vm" {
		t.Errorf("no interface listed: %+v", b)
	}

	vmi.Spec.Hostname = "web"
	vmi.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "net0", Model: "e1000", Masquerade: &v1.InterfaceMasquerade{}}}
	if b, err = For(vmi); err != nil {
		t.Fatal(err)
	}
	if b.iface.Name != "net0" || b.iface.Binding != launcherpod.BindingMasquerade || b.model != "e1000" || b.hostname != "web" {
		t.Errorf("a masquerade e1000 interface: %+v", b)
	}

	vmi.Spec.Domain.Devices.Interfaces = append(vmi.Spec.Domain.Devices.Interfaces, v1.Interface{Name: "net1"})
	if _, err := For(vmi); err == nil {
		t.Error("two interfaces: no error")
	}

	vmi.Spec.Domain.Devices.Interfaces = nil
	vmi.Spec.Domain.Devices.AutoattachPodInterface = ptr.To(false)
	if b, err := For(vmi); err != nil || b != nil {
		t.Errorf("no pod interface: %v, %v", b, err)
	}
}

// Serving a binding that was never prepared fails instead of serving nothing.
func TestServeUnprepared(t *testing.T) {
	b, err := For(&v1.VirtualMachineInstance{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(context.Background(), nil); err == nil {
		t.Error("Serve of an unprepared binding: no error")
	}
}

// A tap that does not exist is an error, not a NIC QEMU then fails to open.
func TestTapMissing(t *testing.T) {
	if _, err := (&Tap{Tap: "slimvirt-no-such-tap"}).Prepare(context.Background()); err == nil {
		t.Error("a missing tap: no error")
	}
}

// The loopback device stands in for a tap: its MTU is taken, and a random local unicast MAC
// is made when none is given.
func TestTapPrepare(t *testing.T) {
	nics, err := (&Tap{Tap: "lo"}).Prepare(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nics) != 1 || nics[0].Tap != "lo" || nics[0].MTU <= 0 || len(nics[0].MAC) != 17 {
		t.Fatalf("NICs %+v", nics)
	}
	mac, err := net.ParseMAC(nics[0].MAC)
	if err != nil || mac[0]&0x03 != 0x02 {
		t.Errorf("MAC %s is not local unicast", nics[0].MAC)
	}
	nics, err = (&Tap{Tap: "lo", MAC: "02:00:00:00:00:01", MTU: 1400}).Prepare(context.Background())
	if err != nil || nics[0].MAC != "02:00:00:00:00:01" || nics[0].MTU != 1400 {
		t.Errorf("given MAC and MTU: %+v, %v", nics, err)
	}
}
