// Package domain converts a VirtualMachineInstance into libvirt domain XML. It is pure: every
// path, device and host fact it needs (disk sources, NICs, accelerator, firmware files) comes
// in through Options, prepared by the launcher, so the conversion is tested without a host.
package domain

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"libvirt.org/go/libvirtxml"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Accelerators.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// TCGModel is the CPU model a TCG guest gets when the spec names none or asks for the host's:
// qemu64 is emulated completely by TCG on every QEMU version, so it never fails to start.
const TCGModel = "qemu64"

// TCGCacheMiB caps TCG's translation cache. QEMU sizes it at up to 1 GiB and fills it as the
// guest runs new code, which made QEMU's overhead the largest item of an emulated VM; a small
// guest boots as fast with 64 MiB.
const TCGCacheMiB = 64

// DiskSource is where a volume's data lives in the pod, resolved by the launcher.
type DiskSource struct {
	// Block is true for a block device, false for a file.
	Block bool
	Path  string
	// Format is raw or qcow2.
	Format string
	// Cache is the cache mode chosen for the source (none when O_DIRECT works, else
	// writethrough); a disk's own cache setting wins.
	Cache string
	// ReadOnly forces the disk read-only whatever the disk says (cloud-init ISOs, read-only PVCs).
	ReadOnly bool
}

// NIC is a tap device prepared for one VMI interface.
type NIC struct {
	// Name is the VMI interface name.
	Name string
	Tap  string
	MAC  string
	MTU  int
	// Model is virtio, e1000, e1000e or rtl8139; virtio when empty.
	Model string
}

// Firmware files on the host.
type Firmware struct {
	// EFICode and EFIVars are OVMF's code and variable-store template; the Secure Boot pair is
	// used when the spec asks for Secure Boot.
	EFICode, EFIVars             string
	EFISecureCode, EFISecureVars string
	// NVRAMDir holds the guest's own copy of the variable store.
	NVRAMDir string
}

// DebianFirmware is where Debian's ovmf package puts OVMF.
func DebianFirmware(nvramDir string) Firmware {
	return Firmware{
		EFICode:       "/usr/share/OVMF/OVMF_CODE_4M.fd",
		EFIVars:       "/usr/share/OVMF/OVMF_VARS_4M.fd",
		EFISecureCode: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
		EFISecureVars: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
		NVRAMDir:      nvramDir,
	}
}

// Options are the host facts the conversion needs.
type Options struct {
	// Accelerator is AccelKVM or AccelTCG.
	Accelerator string
	// Disks maps a volume name to its source.
	Disks map[string]DiskSource
	// NICs are the prepared interfaces, in spec order.
	NICs         []NIC
	SerialSocket string
	VNCSocket    string
	// GuestAgentSocket, when set, is where the guest agent's virtio-serial channel
	// (org.qemu.guest_agent.0) is served; libvirt talks to the agent through it.
	GuestAgentSocket string
	Firmware         Firmware
	// Kernel and Initrd are the kernelBoot files in the pod.
	Kernel, Initrd string
}

// GuestAgentChannel is the virtio-serial port name a QEMU guest agent opens in the guest.
const GuestAgentChannel = "org.qemu.guest_agent.0"

// Name is the libvirt domain name of a VMI (namespace_name, as KubeVirt names it).
func Name(vmi *v1.VirtualMachineInstance) string {
	return vmi.Namespace + "_" + vmi.Name
}

// uuidNamespace makes SMBIOS UUIDs derived from VMI names stable and ours.
const uuidNamespace = "slimvirt.io/vmi/"

// UUID is the SMBIOS system UUID: the spec's, or a name-based (version 5 style) one derived
// from the VMI's name, so it stays the same across restarts of the same VMI.
func UUID(vmi *v1.VirtualMachineInstance) string {
	if fw := vmi.Spec.Domain.Firmware; fw != nil && fw.UUID != "" {
		return string(fw.UUID)
	}
	sum := sha1.Sum([]byte(uuidNamespace + vmi.Name))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Convert builds the domain for a VMI.
func Convert(vmi *v1.VirtualMachineInstance, opts Options) (*libvirtxml.Domain, error) {
	spec := &vmi.Spec.Domain
	mem, ok := spec.GuestMemory()
	if !ok {
		return nil, errors.New("no guest memory: set spec.domain.memory.guest or spec.domain.resources.requests.memory")
	}
	d := &libvirtxml.Domain{
		Type: "qemu",
		Name: Name(vmi),
		UUID: UUID(vmi),
		// Whole MiB: QEMU rounds guest RAM anyway and libvirt reports in KiB.
		Memory:     &libvirtxml.DomainMemory{Value: uint((mem.Value() + (1<<20 - 1)) >> 20), Unit: "MiB"},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		PM: &libvirtxml.DomainPM{
			SuspendToMem:  &libvirtxml.DomainPMPolicy{Enabled: "no"},
			SuspendToDisk: &libvirtxml.DomainPMPolicy{Enabled: "no"},
		},
		Devices: &libvirtxml.DomainDeviceList{
			// No balloon and no USB controller unless asked for: both cost memory and a
			// PCI slot and nothing here uses them.
			MemBalloon:  &libvirtxml.DomainMemBalloon{Model: "none"},
			Controllers: []libvirtxml.DomainController{{Type: "usb", Model: "none"}},
		},
	}
	switch opts.Accelerator {
	case AccelKVM:
		d.Type = "kvm"
	case AccelTCG:
	default:
		return nil, fmt.Errorf("unknown accelerator %q", opts.Accelerator)
	}
	d.SysInfo = sysInfo(vmi, d.UUID)
	d.CPU, d.VCPU = cpu(spec.CPU, opts.Accelerator)
	var err error
	if d.OS, err = osSection(vmi, opts); err != nil {
		return nil, err
	}
	d.Features = features(spec)
	if opts.Accelerator == AccelTCG {
		d.Features.TCG = &libvirtxml.DomainFeatureTCG{TBCache: &libvirtxml.DomainFeatureTCGTBCache{Unit: "MiB", Size: TCGCacheMiB}}
	}
	d.Clock = clock(spec.Clock)
	if err := addDisks(d, vmi, opts.Disks); err != nil {
		return nil, err
	}
	if err := addInterfaces(d, vmi, opts.NICs); err != nil {
		return nil, err
	}
	addConsoles(d, vmi, opts)
	return d, nil
}

func sysInfo(vmi *v1.VirtualMachineInstance, uuid string) []libvirtxml.DomainSysInfo {
	entries := []libvirtxml.DomainSysInfoEntry{
		{Name: "manufacturer", Value: "slimvirt"},
		{Name: "product", Value: "None"},
		{Name: "uuid", Value: uuid},
	}
	if fw := vmi.Spec.Domain.Firmware; fw != nil && fw.Serial != "" {
		entries = append(entries, libvirtxml.DomainSysInfoEntry{Name: "serial", Value: fw.Serial})
	}
	return []libvirtxml.DomainSysInfo{{SMBIOS: &libvirtxml.DomainSysInfoSMBIOS{
		System: &libvirtxml.DomainSysInfoSystem{Entry: entries},
	}}}
}

func cpu(c *v1.CPU, accel string) (*libvirtxml.DomainCPU, *libvirtxml.DomainVCPU) {
	sockets, cores, threads := c.Topology()
	model := ""
	if c != nil {
		model = c.Model
	}
	out := &libvirtxml.DomainCPU{
		Topology: &libvirtxml.DomainCPUTopology{Sockets: sockets, Cores: cores, Threads: threads},
	}
	switch {
	case accel == AccelTCG && (model == "" || model == "host-model" || model == "host-passthrough"):
		// The host's CPU means nothing to an emulator; a model TCG emulates fully does.
		out.Mode, out.Match, out.Check = "custom", "exact", "none"
		out.Model = &libvirtxml.DomainCPUModel{Fallback: "allow", Value: TCGModel}
	case model == "" || model == "host-model":
		out.Mode = "host-model"
	case model == "host-passthrough":
		out.Mode = "host-passthrough"
	default:
		out.Mode, out.Match = "custom", "exact"
		out.Model = &libvirtxml.DomainCPUModel{Fallback: "allow", Value: model}
	}
	return out, &libvirtxml.DomainVCPU{Placement: "static", Value: uint(c.VCPUs())}
}

func machineType(m *v1.Machine) string {
	if m == nil || m.Type == "" {
		return "q35"
	}
	return m.Type
}

func osSection(vmi *v1.VirtualMachineInstance, opts Options) (*libvirtxml.DomainOS, error) {
	os := &libvirtxml.DomainOS{
		Type:   &libvirtxml.DomainOSType{Arch: "x86_64", Machine: machineType(vmi.Spec.Domain.Machine), Type: "hvm"},
		SMBios: &libvirtxml.DomainSMBios{Mode: "sysinfo"},
	}
	fw := vmi.Spec.Domain.Firmware
	if fw == nil {
		return os, nil
	}
	if bl := fw.Bootloader; bl != nil {
		switch {
		case bl.EFI != nil:
			secure := bl.EFI.SecureBoot != nil && *bl.EFI.SecureBoot
			code, vars := opts.Firmware.EFICode, opts.Firmware.EFIVars
			sec := "no"
			if secure {
				code, vars, sec = opts.Firmware.EFISecureCode, opts.Firmware.EFISecureVars, "yes"
			}
			if code == "" || vars == "" {
				return nil, fmt.Errorf("EFI firmware requested but no OVMF files configured")
			}
			os.Loader = &libvirtxml.DomainLoader{Path: code, Readonly: "yes", Secure: sec, Type: "pflash"}
			os.NVRam = &libvirtxml.DomainNVRam{
				Template: vars,
				NVRam:    strings.TrimSuffix(opts.Firmware.NVRAMDir, "/") + "/" + Name(vmi) + "_VARS.fd",
			}
		case bl.BIOS != nil && bl.BIOS.UseSerial != nil && *bl.BIOS.UseSerial:
			os.BIOS = &libvirtxml.DomainBIOS{UseSerial: "yes"}
		}
	}
	if kb := fw.KernelBoot; kb != nil {
		if opts.Kernel == "" {
			return nil, fmt.Errorf("kernelBoot: no kernel in the pod")
		}
		os.Kernel, os.Initrd, os.Cmdline = opts.Kernel, opts.Initrd, kb.KernelArgs
	}
	return os, nil
}

func featureOn(f *v1.FeatureState, dflt bool) bool {
	if f == nil {
		return dflt
	}
	return f.Enabled == nil || *f.Enabled
}

func features(spec *v1.DomainSpec) *libvirtxml.DomainFeatureList {
	f := spec.Features
	if f == nil {
		f = &v1.Features{}
	}
	out := &libvirtxml.DomainFeatureList{}
	if featureOn(f.ACPI, true) {
		out.ACPI = &libvirtxml.DomainFeature{}
	}
	if featureOn(f.APIC, true) {
		out.APIC = &libvirtxml.DomainFeatureAPIC{}
	}
	secure := spec.Firmware != nil && spec.Firmware.Bootloader != nil && spec.Firmware.Bootloader.EFI != nil &&
		spec.Firmware.Bootloader.EFI.SecureBoot != nil && *spec.Firmware.Bootloader.EFI.SecureBoot
	// Secure Boot's variable store is only protected with SMM, so it forces SMM on.
	if featureOn(f.SMM, false) || secure {
		out.SMM = &libvirtxml.DomainFeatureSMM{State: "on"}
	}
	return out
}

func clock(c *v1.Clock) *libvirtxml.DomainClock {
	switch {
	case c == nil:
		return &libvirtxml.DomainClock{Offset: "utc"}
	case c.Timezone != nil:
		return &libvirtxml.DomainClock{Offset: "timezone", TimeZone: *c.Timezone}
	case c.UTC != nil && c.UTC.OffsetSeconds != nil:
		return &libvirtxml.DomainClock{Offset: "variable", Basis: "utc", Adjustment: fmt.Sprint(*c.UTC.OffsetSeconds)}
	default:
		return &libvirtxml.DomainClock{Offset: "utc"}
	}
}

// targetName is the guest device name for the n-th disk on a bus prefix (vda, sdb, ..., sdaa).
func targetName(prefix string, n int) string {
	name := ""
	for n++; n > 0; n = (n - 1) / 26 {
		name = string(rune('a'+(n-1)%26)) + name
	}
	return prefix + name
}

func addDisks(d *libvirtxml.Domain, vmi *v1.VirtualMachineInstance, sources map[string]DiskSource) error {
	counters := map[string]int{}
	needSCSI := false
	for _, disk := range vmi.Spec.Domain.Devices.Disks {
		src, ok := sources[disk.Name]
		if !ok {
			return fmt.Errorf("disk %s: no prepared volume", disk.Name)
		}
		device, bus, readOnly := "disk", v1.DiskBus("virtio"), src.ReadOnly
		switch {
		case disk.CDRom != nil:
			device, bus, readOnly = "cdrom", "sata", true
			if disk.CDRom.Bus != "" {
				bus = disk.CDRom.Bus
			}
		case disk.LUN != nil:
			device, bus = "lun", "scsi"
			readOnly = readOnly || disk.LUN.ReadOnly
			if !src.Block {
				return fmt.Errorf("disk %s: a lun needs a block volume", disk.Name)
			}
		case disk.Disk != nil:
			if disk.Disk.Bus != "" {
				bus = disk.Disk.Bus
			}
			readOnly = readOnly || disk.Disk.ReadOnly
		}
		prefix := "sd"
		switch bus {
		case "virtio":
			prefix = "vd"
		case "scsi":
			needSCSI = true
		case "sata", "usb":
		default:
			return fmt.Errorf("disk %s: unsupported bus %q", disk.Name, bus)
		}
		cache := src.Cache
		if disk.Cache != "" {
			cache = disk.Cache
		}
		out := libvirtxml.DomainDisk{
			Device: device,
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: src.Format, Cache: cache, ErrorPolicy: "stop"},
			Source: &libvirtxml.DomainDiskSource{},
			Target: &libvirtxml.DomainDiskTarget{Dev: targetName(prefix, counters[prefix]), Bus: string(bus)},
			Serial: disk.Serial,
			Alias:  &libvirtxml.DomainAlias{Name: "ua-" + disk.Name},
		}
		counters[prefix]++
		if src.Block {
			out.Source.Block = &libvirtxml.DomainDiskSourceBlock{Dev: src.Path}
			if cache == "none" {
				out.Driver.IO = "native"
			}
		} else {
			out.Source.File = &libvirtxml.DomainDiskSourceFile{File: src.Path}
		}
		if readOnly {
			out.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		} else if device != "cdrom" {
			out.Driver.Discard = "unmap"
		}
		if disk.BootOrder != nil {
			out.Boot = &libvirtxml.DomainDeviceBoot{Order: *disk.BootOrder}
		}
		d.Devices.Disks = append(d.Devices.Disks, out)
	}
	if needSCSI {
		zero := uint(0)
		d.Devices.Controllers = append(d.Devices.Controllers, libvirtxml.DomainController{Type: "scsi", Index: &zero, Model: "virtio-scsi"})
	}
	return nil
}

func addInterfaces(d *libvirtxml.Domain, vmi *v1.VirtualMachineInstance, nics []NIC) error {
	boot := map[string]*uint{}
	queues := vmi.Spec.Domain.NICQueues()
	for _, iface := range vmi.Spec.Domain.Devices.Interfaces {
		boot[iface.Name] = iface.BootOrder
	}
	for _, nic := range nics {
		model := nic.Model
		if model == "" {
			model = v1.DefaultNICModel
		}
		switch model {
		case "virtio", "e1000", "e1000e", "rtl8139":
		default:
			return fmt.Errorf("interface %s: unsupported model %q", nic.Name, model)
		}
		out := libvirtxml.DomainInterface{
			Source: &libvirtxml.DomainInterfaceSource{Ethernet: &libvirtxml.DomainInterfaceSourceEthernet{}},
			Target: &libvirtxml.DomainInterfaceTarget{Dev: nic.Tap, Managed: "no"},
			Model:  &libvirtxml.DomainInterfaceModel{Type: model},
			Alias:  &libvirtxml.DomainAlias{Name: "ua-" + nic.Name},
		}
		if nic.MAC != "" {
			out.MAC = &libvirtxml.DomainInterfaceMAC{Address: nic.MAC}
		}
		if nic.MTU > 0 {
			out.MTU = &libvirtxml.DomainInterfaceMTU{Size: uint(nic.MTU)}
		}
		if model == "virtio" && queues > 1 {
			out.Driver = &libvirtxml.DomainInterfaceDriver{Queues: uint(queues)}
		}
		if b := boot[nic.Name]; b != nil {
			out.Boot = &libvirtxml.DomainDeviceBoot{Order: *b}
		} else {
			// The option ROM only serves network boot; without it the image needs no iPXE
			// ROM files and the guest's firmware does not spend time probing the NIC.
			out.ROM = &libvirtxml.DomainROM{Enabled: "no"}
		}
		d.Devices.Interfaces = append(d.Devices.Interfaces, out)
	}
	return nil
}

func addConsoles(d *libvirtxml.Domain, vmi *v1.VirtualMachineInstance, opts Options) {
	dev := vmi.Spec.Domain.Devices
	if dev.AutoattachSerialConsole == nil || *dev.AutoattachSerialConsole {
		port := uint(0)
		src := &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: opts.SerialSocket}}
		d.Devices.Serials = append(d.Devices.Serials, libvirtxml.DomainSerial{
			Source: src, Target: &libvirtxml.DomainSerialTarget{Port: &port},
		})
		d.Devices.Consoles = append(d.Devices.Consoles, libvirtxml.DomainConsole{
			Source: src, Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port},
		})
	}
	if opts.GuestAgentSocket != "" {
		d.Devices.Channels = append(d.Devices.Channels, libvirtxml.DomainChannel{
			Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: opts.GuestAgentSocket}},
			Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: GuestAgentChannel}},
		})
	}
	if dev.AutoattachGraphicsDevice == nil || *dev.AutoattachGraphicsDevice {
		d.Devices.Graphics = append(d.Devices.Graphics, libvirtxml.DomainGraphic{VNC: &libvirtxml.DomainGraphicVNC{
			Listeners: []libvirtxml.DomainGraphicListener{{Socket: &libvirtxml.DomainGraphicListenerSocket{Socket: opts.VNCSocket}}},
		}})
		model := "vga"
		if d.OS.Loader != nil {
			// OVMF has no VGA BIOS driver worth using; bochs is what it drives natively.
			model = "bochs"
		}
		d.Devices.Videos = append(d.Devices.Videos, libvirtxml.DomainVideo{Model: libvirtxml.DomainVideoModel{Type: model, Heads: 1}})
	}
}
