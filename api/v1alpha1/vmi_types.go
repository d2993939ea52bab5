package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// VirtualMachineInstance is one running virtual machine: one launcher pod, one libvirt domain.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=vmi;vmis,categories=all;slimvirt
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="IP",type=string,JSONPath=`.status.interfaces[0].ipAddress`
// +kubebuilder:printcolumn:name="NodeName",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:validation:XValidation:rule="self.spec == oldSelf.spec",message="spec is immutable: a VMI runs as it was made; change its VirtualMachine (and restart it) or make a new VMI"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label (at most 63 lowercase letters, digits and '-'): it becomes the launcher pod's label value and the guest's hostname"
type VirtualMachineInstance struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineInstanceSpec   `json:"spec"`
	Status VirtualMachineInstanceStatus `json:"status,omitempty"`
}

// VirtualMachineInstanceList is a list of VirtualMachineInstances.
//
// +kubebuilder:object:root=true
type VirtualMachineInstanceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineInstance `json:"items"`
}

// VirtualMachineInstanceSpec is what the VM is made of and where it may run.
//
// +kubebuilder:validation:XValidation:rule="!has(self.domain.devices.disks) || self.domain.devices.disks.all(d, has(self.volumes) && self.volumes.exists(v, v.name == d.name))",message="every disk needs a volume of the same name in spec.volumes"
// +kubebuilder:validation:XValidation:rule="!has(self.domain.devices.interfaces) || self.domain.devices.interfaces.all(i, has(self.networks) && self.networks.exists(n, n.name == i.name))",message="every interface needs a network of the same name in spec.networks"
// +kubebuilder:validation:XValidation:rule="has(self.domain.memory) && has(self.domain.memory.guest) || has(self.domain.resources) && has(self.domain.resources.requests) && 'memory' in self.domain.resources.requests",message="set spec.domain.memory.guest or spec.domain.resources.requests.memory"
type VirtualMachineInstanceSpec struct {
	// Domain is the VM's hardware.
	Domain DomainSpec `json:"domain"`

	// Volumes back the disks in Domain.Devices.Disks, by name.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Volumes []Volume `json:"volumes,omitempty"`

	// Networks back the interfaces in Domain.Devices.Interfaces, by name.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=1
	Networks []Network `json:"networks,omitempty"`

	// TerminationGracePeriodSeconds is how long the guest gets to shut down after an ACPI
	// power-button press before it is destroyed; at most a year (a bound far below where the
	// launcher's timer would overflow).
	// +optional
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=31536000
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`

	// NodeSelector, Affinity and Tolerations are copied to the launcher pod.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// PriorityClassName is copied to the launcher pod.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// Hostname is the guest's hostname (DHCP option 12, cloud-init); the VMI's name by default.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Hostname string `json:"hostname,omitempty"`
	// Subdomain gives the guest a DNS name under a headless Service, as for pods.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Subdomain string `json:"subdomain,omitempty"`
}

// DomainSpec is the VM's hardware.
//
// The guest's memory is memory.guest, else resources.requests.memory (GuestMemory); whichever
// sizes it must be at least 1Mi, and the memory limit, when set, must hold it, as KubeVirt has it.
//
// +kubebuilder:validation:XValidation:rule="has(self.memory) && has(self.memory.guest) || !has(self.resources) || !has(self.resources.requests) || !('memory' in self.resources.requests) || !isQuantity(string(self.resources.requests['memory'])) || quantity(string(self.resources.requests['memory'])).compareTo(quantity('1Mi')) >= 0",fieldPath=".resources.requests.memory",message="resources.requests.memory sizes the guest when memory.guest is unset: it must be at least 1Mi"
// +kubebuilder:validation:XValidation:rule="!has(self.memory) || !has(self.memory.guest) || !has(self.resources) || !has(self.resources.limits) || !('memory' in self.resources.limits) || !isQuantity(string(self.memory.guest)) || !isQuantity(string(self.resources.limits['memory'])) || quantity(string(self.memory.guest)).compareTo(quantity(string(self.resources.limits['memory']))) <= 0",fieldPath=".memory.guest",message="memory.guest must not be greater than resources.limits.memory"
type DomainSpec struct {
	// Resources of the launcher pod; memory requests size the guest when Memory.Guest is unset.
	// +optional
	Resources ResourceRequirements `json:"resources,omitempty"`
	// +optional
	CPU *CPU `json:"cpu,omitempty"`
	// +optional
	Memory *Memory `json:"memory,omitempty"`
	// +optional
	Machine *Machine `json:"machine,omitempty"`
	// +optional
	Firmware *Firmware `json:"firmware,omitempty"`
	// +optional
	Features *Features `json:"features,omitempty"`
	// +optional
	Clock   *Clock  `json:"clock,omitempty"`
	Devices Devices `json:"devices"`
}

// ResourceRequirements are the launcher pod's requests and limits.
//
// The schema's pattern for quantities (controller-gen's) lets through strings that do not parse
// as quantities (1e1.5, a fraction in the exponent): the controller could not read such an
// object, and its watch of every object of the kind would fail with it. So quantities are also
// checked with isQuantity here and in DataVolumeSpec, where the maps' size keeps the rules within
// the CEL cost budget; single quantities inside lists (an emptyDisk's capacity) get the right
// pattern instead, which cannot be set on a map's values. A pod refuses a negative quantity and
// a request above its limit: so do these rules, at apply, and not the launcher pod at run time.
//
// +kubebuilder:validation:XValidation:rule="!has(self.requests) || self.requests.all(k, isQuantity(string(self.requests[k])))",message="requests must be quantities, such as 128Mi, 2Gi or 500m"
// +kubebuilder:validation:XValidation:rule="!has(self.limits) || self.limits.all(k, isQuantity(string(self.limits[k])))",message="limits must be quantities, such as 128Mi, 2Gi or 500m"
// +kubebuilder:validation:XValidation:rule="!has(self.requests) || self.requests.all(k, type(self.requests[k]) in [int] ? self.requests[k] >= 0 : !self.requests[k].startsWith('-'))",fieldPath=".requests",message="requests must not be negative"
// +kubebuilder:validation:XValidation:rule="!has(self.limits) || self.limits.all(k, type(self.limits[k]) in [int] ? self.limits[k] >= 0 : !self.limits[k].startsWith('-'))",fieldPath=".limits",message="limits must not be negative"
// +kubebuilder:validation:XValidation:rule="!has(self.requests) || !has(self.limits) || !('memory' in self.requests) || !('memory' in self.limits) || !isQuantity(string(self.requests['memory'])) || !isQuantity(string(self.limits['memory'])) || quantity(string(self.requests['memory'])).compareTo(quantity(string(self.limits['memory']))) <= 0",fieldPath=".requests.memory",message="requests.memory must not be greater than limits.memory"
// +kubebuilder:validation:XValidation:rule="!has(self.requests) || !has(self.limits) || !('cpu' in self.requests) || !('cpu' in self.limits) || !isQuantity(string(self.requests['cpu'])) || !isQuantity(string(self.limits['cpu'])) || quantity(string(self.requests['cpu'])).compareTo(quantity(string(self.limits['cpu']))) <= 0",fieldPath=".requests.cpu",message="requests.cpu must not be greater than limits.cpu"
type ResourceRequirements struct {
	// +optional
	// +kubebuilder:validation:MaxProperties=12
	Requests corev1.ResourceList `json:"requests,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxProperties=12
	Limits corev1.ResourceList `json:"limits,omitempty"`
	// OvercommitGuestOverhead leaves the launcher's overhead out of the pod's memory request.
	// +optional
	OvercommitGuestOverhead bool `json:"overcommitGuestOverhead,omitempty"`
}

// CPU is the guest's processor topology and model.
type CPU struct {
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=512
	Cores uint32 `json:"cores,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	Sockets uint32 `json:"sockets,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=8
	Threads uint32 `json:"threads,omitempty"`
	// Model is host-model (default on KVM), host-passthrough, or a named QEMU CPU model.
	// +optional
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][-A-Za-z0-9_.]*$`
	// +kubebuilder:validation:MaxLength=64
	Model string `json:"model,omitempty"`
}

// Memory is the guest's RAM.
type Memory struct {
	// Guest is the RAM the guest sees, at least 1Mi (the domain's memory is in whole MiB).
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:Pattern=`^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$`
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || quantity(string(self)).compareTo(quantity('1Mi')) >= 0",message="memory.guest must be at least 1Mi"
	Guest *resource.Quantity `json:"guest,omitempty"`
}

// Machine is the QEMU machine type.
type Machine struct {
	// Type is q35 (default) or pc, optionally versioned (pc-q35-7.2).
	// +optional
	// +kubebuilder:validation:Pattern=`^(q35|pc|pc-q35-[0-9.]+|pc-i440fx-[0-9.]+)$`
	Type string `json:"type,omitempty"`
}

// Firmware selects the boot firmware and identifies the machine.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.kernelBoot) && has(self.bootloader) && has(self.bootloader.efi))",message="kernelBoot cannot be combined with an EFI bootloader"
type Firmware struct {
	// UUID is the SMBIOS system UUID; derived from the VMI's name when unset.
	// +optional
	UUID types.UID `json:"uuid,omitempty"`
	// Serial is the SMBIOS system serial number.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Serial string `json:"serial,omitempty"`
	// +optional
	Bootloader *Bootloader `json:"bootloader,omitempty"`
	// KernelBoot boots a kernel and initrd directly.
	// +optional
	KernelBoot *KernelBoot `json:"kernelBoot,omitempty"`
}

// Bootloader is BIOS (SeaBIOS, the default) or EFI (OVMF).
//
// +kubebuilder:validation:XValidation:rule="!(has(self.bios) && has(self.efi))",message="choose one of bios and efi"
type Bootloader struct {
	// +optional
	BIOS *BIOS `json:"bios,omitempty"`
	// +optional
	EFI *EFI `json:"efi,omitempty"`
}

// BIOS is SeaBIOS.
type BIOS struct {
	// UseSerial sends BIOS output to the serial console.
	// +optional
	UseSerial *bool `json:"useSerial,omitempty"`
}

// EFI is OVMF.
type EFI struct {
	// SecureBoot enables Secure Boot (needs SMM).
	// +optional
	SecureBoot *bool `json:"secureBoot,omitempty"`
}

// KernelBoot boots a kernel and initrd taken from a container image.
type KernelBoot struct {
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	KernelArgs string `json:"kernelArgs,omitempty"`
	// +optional
	Container *KernelBootContainer `json:"container,omitempty"`
}

// KernelBootContainer names the image and the paths of the kernel and initrd in it.
//
// +kubebuilder:validation:XValidation:rule="has(self.kernelPath) || has(self.initrdPath)",message="kernelBoot.container needs kernelPath, initrdPath or both"
type KernelBootContainer struct {
	// +kubebuilder:validation:MinLength=1
	Image string `json:"image"`
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// +optional
	// +kubebuilder:validation:Pattern=`^/[^\x00]*$`
	KernelPath string `json:"kernelPath,omitempty"`
	// +optional
	// +kubebuilder:validation:Pattern=`^/[^\x00]*$`
	InitrdPath string `json:"initrdPath,omitempty"`
}

// Features are platform features.
type Features struct {
	// +optional
	ACPI *FeatureState `json:"acpi,omitempty"`
	// +optional
	APIC *FeatureState `json:"apic,omitempty"`
	// +optional
	SMM *FeatureState `json:"smm,omitempty"`
}

// FeatureState turns a feature on or off; on when present without enabled.
type FeatureState struct {
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
}

// Clock is the guest's clock.
type Clock struct {
	// UTC keeps the guest clock in UTC (the default).
	// +optional
	UTC *ClockOffsetUTC `json:"utc,omitempty"`
	// Timezone sets the guest clock to a named zone (Windows guests).
	// +optional
	Timezone *string `json:"timezone,omitempty"`
}

// ClockOffsetUTC is the UTC clock offset.
type ClockOffsetUTC struct {
	// +optional
	OffsetSeconds *int `json:"offsetSeconds,omitempty"`
}

// Devices are the VM's disks, NICs and console choices.
//
// +kubebuilder:validation:XValidation:rule="!has(self.disks) || !has(self.interfaces) || self.interfaces.all(i, !has(i.bootOrder) || !self.disks.exists(d, has(d.bootOrder) && d.bootOrder == i.bootOrder))",fieldPath=".interfaces",message="bootOrder values must be unique among disks and interfaces"
type Devices struct {
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(a, !has(a.bootOrder) || self.filter(b, has(b.bootOrder) && b.bootOrder == a.bootOrder).size() == 1)",message="bootOrder values must be unique among disks"
	Disks []Disk `json:"disks,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=1
	Interfaces []Interface `json:"interfaces,omitempty"`
	// AutoattachSerialConsole adds a serial console (default true).
	// +optional
	AutoattachSerialConsole *bool `json:"autoattachSerialConsole,omitempty"`
	// AutoattachGraphicsDevice adds a VGA device and VNC (default true).
	// +optional
	AutoattachGraphicsDevice *bool `json:"autoattachGraphicsDevice,omitempty"`
	// AutoattachPodInterface adds a bridge interface on the pod network when no interface is
	// listed (default true).
	// +optional
	AutoattachPodInterface *bool `json:"autoattachPodInterface,omitempty"`
	// NetworkInterfaceMultiQueue gives virtio NICs one queue per vCPU.
	// +optional
	NetworkInterfaceMultiQueue *bool `json:"networkInterfaceMultiqueue,omitempty"`
}

// Disk is one disk device; its volume has the same name.
//
// +kubebuilder:validation:XValidation:rule="[has(self.disk), has(self.cdrom), has(self.lun)].filter(x, x).size() <= 1",message="a disk is one of disk, cdrom and lun"
type Disk struct {
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// +optional
	Disk *DiskTarget `json:"disk,omitempty"`
	// +optional
	CDRom *CDRomTarget `json:"cdrom,omitempty"`
	// +optional
	LUN *LunTarget `json:"lun,omitempty"`
	// BootOrder is the disk's place in the boot order, 1 first; at most 2147483647 (QEMU's
	// bootindex is a 32-bit integer).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=2147483647
	BootOrder *uint `json:"bootOrder,omitempty"`
	// Serial is the disk's serial number as the guest sees it.
	// +optional
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.+-]+$`
	// +kubebuilder:validation:MaxLength=20
	Serial string `json:"serial,omitempty"`
	// Cache is none, writethrough or writeback; chosen per volume when unset.
	// +optional
	// +kubebuilder:validation:Enum=none;writethrough;writeback
	Cache string `json:"cache,omitempty"`
}

// DiskBus is the bus a disk is attached to.
// +kubebuilder:validation:Enum=virtio;sata;scsi;usb
type DiskBus string

// DiskTarget is a hard disk.
type DiskTarget struct {
	// +optional
	// +kubebuilder:default=virtio
	Bus DiskBus `json:"bus,omitempty"`
	// +optional
	ReadOnly bool `json:"readonly,omitempty"`
}

// CDRomTarget is a CD-ROM drive; read-only.
//
// +kubebuilder:validation:XValidation:rule="!has(self.bus) || self.bus in ['sata', 'scsi']",message="a cdrom's bus must be sata or scsi"
type CDRomTarget struct {
	// +optional
	// +kubebuilder:default=sata
	Bus DiskBus `json:"bus,omitempty"`
	// +optional
	ReadOnly *bool `json:"readonly,omitempty"`
}

// LunTarget is a SCSI LUN.
//
// +kubebuilder:validation:XValidation:rule="!has(self.bus) || self.bus == 'scsi'",message="a lun's bus must be scsi"
type LunTarget struct {
	// +optional
	Bus DiskBus `json:"bus,omitempty"`
	// +optional
	ReadOnly bool `json:"readonly,omitempty"`
}

// Interface is one NIC; its network has the same name.
//
// +kubebuilder:validation:XValidation:rule="[has(self.bridge), has(self.masquerade)].filter(x, x).size() == 1",message="an interface needs exactly one binding: bridge or masquerade"
// +kubebuilder:validation:XValidation:rule="!has(self.ports) || has(self.masquerade)",message="ports can only be set on a masquerade interface"
type Interface struct {
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// Model is the NIC model (virtio by default).
	// +optional
	// +kubebuilder:default=virtio
	// +kubebuilder:validation:Enum=virtio;e1000;e1000e;rtl8139
	Model string `json:"model,omitempty"`
	// +optional
	Bridge *InterfaceBridge `json:"bridge,omitempty"`
	// +optional
	Masquerade *InterfaceMasquerade `json:"masquerade,omitempty"`
	// MacAddress is the guest NIC's MAC; the pod's original MAC (bridge) or a generated one
	// (masquerade) when unset.
	// +optional
	// +kubebuilder:validation:Pattern=`^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$`
	MacAddress string `json:"macAddress,omitempty"`
	// Ports are the ports forwarded to a masqueraded guest; all when empty.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Ports []Port `json:"ports,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=2147483647
	BootOrder *uint `json:"bootOrder,omitempty"`
}

// InterfaceBridge puts the guest on the pod's L2 network with the pod's IP.
type InterfaceBridge struct{}

// InterfaceMasquerade puts the guest behind NAT on the pod's IP.
type InterfaceMasquerade struct{}

// Port is a port forwarded to a masqueraded guest.
type Port struct {
	// +optional
	// +kubebuilder:validation:MaxLength=15
	Name string `json:"name,omitempty"`
	// +optional
	// +kubebuilder:validation:Enum=TCP;UDP
	Protocol string `json:"protocol,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
}

// Volume is a source of a disk's contents.
//
// +kubebuilder:validation:XValidation:rule="[has(self.containerDisk), has(self.persistentVolumeClaim), has(self.dataVolume), has(self.emptyDisk), has(self.hostDisk), has(self.cloudInitNoCloud), has(self.cloudInitConfigDrive), has(self.ephemeral)].filter(x, x).size() == 1",message="a volume needs exactly one source"
type Volume struct {
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name         string `json:"name"`
	VolumeSource `json:",inline"`
}

// VolumeSource is one kind of volume.
type VolumeSource struct {
	// +optional
	ContainerDisk *ContainerDiskSource `json:"containerDisk,omitempty"`
	// +optional
	PersistentVolumeClaim *PersistentVolumeClaimVolumeSource `json:"persistentVolumeClaim,omitempty"`
	// +optional
	DataVolume *DataVolumeSource `json:"dataVolume,omitempty"`
	// +optional
	EmptyDisk *EmptyDiskSource `json:"emptyDisk,omitempty"`
	// +optional
	HostDisk *HostDisk `json:"hostDisk,omitempty"`
	// +optional
	CloudInitNoCloud *CloudInitNoCloudSource `json:"cloudInitNoCloud,omitempty"`
	// +optional
	CloudInitConfigDrive *CloudInitConfigDriveSource `json:"cloudInitConfigDrive,omitempty"`
	// +optional
	Ephemeral *EphemeralVolumeSource `json:"ephemeral,omitempty"`
}

// ContainerDiskSource is a disk image shipped in a container image (under /disk/), used
// read-only through a throwaway overlay.
type ContainerDiskSource struct {
	// +kubebuilder:validation:MinLength=1
	Image string `json:"image"`
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// Path of the disk file in the image; the one file under /disk/ when unset.
	// +optional
	// +kubebuilder:validation:Pattern=`^/[^\x00]*$`
	Path string `json:"path,omitempty"`
}

// PersistentVolumeClaimVolumeSource uses a PVC: its disk.img (filesystem) or the device (block).
type PersistentVolumeClaimVolumeSource struct {
	// +kubebuilder:validation:MinLength=1
	ClaimName string `json:"claimName"`
	// +optional
	ReadOnly bool `json:"readOnly,omitempty"`
}

// DataVolumeSource uses the PVC of a DataVolume once its import is done.
type DataVolumeSource struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// A capacity (of an emptyDisk, of a hostDisk) lies in the list of volumes, so a rule on it runs
// for each of 64 volumes, and a rule that parsed the quantity would cost more than the API
// server allows. So its pattern refuses a zero quantity (the mantissa needs a digit other than
// 0) and a rule that reads no more than the first character refuses a negative one and an
// integer below 1. The type test is `type(self) in [int]`: `type(self) == int` is costed as if
// it read the whole value.

// EphemeralVolumeSource is KubeVirt's ephemeral volume: the guest writes to a qcow2 overlay in
// the launcher pod's scratch space over the PVC's disk.img (or its device, for a block PVC),
// and the overlay goes with the VMI. The PVC is mounted read-only whatever readOnly says, so
// several VMIs on one node may start from the same PVC at once.
type EphemeralVolumeSource struct {
	PersistentVolumeClaim PersistentVolumeClaimVolumeSource `json:"persistentVolumeClaim"`
}

// EmptyDiskSource is a sparse scratch disk that lives as long as the VMI.
type EmptyDiskSource struct {
	// Capacity is the disk's size, more than 0.
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:Pattern=`^(\+|-)?([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$`
	// +kubebuilder:validation:XValidation:rule="type(self) in [int] ? self > 0 : !self.startsWith('-')",message="emptyDisk.capacity must be greater than 0"
	Capacity resource.Quantity `json:"capacity"`
}

// HostDiskType says whether a host disk must exist.
// +kubebuilder:validation:Enum=Disk;DiskOrCreate
type HostDiskType string

// The host disk types: the image must exist (Disk), or is made when missing (DiskOrCreate).
const (
	HostDiskExists         HostDiskType = "Disk"
	HostDiskExistsOrCreate HostDiskType = "DiskOrCreate"
)

// HostDisk is a raw image file on the node.
//
// +kubebuilder:validation:XValidation:rule="self.type != 'DiskOrCreate' || has(self.capacity)",message="hostDisk of type DiskOrCreate needs a capacity"
type HostDisk struct {
	// +kubebuilder:validation:Pattern=`^/[^\x00]*\.img$`
	Path string       `json:"path"`
	Type HostDiskType `json:"type"`
	// Capacity is the size a DiskOrCreate image is made with, more than 0.
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:Pattern=`^(\+|-)?([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$`
	// +kubebuilder:validation:XValidation:rule="type(self) in [int] ? self > 0 : !self.startsWith('-')",message="hostDisk.capacity must be greater than 0"
	Capacity *resource.Quantity `json:"capacity,omitempty"`
	// Shared may only be false. KubeVirt reads it for live migration alone (a shared image is
	// reached from every node and is not copied); slimvirt has no live migration, and a
	// hostDisk is a file on the node the VMI runs on. false is accepted, as KubeVirt
	// manifests may carry it.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!self",message="hostDisk.shared cannot be true: a hostDisk is a file on one node, and slimvirt has no live migration, which is all KubeVirt reads shared for"
	Shared *bool `json:"shared,omitempty"`
}

// CloudInitNoCloudSource is a NoCloud data source (an ISO labelled cidata).
type CloudInitNoCloudSource struct {
	// +optional
	UserData string `json:"userData,omitempty"`
	// +optional
	UserDataBase64 string `json:"userDataBase64,omitempty"`
	// +optional
	UserDataSecretRef *corev1.LocalObjectReference `json:"secretRef,omitempty"`
	// +optional
	NetworkData string `json:"networkData,omitempty"`
	// +optional
	NetworkDataBase64 string `json:"networkDataBase64,omitempty"`
	// +optional
	NetworkDataSecretRef *corev1.LocalObjectReference `json:"networkDataSecretRef,omitempty"`
}

// CloudInitConfigDriveSource is a ConfigDrive data source (an ISO labelled config-2).
type CloudInitConfigDriveSource struct {
	// +optional
	UserData string `json:"userData,omitempty"`
	// +optional
	UserDataBase64 string `json:"userDataBase64,omitempty"`
	// +optional
	UserDataSecretRef *corev1.LocalObjectReference `json:"secretRef,omitempty"`
	// +optional
	NetworkData string `json:"networkData,omitempty"`
	// +optional
	NetworkDataBase64 string `json:"networkDataBase64,omitempty"`
	// +optional
	NetworkDataSecretRef *corev1.LocalObjectReference `json:"networkDataSecretRef,omitempty"`
}

// Network is a network the VM joins.
type Network struct {
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name          string `json:"name"`
	NetworkSource `json:",inline"`
}

// NetworkSource is the kind of network; only the pod network is supported.
//
// +kubebuilder:validation:XValidation:rule="has(self.pod)",message="only the pod network is supported"
type NetworkSource struct {
	// +optional
	Pod *PodNetwork `json:"pod,omitempty"`
}

// PodNetwork is the pod's primary network.
type PodNetwork struct {
	// VMNetworkCIDR is the masquerade network behind the pod (default 10.0.2.0/24).
	// +optional
	// +kubebuilder:validation:Pattern=`^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|30)$`
	VMNetworkCIDR string `json:"vmNetworkCIDR,omitempty"`
}

// VirtualMachineInstancePhase is where a VMI is in its life.
// +kubebuilder:validation:Enum=Pending;Scheduling;Scheduled;Running;Succeeded;Failed;Unknown
type VirtualMachineInstancePhase string

// The VMI phases.
const (
	Pending    VirtualMachineInstancePhase = "Pending"
	Scheduling VirtualMachineInstancePhase = "Scheduling"
	Scheduled  VirtualMachineInstancePhase = "Scheduled"
	Running    VirtualMachineInstancePhase = "Running"
	Succeeded  VirtualMachineInstancePhase = "Succeeded"
	Failed     VirtualMachineInstancePhase = "Failed"
	Unknown    VirtualMachineInstancePhase = "Unknown"
)

// IsFinal says whether a VMI in this phase is over; a final phase never changes.
func (p VirtualMachineInstancePhase) IsFinal() bool { return p == Succeeded || p == Failed }

// VirtualMachineInstanceConditionType names a VMI condition.
type VirtualMachineInstanceConditionType string

const (
	// VMIReady is true while the guest runs and its network is set up.
	VMIReady VirtualMachineInstanceConditionType = "Ready"
	// VMIPaused is true while the guest is paused.
	VMIPaused VirtualMachineInstanceConditionType = "Paused"
	// VMISynchronized is false when the controller cannot run the VMI as specified.
	VMISynchronized VirtualMachineInstanceConditionType = "Synchronized"
	// VMIAgentConnected is true when a guest agent answers.
	VMIAgentConnected VirtualMachineInstanceConditionType = "AgentConnected"
)

// VirtualMachineInstanceCondition is one condition of a VMI.
type VirtualMachineInstanceCondition struct {
	Type   VirtualMachineInstanceConditionType `json:"type"`
	Status corev1.ConditionStatus              `json:"status"`
	// +optional
	LastProbeTime metav1.Time `json:"lastProbeTime,omitempty"`
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// VirtualMachineInstanceNetworkInterface is what the guest's NIC got.
type VirtualMachineInstanceNetworkInterface struct {
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	IP string `json:"ipAddress,omitempty"`
	// +optional
	IPs []string `json:"ipAddresses,omitempty"`
	// +optional
	MAC string `json:"mac,omitempty"`
	// +optional
	InterfaceName string `json:"interfaceName,omitempty"`
}

// VirtualMachineInstancePhaseTransitionTimestamp records when a phase was entered.
type VirtualMachineInstancePhaseTransitionTimestamp struct {
	Phase                    VirtualMachineInstancePhase `json:"phase"`
	PhaseTransitionTimestamp metav1.Time                 `json:"phaseTransitionTimestamp"`
}

// VirtualMachineInstanceStatus is what the VMI is doing.
type VirtualMachineInstanceStatus struct {
	// +optional
	Phase VirtualMachineInstancePhase `json:"phase,omitempty"`
	// Reason is why the VMI reached a final phase, in CamelCase.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message says in words why the VMI reached a final phase (the launcher's termination
	// message when it failed).
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// LauncherPod is the name of the pod running this VMI.
	// +optional
	LauncherPod string `json:"launcherPod,omitempty"`
	// +optional
	Conditions []VirtualMachineInstanceCondition `json:"conditions,omitempty"`
	// +optional
	Interfaces []VirtualMachineInstanceNetworkInterface `json:"interfaces,omitempty"`
	// +optional
	PhaseTransitionTimestamps []VirtualMachineInstancePhaseTransitionTimestamp `json:"phaseTransitionTimestamps,omitempty"`
	// GuestOSInfo is filled when a guest agent answers.
	// +optional
	GuestOSInfo *GuestOSInfo `json:"guestOSInfo,omitempty"`
	// VolumeStatus lists the VMI's disks with the guest's device name, and the size the guest
	// sees of those that grew while it ran (written by the node agent from what the launcher
	// reports).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	VolumeStatus []VolumeStatus `json:"volumeStatus,omitempty"`
	// MemoryOverhead is the memory the launcher pod requests besides the guest's (the launcher's
	// processes, QEMU's own, the containerDisk copiers), as KubeVirt reports it.
	// +optional
	MemoryOverhead *resource.Quantity `json:"memoryOverhead,omitempty"`
}

// VolumeStatus is what is known of one of the VMI's volumes while it runs (KubeVirt's
// volumeStatus[], the fields slimvirt fills).
type VolumeStatus struct {
	// Name is the volume's name in spec.volumes.
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// Target is the disk's device name in the guest (vda, sdb), when known.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	Target string `json:"target,omitempty"`
	// Size is the disk's size in bytes as the guest sees it.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Size int64 `json:"size,omitempty"`
}

// GuestOSInfo is what a guest agent says of the guest.
type GuestOSInfo struct {
	// +optional
	ID string `json:"id,omitempty"`
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	PrettyName string `json:"prettyName,omitempty"`
	// +optional
	Version string `json:"version,omitempty"`
	// +optional
	VersionID string `json:"versionId,omitempty"`
	// +optional
	KernelRelease string `json:"kernelRelease,omitempty"`
	// +optional
	KernelVersion string `json:"kernelVersion,omitempty"`
	// +optional
	Machine string `json:"machine,omitempty"`
}

func init() {
	register(&VirtualMachineInstance{}, &VirtualMachineInstanceList{})
}
