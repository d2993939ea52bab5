// Package launcherpod is the contract between the controller, which makes a launcher pod for a
// VMI, and the components that act on that pod: the CNI plugin (annotations), the launcher
// (environment and paths) and the node agent (sockets). Changing a name here changes all of them.
//
// The package holds only the contract: names, paths, the JSON the sides exchange and the rules
// for reading it. It imports no Kubernetes type, so the CNI plugin, which runs for every pod on
// a node, stays small; what a VMI means for the contract is decided in api/v1alpha1.
package launcherpod

const (
	// ComputeContainer runs the launcher, PID 1 of the VM's container.
	ComputeContainer = "compute"

	// LabelVMI is set on a launcher pod to the name of its VMI.
	LabelVMI = "slimvirt.io/vmi"
	// LabelApp marks every launcher pod.
	LabelApp = "slimvirt.io/app"
	// AppLauncher is LabelApp's value on launcher pods.
	AppLauncher = "virt-launcher"
	// AppImporter is LabelApp's value on a registry DataVolume's importer pod, which runs the
	// copier from the node's seed like a launcher pod's containerDisk copiers.
	AppImporter = "importer"

	// AnnotationInterfaces holds the pod's VM interfaces as JSON ([]Interface); the CNI plugin
	// builds the binding from it.
	AnnotationInterfaces = "slimvirt.io/interfaces"
	// AnnotationSignature holds SignPod(key, the pod's namespace, name and UID,
	// AnnotationInterfaces value) in hex; the CNI plugin acts only on pods whose signature
	// verifies.
	AnnotationSignature = "slimvirt.io/interfaces-signature"

	// AnnotationVMI holds the VMI (metadata name/namespace/uid/labels and spec) as JSON for the
	// launcher, which reads it as VMIFile (a downward API volume): an environment variable
	// holds at most 128 KiB on Linux, an annotation (all of a pod's together) 256 KiB.
	AnnotationVMI = "slimvirt.io/vmi"
	// EnvVMISHA256 is the SHA-256 (hex) of AnnotationVMI's value as the controller wrote it. A
	// pod's environment cannot change; its annotations can, so the launcher refuses a VMI
	// file that does not match.
	EnvVMISHA256 = "SLIMVIRT_VMI_SHA256"
	// EnvVMI holds, when set, the VMI as JSON instead of VMIFile (the launcher run alone).
	EnvVMI = "SLIMVIRT_VMI"
	// MaxVMISize is the largest VMI the launcher reads, in bytes of JSON: what a pod's 256 KiB
	// of annotations leave after the others.
	MaxVMISize = 240 << 10
	// EnvAllowEmulation lets the launcher fall back to TCG when KVM cannot be used ("true").
	EnvAllowEmulation = "SLIMVIRT_ALLOW_EMULATION"

	// VMIDir is the downward API volume holding VMIFileName, the VMI of AnnotationVMI.
	VMIDir = "/var/run/slimvirt-vmi"
	// VMIFileName is the VMI's file in VMIDir.
	VMIFileName = "vmi.json"
	// VMIFile is the VMI's path.
	VMIFile = VMIDir + "/" + VMIFileName

	// RunDir is an emptyDir shared by the launcher's containers and seen by the node agent.
	RunDir = "/var/run/slimvirt"
	// ConditionDomainRunning is the launcher pod's readiness gate: the node agent sets it True
	// while the launcher reports the domain running (not paused, not stopping), so the pod is
	// Ready, and Services send it traffic, exactly then. KubeVirt's virt-handler does the same
	// with kubevirt.io/virtual-machine-unpaused.
	ConditionDomainRunning = "slimvirt.io/domain-running"
	// RunVolume is the emptyDir mounted at RunDir; the node agent finds the status file and
	// the control socket in it.
	RunVolume = "slimvirt-run"
	// StatusFile is written atomically by the launcher with a Status as JSON.
	StatusFile = RunDir + "/status.json"
	// SerialSocket is the guest's first serial port.
	SerialSocket = RunDir + "/serial0"
	// VNCSocket is the guest's VNC display.
	VNCSocket = RunDir + "/vnc"
	// ControlSocket takes power actions (pause, unpause, reset, soft reboot, shutdown).
	ControlSocket = RunDir + "/control.sock"

	// ContainerDiskDir holds in <volume>/ the disk a copier container copied out of a
	// containerDisk image; the launcher puts a qcow2 overlay over it.
	ContainerDiskDir = RunDir + "/container-disks"
	// KernelBootDir holds the kernel (KernelBootKernel) and initrd (KernelBootInitrd) of a
	// kernelBoot VMI, copied there out of the image by the kernel-boot-* containers.
	KernelBootDir = RunDir + "/kernel-boot"
	// KernelBootKernel is the kernel's file name in KernelBootDir.
	KernelBootKernel = "kernel"
	// KernelBootInitrd is the initrd's file name in KernelBootDir.
	KernelBootInitrd = "initrd"
	// SecretsDir holds in <volume>/ the cloud-init Secrets of a volume, merged (keys userdata,
	// networkdata).
	SecretsDir = RunDir + "/secrets"
	// NodeDir is where a launcher pod's containers that ask for ResourceSeed get, read-only,
	// the files the node agent's seed init container puts on each node for the launchers (host
	// path <node.stateDir>/NodeSeedDirName): the containerDisk copier and QEMU's capabilities. The
	// node agent's seed device plugin mounts it; a pod has no hostPath volume for it.
	NodeDir = "/var/run/slimvirt-node"
	// NodeSeedDirName is the node's seed under the node agent's state directory
	// (<node.stateDir>/launcher); the chart's seed init container writes the same path.
	NodeSeedDirName = "launcher"
	// NodeSeedMarker is the file of the seed that must exist before the seed is offered.
	NodeSeedMarker = "slimvirt-diskcopy"
	// ContainerDiskCopier is the static binary the containerDisk (and kernelBoot) init
	// containers run, from the user's image, to copy the image's disk out.
	ContainerDiskCopier = NodeDir + "/" + NodeSeedMarker
	// ImporterExitRefused is the copier's exit code when it sends a registry DataVolume's disk
	// and the image cannot be imported at all (no disk, several, or refused by the endpoint):
	// the importer pod is not run again.
	ImporterExitRefused = 3
	// CapsSeedDir holds libvirt's cache of QEMU's capabilities, probed once per node with the
	// launcher image; each launcher's libvirtd starts from it instead of probing QEMU.
	CapsSeedDir = NodeDir + "/" + CapsSeedName
	// CapsSeedName is CapsSeedDir's name in the node's seed.
	CapsSeedName = "qemu-caps"
	// DiskcopyInImage is where the launcher image ships the copier.
	DiskcopyInImage = "/usr/bin/slimvirt-diskcopy"
	// PVCDir holds in <volume>/ a filesystem PVC's mount (it holds disk.img).
	PVCDir = RunDir + "/pvcs"
	// BlockDir holds as <volume> a block PVC's device.
	BlockDir = "/dev/slimvirt"
	// HostDiskDir holds as <volume>/<file name> a hostDisk's image, mounted (the file, not its
	// directory).
	HostDiskDir = RunDir + "/hostdisks"
	// EmptyDiskDir holds emptyDisk images and overlays; gone with the pod.
	EmptyDiskDir = RunDir + "/scratch"
	// LibvirtRunDir is where the launcher's libvirtd keeps its sockets and state: an emptyDir,
	// so the non-root launcher can write it.
	LibvirtRunDir = "/var/run/libvirt"
)

// The launcher's account: the compute container, libvirtd and QEMU run as this uid and gid
// (KubeVirt's qemu account, 107), so containerDisk images made for KubeVirt (disk owned by
// 107) work unchanged. The CNI plugin gives the tap to this uid.
const (
	LauncherUID = 107
	LauncherGID = 107
)

// Device plugin resources the node agent serves; a launcher pod asks for them instead of
// running privileged.
const (
	// ResourceTun gives the compute container /dev/net/tun, which QEMU opens to attach to the
	// tap the CNI plugin made.
	ResourceTun = "devices.slimvirt.io/tun"
	// ResourceKVM gives the compute container /dev/kvm.
	ResourceKVM = "devices.slimvirt.io/kvm"
	// ResourceSeed mounts the node's seed read-only at NodeDir into each container that asks
	// for it (the compute and copier containers); a node offers it once it is seeded.
	ResourceSeed = "devices.slimvirt.io/seed"
)

// Launcher exit codes, read by the controller from the compute container's termination state.
const (
	ExitGuestShutdown = 0 // the guest powered off: the VMI Succeeded
	ExitGuestCrashed  = 1 // the guest or QEMU died: the VMI Failed
	ExitSetupFailed   = 2 // the VM could not be started; the termination message says why
)

// Binding is how a VM interface is joined to the pod network.
type Binding string

// The bindings: bridge gives the guest the pod's IP (and, unless the spec names one, its MAC);
// masquerade gives it an address of its own network, NATed behind the pod's IP.
const (
	BindingBridge     Binding = "bridge"
	BindingMasquerade Binding = "masquerade"
)

// Interface is one VM interface as the CNI plugin sees it.
type Interface struct {
	// Name is the VMI's interface name.
	Name    string  `json:"name"`
	Binding Binding `json:"binding"`
	// MAC is the guest MAC from the spec; empty means the pod's original MAC (bridge) or a
	// generated one (masquerade).
	MAC string `json:"mac,omitempty"`
	// VMNetworkCIDR is the masquerade network (default 10.0.2.0/24).
	VMNetworkCIDR string `json:"vmNetworkCIDR,omitempty"`
	// Ports are forwarded to a masqueraded guest; all when empty.
	Ports []Port `json:"ports,omitempty"`
	// TapOwner is the uid that will open the tap device.
	TapOwner *int `json:"tapOwner,omitempty"`
	// Queues is the tap's queue count when above 1 (api/v1alpha1's DomainSpec.NICQueues for a
	// virtio NIC). The kernel refuses a tap whose multi-queue flag does not match how QEMU
	// opens it, so the plugin and the launcher take it from the same rule.
	Queues int `json:"queues,omitempty"`
}

// Port is one forwarded port.
type Port struct {
	Protocol string `json:"protocol"` // TCP or UDP
	Port     int32  `json:"port"`
}

// The launcher's phases, in Status.Phase.
const (
	PhaseStarting     = "Starting"
	PhaseRunning      = "Running"
	PhasePaused       = "Paused"
	PhaseShuttingDown = "ShuttingDown"
	PhaseShutdown     = "Shutdown"
	PhaseCrashed      = "Crashed"
)

// Status is what the launcher reports in StatusFile.
type Status struct {
	// Phase is Starting, Running, Paused, ShuttingDown, Shutdown or Crashed.
	Phase string `json:"phase"`
	// Reason says why, for Crashed and failures.
	Reason string `json:"reason,omitempty"`
	// Accelerator is kvm or tcg.
	Accelerator string `json:"accelerator,omitempty"`
	// GuestMAC and GuestIP are what the guest's first NIC got (IP from the DHCP lease).
	GuestMAC string `json:"guestMAC,omitempty"`
	GuestIP  string `json:"guestIP,omitempty"`
	// AgentConnected is true while a guest agent is connected to the guest agent channel.
	AgentConnected bool `json:"agentConnected,omitempty"`
	// GuestOS is what the guest agent said of the guest when it connected.
	GuestOS *GuestOSInfo `json:"guestOS,omitempty"`
	// DiskSizes are the bytes the guest sees of each disk that grew while the domain ran, by
	// volume name: at most MaxDiskSizes of them, names DNS labels, sizes from 1 to MaxDiskSize.
	// A disk that never grew is not listed.
	DiskSizes map[string]int64 `json:"diskSizes,omitempty"`
	// DiskTargets are the guest's device names of the domain's disks (vda, sdb), by volume
	// name: at most MaxDiskSizes of them, names DNS labels, targets vd, sd or hd and 1 to 3
	// letters.
	DiskTargets map[string]string `json:"diskTargets,omitempty"`
}

// Bounds of Status.DiskSizes.
const (
	// MaxDiskSizes is how many disks a VMI may have (api/v1alpha1: 64 disks).
	MaxDiskSizes = 64
	// MaxDiskSize is 8 PiB, 2^53 bytes: far beyond any disk a guest is given, and the largest
	// integer every JSON reader holds exactly.
	MaxDiskSize = 1 << 53
)

// GuestInfo is the reply to the launcher's "guestinfo" control command (slimctl guestinfo).
type GuestInfo struct {
	Hostname string       `json:"hostname,omitempty"`
	OS       *GuestOSInfo `json:"os,omitempty"`
	Timezone string       `json:"timezone,omitempty"`
	// TimezoneOffset is seconds east of UTC.
	TimezoneOffset int         `json:"timezoneOffset"`
	Users          []GuestUser `json:"users"`
}

// GuestOSInfo is what a guest agent says of the guest. It has the fields of the VMI status's
// guestOSInfo (api/v1alpha1 converts it), so the node agent copies it there unchanged.
type GuestOSInfo struct {
	ID            string `json:"id,omitempty"`
	Name          string `json:"name,omitempty"`
	PrettyName    string `json:"prettyName,omitempty"`
	Version       string `json:"version,omitempty"`
	VersionID     string `json:"versionId,omitempty"`
	KernelRelease string `json:"kernelRelease,omitempty"`
	KernelVersion string `json:"kernelVersion,omitempty"`
	Machine       string `json:"machine,omitempty"`
}

// GuestUser is a user logged in to the guest.
type GuestUser struct {
	Name   string `json:"name"`
	Domain string `json:"domain,omitempty"`
	// LoginTime is in milliseconds since the epoch.
	LoginTime uint64 `json:"loginTime,omitempty"`
}
