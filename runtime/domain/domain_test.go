package domain

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden domain XML files")

func loadVMI(t *testing.T, name string) *v1.VirtualMachineInstance {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	vmi := &v1.VirtualMachineInstance{}
	if err := yaml.UnmarshalStrict(b, vmi); err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return vmi
}

// podSources are the sources the launcher prepares in a launcher pod for the seed VMIs.
var podSources = map[string]DiskSource{
	"containerdisk":       {Path: "/var/run/slimvirt/scratch/containerdisk.qcow2", Format: "qcow2", Cache: "none"},
	"emptydisk":           {Path: "/var/run/slimvirt/scratch/emptydisk.img", Format: "raw", Cache: "none"},
	"cloudinitdisk":       {Path: "/var/run/slimvirt/scratch/cloudinitdisk.iso", Format: "raw", Cache: "none", ReadOnly: true},
	"cdromiso":            {Path: "/var/run/slimvirt/pvcs/cdromiso/disk.img", Format: "raw", Cache: "none"},
	"harddrive":           {Path: "/var/run/slimvirt/pvcs/harddrive/disk.img", Format: "raw", Cache: "none"},
	"virtiocontainerdisk": {Path: "/var/run/slimvirt/scratch/virtiocontainerdisk.qcow2", Format: "qcow2", Cache: "writethrough"},
	"hostdisk":            {Path: "/var/run/slimvirt/hostdisks/hostdisk/disk.img", Format: "raw", Cache: "none"},
}

func podOptions(accel string, nics []NIC) Options {
	return Options{
		Accelerator:  accel,
		Disks:        podSources,
		NICs:         nics,
		SerialSocket: "/var/run/slimvirt/serial0",
		VNCSocket:    "/var/run/slimvirt/vnc",
		// The guest agent channel is in every launcher's domain.
		GuestAgentSocket: "/var/run/slimvirt/guest-agent.sock",
		Firmware:         DebianFirmware("/var/run/slimvirt/scratch"),
	}
}

// The seed's VMIs produce the reviewed domain XML in testdata/*.xml (go test -update rewrites).
func TestGolden(t *testing.T) {
	tests := []struct {
		vmi, golden string
		opts        Options
	}{
		{"linux-vmi.yaml", "linux-vmi.kvm.xml", podOptions(AccelKVM, []NIC{{Name: "default", Tap: "tap0", MAC: "0a:58:0a:f4:00:07", MTU: 1450}})},
		{"linux-vmi.yaml", "linux-vmi.tcg.xml", podOptions(AccelTCG, []NIC{{Name: "default", Tap: "tap0", MAC: "0a:58:0a:f4:00:07", MTU: 1450}})},
		{"windows-vmi.yaml", "windows-vmi.kvm.xml", podOptions(AccelKVM, []NIC{{Name: "default", Tap: "tap0", MAC: "02:00:00:5e:10:01", MTU: 1500, Model: "e1000"}})},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			d, err := Convert(loadVMI(t, tc.vmi), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got+"\n" != string(want) {
				t.Errorf("domain XML differs from %s (go test -update to accept):\n%s", path, got)
			}
		})
	}
}

func baseVMI() *v1.VirtualMachineInstance {
	return &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "ns"},
		Spec: v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{
			Memory: &v1.Memory{Guest: ptr.To(resource.MustParse("256Mi"))},
		}},
	}
}

// Each spec choice shows up in the XML the way libvirt expects it.
func TestConvertChoices(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*v1.VirtualMachineInstance)
		opts    Options
		want    []string
		notWant []string
		wantErr string
	}{
		{
			name: "TCG uses a safe model even when host-model is asked for",
			mutate: func(v *v1.VirtualMachineInstance) {
				v.Spec.Domain.CPU = &v1.CPU{Model: "host-model", Sockets: 2, Cores: 2, Threads: 1}
			},
			opts: Options{Accelerator: AccelTCG},
			want: []string{`<domain type="qemu">`, `<model fallback="allow">qemu64</model>`, `<topology sockets="2" cores="2" threads="1">`, `<vcpu placement="static">4</vcpu>`},
		},
		{
			name:   "KVM defaults to host-model",
			mutate: func(v *v1.VirtualMachineInstance) {},
			opts:   Options{Accelerator: AccelKVM},
			want:   []string{`<domain type="kvm">`, `<cpu mode="host-model">`, `<type arch="x86_64" machine="q35">hvm</type>`},
		},
		{
			name: "named CPU model and pc machine",
			mutate: func(v *v1.VirtualMachineInstance) {
				v.Spec.Domain.CPU = &v1.CPU{Model: "Skylake-Server"}
				v.Spec.Domain.Machine = &v1.Machine{Type: "pc"}
			},
			opts: Options{Accelerator: AccelKVM},
			want: []string{`<cpu match="exact" mode="custom">`, `Skylake-Server`, `machine="pc"`},
		},
		{
			name: "EFI with Secure Boot turns SMM on",
			mutate: func(v *v1.VirtualMachineInstance) {
				v.Spec.Domain.Firmware = &v1.Firmware{Bootloader: &v1.Bootloader{EFI: &v1.EFI{SecureBoot: ptr.To(true)}}, Serial: "abc123", UUID: "11111111-2222-3333-4444-555555555555"}
			},
			opts: Options{Accelerator: AccelKVM, Firmware: DebianFirmware("/nv")},
			want: []string{`<loader readonly="yes" secure="yes" type="pflash">/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader>`, `<nvram template="/usr/share/OVMF/OVMF_VARS_4M.ms.fd">/nv/ns_vm_VARS.fd</nvram>`, `<smm state="on">`, `<entry name="serial">abc123</entry>`, `<uuid>11111111-2222-3333-4444-555555555555</uuid>`, `<model type="bochs"`},
		},
		{
			name: "BIOS on the serial console",
			mutate: func(v *v1.VirtualMachineInstance) {
				v.Spec.Domain.Firmware = &v1.Firmware{Bootloader: &v1.Bootloader{BIOS: &v1.BIOS{UseSerial: ptr.To(true)}}}
			},
			opts: Options{Accelerator: AccelKVM},
			want: []string{`<bios useserial="yes">`},
		},
		{
			name: "kernel boot",
			mutate: func(v *v1.VirtualMachineInstance) {
				v.Spec.Domain.Firmware = &v1.Firmware{KernelBoot: &v1.KernelBoot{KernelArgs: "console=ttyS0"}}
			},
			opts: Options{Accelerator: AccelKVM, Kernel: "/k/kernel", Initrd: "/k/initrd"},
			want: []string{`<kernel>/k/kernel</kernel>`, `<initrd>/k/initrd</initrd>`, `<cmdline>console=ttyS0</cmdline>`},
		},
		{
			name: "scsi disk adds one virtio-scsi controller; lun needs a block device",
			mutate: func(v *v1.VirtualMachineInstance) {
				v.Spec.Domain.Devices.Disks = []v1.Disk{
					{Name: "a", Disk: &v1.DiskTarget{Bus: "scsi"}, Serial: "SER1"},
					{Name: "b", LUN: &v1.LunTarget{Bus: "scsi"}},
					{Name: "c", Disk: &v1.DiskTarget{ReadOnly: true}, Cache: "writeback"},
				}
			},
			opts: Options{Accelerator: AccelKVM, Disks: map[string]DiskSource{
				"a": {Path: "/a", Format: "raw", Cache: "none"},
				"b": {Path: "/dev/b", Block: true, Format: "raw", Cache: "none"},
				"c": {Path: "/c", Format: "qcow2", Cache: "none"},
			}},
			want: []string{`<controller type="scsi" index="0" model="virtio-scsi">`, `<target dev="sda" bus="scsi">`, `<serial>SER1</serial>`, `<disk type="block" device="lun">`, `<source dev="/dev/b">`, `io="native"`, `<target dev="sdb" bus="scsi">`, `<driver name="qemu" type="qcow2" cache="writeback" error_policy="stop">`, `<readonly>`},
		},
		{
			name: "lun on a file is refused",
			mutate: func(v *v1.VirtualMachineInstance) {
				v.Spec.Domain.Devices.Disks = []v1.Disk{{Name: "b", LUN: &v1.LunTarget{}}}
			},
			opts:    Options{Accelerator: AccelKVM, Disks: map[string]DiskSource{"b": {Path: "/b", Format: "raw"}}},
			wantErr: "block",
		},
		{
			name:    "a disk without a prepared volume is refused",
			mutate:  func(v *v1.VirtualMachineInstance) { v.Spec.Domain.Devices.Disks = []v1.Disk{{Name: "x"}} },
			opts:    Options{Accelerator: AccelKVM},
			wantErr: "disk x",
		},
		{
			name: "no serial console, no graphics",
			mutate: func(v *v1.VirtualMachineInstance) {
				v.Spec.Domain.Devices.AutoattachSerialConsole = ptr.To(false)
				v.Spec.Domain.Devices.AutoattachGraphicsDevice = ptr.To(false)
			},
			opts:    Options{Accelerator: AccelKVM},
			notWant: []string{"<serial", "<console", "<graphics", "<video"},
		},
		{
			name: "multiqueue virtio NIC with a boot order",
			mutate: func(v *v1.VirtualMachineInstance) {
				v.Spec.Domain.CPU = &v1.CPU{Cores: 2}
				v.Spec.Domain.Devices.NetworkInterfaceMultiQueue = ptr.To(true)
				v.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "default", BootOrder: ptr.To(uint(3))}}
			},
			opts: Options{Accelerator: AccelKVM, NICs: []NIC{{Name: "default", Tap: "tap0", MAC: "02:00:00:00:00:01", MTU: 9000}}},
			want: []string{`<interface type="ethernet">`, `<target dev="tap0" managed="no">`, `<mac address="02:00:00:00:00:01">`, `<model type="virtio">`, `<driver queues="2">`, `<mtu size="9000">`, `<boot order="3">`},
		},
		{
			name:   "clock offset and timezone",
			mutate: func(v *v1.VirtualMachineInstance) { v.Spec.Domain.Clock = &v1.Clock{Timezone: ptr.To("Europe/Berlin")} },
			opts:   Options{Accelerator: AccelKVM},
			want:   []string{`<clock offset="timezone" timezone="Europe/Berlin">`},
		},
		{
			name:    "memory is required",
			mutate:  func(v *v1.VirtualMachineInstance) { v.Spec.Domain.Memory = nil },
			opts:    Options{Accelerator: AccelKVM},
			wantErr: "memory",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vmi := baseVMI()
			tc.mutate(vmi)
			d, err := Convert(vmi, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			x, err := d.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(x, w) {
					t.Errorf("XML lacks %s:\n%s", w, x)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(x, w) {
					t.Errorf("XML has %s:\n%s", w, x)
				}
			}
		})
	}
}

func TestUUIDStable(t *testing.T) {
	a, b := baseVMI(), baseVMI()
	if UUID(a) != UUID(b) {
		t.Fatal("same name, different UUIDs")
	}
	b.Name = "other"
	if UUID(a) == UUID(b) {
		t.Fatal("different names, same UUID")
	}
	if u := UUID(a); len(u) != 36 || u[14] != '5' {
		t.Fatalf("UUID %s is not a version-5 UUID", u)
	}
}

func TestTargetName(t *testing.T) {
	for n, want := range map[int]string{0: "vda", 25: "vdz", 26: "vdaa", 27: "vdab"} {
		if got := targetName("vd", n); got != want {
			t.Errorf("targetName(%d) = %s, want %s", n, got, want)
		}
	}
}

// The domain takes the guest's memory, vCPUs and NIC queues from the API's rules, the same the
// launcher pod's memory request and the CNI plugin's taps (launcherpod.Interface.Queues) follow:
// a tap made with another queue count than QEMU opens it with is refused by the kernel.
func TestFactsFromTheAPI(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*v1.VirtualMachineInstance)
	}{
		{"defaults", func(*v1.VirtualMachineInstance) {}},
		{"memory request, rounded up to MiB", func(v *v1.VirtualMachineInstance) {
			v.Spec.Domain.Memory = nil
			v.Spec.Domain.Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1G")}
		}},
		{"multi-queue over 2x2x2 vCPUs, virtio and e1000", func(v *v1.VirtualMachineInstance) {
			v.Spec.Domain.CPU = &v1.CPU{Sockets: 2, Cores: 2, Threads: 2}
			v.Spec.Domain.Devices.NetworkInterfaceMultiQueue = ptr.To(true)
			v.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "a"}, {Name: "b", Model: "e1000"}, {Name: "c", Model: "virtio"}}
		}},
		{"multi-queue on one vCPU", func(v *v1.VirtualMachineInstance) {
			v.Spec.Domain.Devices.NetworkInterfaceMultiQueue = ptr.To(true)
			v.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "a"}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vmi := baseVMI()
			tt.mutate(vmi)
			var nics []NIC
			models := map[string]string{}
			for _, i := range vmi.Spec.Domain.Devices.Interfaces {
				models[i.Name] = i.Model
			}
			ifaces := vmi.LauncherInterfaces()
			for n, i := range ifaces {
				nics = append(nics, NIC{Name: i.Name, Tap: fmt.Sprintf("tap%d", n), Model: models[i.Name]})
			}
			d, err := Convert(vmi, Options{Accelerator: AccelKVM, NICs: nics})
			if err != nil {
				t.Fatal(err)
			}
			mem, _ := vmi.Spec.Domain.GuestMemory()
			if d.Memory.Unit != "MiB" || int64(d.Memory.Value) != (mem.Value()+1<<20-1)>>20 {
				t.Errorf("memory %d %s, want %s in whole MiB", d.Memory.Value, d.Memory.Unit, mem.String())
			}
			if int(d.VCPU.Value) != vmi.Spec.Domain.CPU.VCPUs() {
				t.Errorf("%d vCPUs, want %d", d.VCPU.Value, vmi.Spec.Domain.CPU.VCPUs())
			}
			for n, i := range ifaces {
				queues := 0
				if drv := d.Devices.Interfaces[n].Driver; drv != nil {
					queues = int(drv.Queues)
				}
				if queues != i.Queues {
					t.Errorf("interface %s: QEMU opens %d queues, the CNI plugin makes %d", i.Name, queues, i.Queues)
				}
			}
		})
	}
}
