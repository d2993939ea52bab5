package launcher_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/control"
	"github.com/slimvirt/slimvirt/runtime/launcher"
)

// statsCall asks the launcher's control socket for the domain's statistics and returns them
// with the raw reply.
func statsCall(t *testing.T, r *run) (launcherpod.DomainStats, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := control.Call(ctx, filepath.Join(r.dir, "control.sock"), control.Stats)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	var st launcherpod.DomainStats
	dec := json.NewDecoder(bytes.NewReader([]byte(out)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("stats reply %q: %v", out, err)
	}
	return st, out
}

// waitStats calls stats until ok accepts them.
func waitStats(t *testing.T, r *run, timeout time.Duration, what string, ok func(launcherpod.DomainStats) bool) launcherpod.DomainStats {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, raw := statsCall(t, r)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats did not show %s in %s: %s", what, timeout, raw)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func diskNames(st launcherpod.DomainStats) []string {
	var out []string
	for _, d := range st.Disks {
		out = append(out, d.Name)
	}
	return out
}

// A guest with a containerDisk, an emptyDisk and a NIC on a tap, its launcher unprivileged as
// in a pod: the stats command reports it running with its vCPU and RAM, CPU time that grows,
// disk reads of the boot disk and the interface, all under the VMI's names; paused, it says so.
func TestStatsRunningGuest(t *testing.T) {
	needGuest(t)
	r := newRun(t)
	r.nonRoot = true
	copyDisk(t, filepath.Join(bins.guest, "disk.qcow2"), filepath.Join(r.path(launcherpod.ContainerDiskDir), "root"))
	vmi := testVMI("stats", 30,
		[]v1.Disk{
			{Name: "root", Disk: &v1.DiskTarget{Bus: "virtio"}},
			{Name: "scratch", Disk: &v1.DiskTarget{Bus: "virtio"}},
		},
		[]v1.Volume{
			{Name: "root", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "guest"}}},
			{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDisk: &v1.EmptyDiskSource{Capacity: resource.MustParse("64Mi")}}},
		})
	vmi.Spec.Domain.Devices.AutoattachPodInterface = nil
	vmi.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "podnet", Bridge: &v1.InterfaceBridge{}}}
	vmi.Spec.Networks = []v1.Network{{Name: "podnet", NetworkSource: v1.NetworkSource{Pod: &v1.PodNetwork{}}}}
	r.args = []string{"--tap=tap0"}
	r.start(vmi, "TAP=tap0")
	r.waitLine("SLIMVIRT-GUEST-UP", bootTimeout)

	first, raw := statsCall(t, r)
	t.Logf("stats: %s", raw)
	if first.State != "running" {
		t.Errorf("state %q, want running", first.State)
	}
	if first.VCPUs != 1 {
		t.Errorf("%d vCPUs, want 1", first.VCPUs)
	}
	if want := uint64(256 << 20); first.MemoryBytes != want {
		t.Errorf("memory %d bytes, want the 256Mi asked for (%d)", first.MemoryBytes, want)
	}
	// QEMU holds at least the guest's code and the part of its RAM the guest touched.
	if first.MemoryRSSBytes < 16<<20 {
		t.Errorf("QEMU's RSS %d bytes, want some MiB", first.MemoryRSSBytes)
	}
	if got := diskNames(first); !reflect.DeepEqual(got, []string{"root", "scratch"}) {
		t.Errorf("disks %v, want the VMI's root and scratch", got)
	}
	for _, d := range first.Disks {
		if d.Name == "root" && (d.ReadBytes == 0 || d.ReadOps == 0) {
			t.Errorf("root disk read %d bytes in %d requests, want the guest's boot reads", d.ReadBytes, d.ReadOps)
		}
	}
	if len(first.Interfaces) != 1 || first.Interfaces[0].Name != "podnet" {
		t.Errorf("interfaces %+v, want the VMI's podnet", first.Interfaces)
	} else if nic := first.Interfaces[0]; nic.TxPackets == 0 || nic.TxBytes == 0 {
		// The guest asks for a DHCP lease on every NIC at boot.
		t.Errorf("interface %+v: the guest sent nothing, want its DHCP requests", nic)
	}

	waitStats(t, r, 20*time.Second, "the CPU time grow", func(st launcherpod.DomainStats) bool {
		return st.CPUTimeNanos > first.CPUTimeNanos
	})

	if out, err := r.launcherCmd("ctl", "pause"); err != nil {
		t.Fatalf("pause: %v: %s", err, out)
	}
	waitStats(t, r, 10*time.Second, "state paused", func(st launcherpod.DomainStats) bool { return st.State == "paused" })
	if out, err := r.launcherCmd("ctl", "unpause"); err != nil {
		t.Fatalf("unpause: %v: %s", err, out)
	}
	waitStats(t, r, 10*time.Second, "state running", func(st launcherpod.DomainStats) bool { return st.State == "running" })
}

// statsDomainXML is a domain's live XML as libvirt returns it: the launcher's devices carry
// "ua-" aliases, devices libvirt added have its own.
const statsDomainXML = `<domain type='qemu' id='1'>
  <name>test_stats</name>
  <memory unit='KiB'>262144</memory>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/run/slimvirt/scratch/root.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <alias name='ua-root'/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/var/run/slimvirt/pvcs/data/disk.img'/>
      <target dev='vdb' bus='virtio'/>
      <alias name='ua-my-data_1'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
      <alias name='sata0-0-0'/>
    </disk>
    <interface type='ethernet'>
      <mac address='02:aa:bb:cc:dd:ee'/>
      <target dev='tap0' managed='no'/>
      <model type='virtio'/>
      <alias name='ua-default'/>
    </interface>
    <interface type='ethernet'>
      <target dev='vnet3'/>
      <alias name='net1'/>
    </interface>
  </devices>
</domain>`

// libvirt's disk and tap names map back to the VMI's through the "ua-" aliases; devices
// without one are not mapped.
func TestStatsDeviceNames(t *testing.T) {
	names, err := launcher.ParseDeviceNames(statsDomainXML)
	if err != nil {
		t.Fatal(err)
	}
	want := launcher.DeviceNames{
		Disks: map[string]string{"vda": "root", "vdb": "my-data_1"},
		NICs:  map[string]string{"tap0": "default"},
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("names %+v, want %+v", names, want)
	}
	if _, err := launcher.ParseDeviceNames("<domain"); err == nil {
		t.Error("broken XML parsed")
	}
}

// libvirt's statistics become the reply: KiB become bytes, devices get the VMI's names or keep
// libvirt's, and what libvirt did not report stays 0.
func TestStatsConvert(t *testing.T) {
	names, err := launcher.ParseDeviceNames(statsDomainXML)
	if err != nil {
		t.Fatal(err)
	}
	in := libvirt.DomainStats{
		State: &libvirt.DomainStatsState{StateSet: true, State: libvirt.DOMAIN_PAUSED},
		Cpu:   &libvirt.DomainStatsCPU{TimeSet: true, Time: 1234567890},
		Balloon: &libvirt.DomainStatsBalloon{
			CurrentSet: true, Current: 262144, MaximumSet: true, Maximum: 262144, RssSet: true, Rss: 102400,
		},
		Vcpu: []libvirt.DomainStatsVcpu{
			{StateSet: true, State: libvirt.VCPU_RUNNING},
			{StateSet: true, State: libvirt.VCPU_RUNNING},
			{StateSet: true, State: libvirt.VCPU_OFFLINE},
		},
		Block: []libvirt.DomainStatsBlock{
			{NameSet: true, Name: "vda", RdBytes: 1000, RdReqs: 10, WrBytes: 2000, WrReqs: 20, FlReqs: 3},
			{NameSet: true, Name: "sda", RdBytes: 5},
		},
		Net: []libvirt.DomainStatsNet{
			{NameSet: true, Name: "tap0", RxBytes: 1, TxBytes: 2, RxPkts: 3, TxPkts: 4, RxErrs: 5, TxErrs: 6, RxDrop: 7, TxDrop: 8},
			{NameSet: true, Name: "vnet3"},
		},
	}
	want := launcherpod.DomainStats{
		State:          "paused",
		CPUTimeNanos:   1234567890,
		VCPUs:          2,
		MemoryBytes:    256 << 20,
		MemoryRSSBytes: 100 << 20,
		Disks: []launcherpod.DiskStats{
			{Name: "root", ReadBytes: 1000, ReadOps: 10, WriteBytes: 2000, WriteOps: 20, FlushOps: 3},
			{Name: "sda", ReadBytes: 5},
		},
		Interfaces: []launcherpod.NICStats{
			{Name: "default", RxBytes: 1, TxBytes: 2, RxPackets: 3, TxPackets: 4, RxErrors: 5, TxErrors: 6, RxDropped: 7, TxDropped: 8},
			{Name: "vnet3"},
		},
	}
	if got := launcher.ConvertStats(&in, names); !reflect.DeepEqual(got, want) {
		t.Errorf("stats\n%+v\nwant\n%+v", got, want)
	}
	// A domain libvirt says little about: nothing is made up.
	got := launcher.ConvertStats(&libvirt.DomainStats{}, launcher.DeviceNames{})
	if !reflect.DeepEqual(got, launcherpod.DomainStats{}) {
		t.Errorf("stats of nothing %+v, want zero", got)
	}
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"state":"","cpuTimeNanos":0,"vcpus":0,"memoryBytes":0,"memoryRSSBytes":0}`; string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
}
