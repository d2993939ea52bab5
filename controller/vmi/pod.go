package vmi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

const (
	runVolume     = launcherpod.RunVolume
	libvirtVolume = "libvirt-run"
	vmiVolume     = "vmi"
	hostDiskOwner = "hostdisk-owner"
	// hostDiskDirsMount/<n> is where the hostdisk-owner container sees, read-only, the n-th
	// directory hostDisks are allowed in, to check each image on the node.
	hostDiskDirsMount = "/var/run/slimvirt-hostdisk-dirs"
	// launcherBinary is the compute container's entry point in the launcher image.
	launcherBinary = "/usr/bin/slimvirt-launcher"
	// kernelBootVolume is the emptyDir at launcherpod.KernelBootDir.
	kernelBootVolume = "kernel-boot"
	// defaultContainerDiskPath is where a containerDisk image keeps its disk (KubeVirt's /disk/).
	defaultContainerDiskPath = "/disk"
	// defaultGracePeriod is KubeVirt's default VMI terminationGracePeriodSeconds.
	defaultGracePeriod = 30
	// podGraceExtra gives the launcher time to destroy the domain and exit after the guest's grace.
	podGraceExtra = 15
)

// DefaultCPUAllocationRatio is KubeVirt's: a vCPU asks for a tenth of a CPU (100m).
const DefaultCPUAllocationRatio = 10

// PodConfig is what the controller adds to a VMI to make its launcher pod.
type PodConfig struct {
	LauncherImage  string
	SigningKey     []byte
	AllowEmulation bool
	MemoryOverhead resource.Quantity
	// CPUAllocationRatio is how many vCPUs share one physical CPU in the scheduler's books: a
	// VMI that requests no CPU gets 1000m/CPUAllocationRatio per vCPU (0 means the default).
	// Without a request, a launcher pod's CPU use has no denominator, and a
	// HorizontalPodAutoscaler on CPU cannot work.
	CPUAllocationRatio int
	// AllowHostDisk lets VMIs use hostDisk volumes, which mount a node file into the
	// launcher: off unless the cluster's owner turns it on (KubeVirt's HostDisk feature gate).
	AllowHostDisk bool
	// HostDiskDirs are the node directories hostDisk images may lie under (clean, absolute).
	HostDiskDirs []string
}

// VolumeFacts are what the controller looked up in the API for a VMI's volumes.
type VolumeFacts struct {
	// Block lists the PVC-backed volumes whose PVC has volumeMode Block.
	Block map[string]bool
	// ClaimName maps PVC, DataVolume and ephemeral volumes to the claim they mount.
	ClaimName map[string]string
}

// LauncherVMI is the VMI as the launcher receives it (launcherpod.AnnotationVMI): identity,
// labels and spec only.
func LauncherVMI(vmi *v1.VirtualMachineInstance) ([]byte, error) {
	out := v1.VirtualMachineInstance{
		TypeMeta: metav1.TypeMeta{APIVersion: v1.GroupVersion.String(), Kind: "VirtualMachineInstance"},
		ObjectMeta: metav1.ObjectMeta{
			Name: vmi.Name, Namespace: vmi.Namespace, UID: vmi.UID, Labels: vmi.Labels,
		},
		Spec: vmi.Spec,
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode vmi %s for the launcher: %w", vmi.Name, err)
	}
	return raw, nil
}

// BuildPod makes the launcher pod of a VMI. It is pure: everything it needs is in its arguments.
func BuildPod(cfg PodConfig, vmi *v1.VirtualMachineInstance, podName string, facts VolumeFacts) (*corev1.Pod, error) {
	ifaces, err := interfacesAnnotation(vmi)
	if err != nil {
		return nil, err
	}
	vmiJSON, err := LauncherVMI(vmi)
	if err != nil {
		return nil, err
	}
	if len(vmiJSON) > launcherpod.MaxVMISize {
		return nil, fmt.Errorf("vmi %s is %d bytes as the launcher reads it, more than %d", vmi.Name, len(vmiJSON), launcherpod.MaxVMISize)
	}
	vmiSum := sha256.Sum256(vmiJSON)
	resources, err := computeResources(cfg, vmi)
	if err != nil {
		return nil, err
	}
	vols, err := podVolumes(vmi, facts, cfg.HostDiskDirs)
	if err != nil {
		return nil, err
	}
	var inits []corev1.Container
	if len(vols.hostDiskArgs) > 0 {
		inits = append(inits, hostDiskOwnerContainer(cfg, vols))
	}
	compute := corev1.Container{
		Name:    launcherpod.ComputeContainer,
		Image:   cfg.LauncherImage,
		Command: []string{launcherBinary},
		Env: []corev1.EnvVar{
			// The VMI itself is a file (a VMI can be larger than Linux's 128 KiB for one
			// environment string); its digest here, where the pod's spec cannot change, makes
			// the launcher refuse an annotation edited after the pod was made.
			{Name: launcherpod.EnvVMISHA256, Value: hex.EncodeToString(vmiSum[:])},
			{Name: launcherpod.EnvAllowEmulation, Value: strconv.FormatBool(cfg.AllowEmulation)},
		},
		Resources:       withDevices(resources, vmi, cfg.AllowEmulation),
		SecurityContext: computeSecurityContext(),
		VolumeMounts: append([]corev1.VolumeMount{
			{Name: runVolume, MountPath: launcherpod.RunDir},
			{Name: libvirtVolume, MountPath: launcherpod.LibvirtRunDir},
			{Name: vmiVolume, MountPath: launcherpod.VMIDir, ReadOnly: true},
		}, vols.computeMounts...),
		VolumeDevices:            vols.computeDevices,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		ImagePullPolicy:          corev1.PullIfNotPresent,
	}
	grace := int64(defaultGracePeriod)
	if g := vmi.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	hostname := vmi.Spec.Hostname
	if hostname == "" {
		hostname = vmi.Name
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      podName,
			Namespace: vmi.Namespace,
			Labels:    podLabels(vmi),
			Annotations: map[string]string{
				launcherpod.AnnotationInterfaces:          ifaces,
				launcherpod.AnnotationVMI:                 string(vmiJSON),
				"kubectl.kubernetes.io/default-container": launcherpod.ComputeContainer,
			},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vmi, v1.GroupVersion.WithKind("VirtualMachineInstance"))},
		},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr.To(false),
			RestartPolicy:                corev1.RestartPolicyNever,
			// Ready while the domain runs, as the node agent reads it from the launcher's
			// status file: no exec probe runs in the pod.
			ReadinessGates:                []corev1.PodReadinessGate{{ConditionType: launcherpod.ConditionDomainRunning}},
			TerminationGracePeriodSeconds: ptr.To(grace + podGraceExtra),
			NodeSelector:                  vmi.Spec.NodeSelector,
			Affinity:                      vmi.Spec.Affinity,
			Tolerations:                   vmi.Spec.Tolerations,
			PriorityClassName:             vmi.Spec.PriorityClassName,
			Hostname:                      hostname,
			Subdomain:                     vmi.Spec.Subdomain,
			EnableServiceLinks:            ptr.To(false),
			SecurityContext:               podSecurityContext(),
			Volumes:                       append(baseVolumes(), vols.volumes...),
			InitContainers:                inits,
			// The copiers are containers next to the launcher's, not init containers: the
			// kubelet starts the launcher as soon as it has started them (in order, so the
			// copies begin first), not after it has seen them end, which under load took it a
			// second or more; the launcher waits for their copies while it starts libvirtd.
			Containers: append(vols.copiers, compute),
		},
	}
	HoldForSignature(pod)
	return pod, nil
}

// podSecurityContext runs every container of the pod as the launcher's account, under the
// container runtime's default seccomp profile; volumes that support it (emptyDirs, Secrets,
// PVCs of a driver with fsGroupPolicy File) are given to its group, so QEMU can open the disks.
func podSecurityContext() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsUser:           ptr.To[int64](launcherpod.LauncherUID),
		RunAsGroup:          ptr.To[int64](launcherpod.LauncherGID),
		FSGroup:             ptr.To[int64](launcherpod.LauncherGID),
		FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch),
		SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// launcherCapabilities are the only capabilities the compute container keeps: the launcher
// binary carries them as file capabilities, so the launcher process (uid 107) has them and its
// children (libvirtd, QEMU) do not. NET_BIND_SERVICE: the DHCP server on port 67 for the guest,
// and one of the capabilities the Pod Security baseline level admits. Everything else is done
// by the CNI plugin (the tap, the bridge, nftables, the gateway's ARP replies) and by the node
// agent's device plugins (/dev/net/tun, /dev/kvm, the node's seed).
var launcherCapabilities = []corev1.Capability{"NET_BIND_SERVICE"}

// computeSecurityContext is the compute container's privileges: not root, no privileges, all
// capabilities dropped but launcherCapabilities. Privilege escalation stays allowed because file
// capabilities are granted at exec only without no_new_privs.
func computeSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		Privileged:               ptr.To(false),
		AllowPrivilegeEscalation: ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: launcherCapabilities},
	}
}

// copierSecurityContext is the copiers': the launcher's account, no capability at all.
func copierSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		Privileged:               ptr.To(false),
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// withDevices asks the node agent's device plugins for the node's seed, for /dev/net/tun when
// the VMI has a NIC and for /dev/kvm unless emulation is allowed (then the VMI runs under TCG,
// as KubeVirt's useEmulation does). Extended resources are limits; the request follows.
func withDevices(r corev1.ResourceRequirements, vmi *v1.VirtualMachineInstance, allowEmulation bool) corev1.ResourceRequirements {
	devices := []corev1.ResourceName{launcherpod.ResourceSeed}
	if vmi.WantsPodNetwork() {
		devices = append(devices, launcherpod.ResourceTun)
	}
	if !allowEmulation {
		devices = append(devices, launcherpod.ResourceKVM)
	}
	if r.Limits == nil {
		r.Limits = corev1.ResourceList{}
	}
	for _, d := range devices {
		r.Limits[d] = resource.MustParse("1")
	}
	return r
}

func podLabels(vmi *v1.VirtualMachineInstance) map[string]string {
	labels := make(map[string]string, len(vmi.Labels)+2)
	for k, v := range vmi.Labels {
		labels[k] = v
	}
	labels[launcherpod.LabelVMI] = vmi.Name
	labels[launcherpod.LabelApp] = launcherpod.AppLauncher
	return labels
}

// computeResources sizes the compute container: the VMI's requests and limits, with the memory
// request (and limit) raised by the launcher's overhead unless the VMI overcommits it. Without
// a memory request, the guest's memory (the API's rule, which the domain follows) is requested;
// without a CPU request, the limit or the share of a CPU cfg.CPUAllocationRatio gives its vCPUs.
func computeResources(cfg PodConfig, vmi *v1.VirtualMachineInstance) (corev1.ResourceRequirements, error) {
	spec := vmi.Spec.Domain.Resources
	out := corev1.ResourceRequirements{Requests: spec.Requests.DeepCopy(), Limits: spec.Limits.DeepCopy()}
	if out.Requests == nil {
		out.Requests = corev1.ResourceList{}
	}
	mem, ok := out.Requests[corev1.ResourceMemory]
	if !ok {
		guest, found := vmi.Spec.Domain.GuestMemory()
		if !found {
			return out, fmt.Errorf("vmi %s sets neither memory.guest nor resources.requests.memory", vmi.Name)
		}
		mem = guest
	}
	if !spec.OvercommitGuestOverhead {
		mem.Add(cfg.MemoryOverhead)
	}
	out.Requests[corev1.ResourceMemory] = mem
	if _, ok := out.Requests[corev1.ResourceCPU]; !ok {
		if limit, ok := out.Limits[corev1.ResourceCPU]; ok {
			// Kubernetes would default the request to the limit; say so here.
			out.Requests[corev1.ResourceCPU] = limit
		} else {
			out.Requests[corev1.ResourceCPU] = vcpuRequest(cfg.CPUAllocationRatio, vmi.Spec.Domain.CPU.VCPUs())
		}
	}
	if limit, ok := out.Limits[corev1.ResourceMemory]; ok {
		limit.Add(cfg.MemoryOverhead)
		out.Limits[corev1.ResourceMemory] = limit
	}
	if len(out.Limits) == 0 {
		out.Limits = nil
	}
	return out, nil
}

// vcpuRequest is the CPU request of vcpus vCPUs at ratio vCPUs per CPU, rounded up to a
// millicore.
func vcpuRequest(ratio, vcpus int) resource.Quantity {
	if ratio <= 0 {
		ratio = DefaultCPUAllocationRatio
	}
	milli := (int64(vcpus)*1000 + int64(ratio) - 1) / int64(ratio)
	return *resource.NewMilliQuantity(milli, resource.DecimalSI)
}

// baseVolumes are every launcher pod's: the run and libvirt directories, and the VMI as a file.
// The node's seed is no volume: a hostPath is what the Pod Security baseline level forbids, so
// the node agent's seed device plugin mounts it, read-only at launcherpod.NodeDir, into each
// container that asks for launcherpod.ResourceSeed.
func baseVolumes() []corev1.Volume {
	return []corev1.Volume{
		{Name: runVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: libvirtVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: vmiVolume, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{
				Path:     launcherpod.VMIFileName,
				FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + launcherpod.AnnotationVMI + "']"},
			}},
		}}},
	}
}

// copierResources: a copier reads and writes one file, then sleeps until the pod ends (a static
// binary of a few MiB resident). It runs the copier from the node's seed, so it asks for it:
// the seed device plugin mounts it only into the containers that hold the resource, and a
// node that has no seed yet takes no launcher pod.
func copierResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("10m"),
			corev1.ResourceMemory: resource.MustParse("8Mi"),
		},
		Limits: corev1.ResourceList{launcherpod.ResourceSeed: resource.MustParse("1")},
	}
}

func initResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("10m"),
		corev1.ResourceMemory: resource.MustParse("16Mi"),
	}}
}

// podVolumeSet is what a VMI's volumes add to its pod.
type podVolumeSet struct {
	volumes []corev1.Volume
	// copiers are the containers that copy disks (and kernelBoot files) out of images.
	copiers        []corev1.Container
	computeMounts  []corev1.VolumeMount
	computeDevices []corev1.VolumeDevice
	// hostDiskMounts are the hostdisk-owner container's: each image, and read-only each
	// allowed directory holding one.
	hostDiskMounts []corev1.VolumeMount
	// hostDiskArgs are the hostdisk-owner's arguments, four per image (see hostDiskOwnerContainer).
	hostDiskArgs []string
}

func podVolumes(vmi *v1.VirtualMachineInstance, facts VolumeFacts, hostDiskDirs []string) (podVolumeSet, error) {
	var set podVolumeSet
	if fw := vmi.Spec.Domain.Firmware; fw != nil && fw.KernelBoot != nil && fw.KernelBoot.Container != nil {
		set.addKernelBoot(fw.KernelBoot.Container)
	}
	for _, vol := range vmi.Spec.Volumes {
		switch {
		case vol.ContainerDisk != nil:
			set.addContainerDisk(vol.Name, vol.ContainerDisk)
		case vol.PersistentVolumeClaim != nil || vol.DataVolume != nil || vol.Ephemeral != nil:
			set.addClaim(vol, facts)
		case vol.HostDisk != nil:
			place, err := placeHostDisk(vol.HostDisk.Path, hostDiskDirs)
			if err != nil {
				return set, fmt.Errorf("volume %s: %w", vol.Name, err)
			}
			set.addHostDisk(vol.Name, vol.HostDisk, place)
		case vol.CloudInitNoCloud != nil:
			set.addSecrets(vol.Name, vol.CloudInitNoCloud.UserDataSecretRef, vol.CloudInitNoCloud.NetworkDataSecretRef)
		case vol.CloudInitConfigDrive != nil:
			set.addSecrets(vol.Name, vol.CloudInitConfigDrive.UserDataSecretRef, vol.CloudInitConfigDrive.NetworkDataSecretRef)
		}
	}
	return set, nil
}

func (s *podVolumeSet) addContainerDisk(name string, cd *v1.ContainerDiskSource) {
	volName := dnsLabel("cd-", name)
	dir := path.Join(launcherpod.ContainerDiskDir, name)
	src := cd.Path
	if src == "" {
		src = defaultContainerDiskPath
	}
	s.volumes = append(s.volumes, corev1.Volume{Name: volName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	s.copiers = append(s.copiers, corev1.Container{
		Name:                     dnsLabel("container-disk-", name),
		Image:                    cd.Image,
		ImagePullPolicy:          cd.ImagePullPolicy,
		Command:                  []string{launcherpod.ContainerDiskCopier, "copy", "--src", src, "--dst", dir, "--stay"},
		VolumeMounts:             []corev1.VolumeMount{{Name: volName, MountPath: dir}},
		Resources:                copierResources(),
		SecurityContext:          copierSecurityContext(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	})
	s.computeMounts = append(s.computeMounts, corev1.VolumeMount{Name: volName, MountPath: dir})
}

// addKernelBoot copies the kernel and initrd out of a kernelBoot image, one copier container each
// (the copier takes one file per run), into a volume of their own: the user's image never sees
// the rest of the launcher's run directory.
func (s *podVolumeSet) addKernelBoot(kb *v1.KernelBootContainer) {
	s.volumes = append(s.volumes, corev1.Volume{Name: kernelBootVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	mount := corev1.VolumeMount{Name: kernelBootVolume, MountPath: launcherpod.KernelBootDir}
	for _, f := range []struct{ name, path string }{{launcherpod.KernelBootKernel, kb.KernelPath}, {launcherpod.KernelBootInitrd, kb.InitrdPath}} {
		if f.path == "" {
			continue
		}
		s.copiers = append(s.copiers, corev1.Container{
			Name:                     "kernel-boot-" + f.name,
			Image:                    kb.Image,
			ImagePullPolicy:          kb.ImagePullPolicy,
			Command:                  []string{launcherpod.ContainerDiskCopier, "copy", "--src", f.path, "--dst", launcherpod.KernelBootDir, "--as", f.name, "--stay"},
			VolumeMounts:             []corev1.VolumeMount{mount},
			Resources:                copierResources(),
			SecurityContext:          copierSecurityContext(),
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		})
	}
	s.computeMounts = append(s.computeMounts, mount)
}

func (s *podVolumeSet) addClaim(vol v1.Volume, facts VolumeFacts) {
	volName := dnsLabel("pvc-", vol.Name)
	// An ephemeral volume's PVC is only ever the backing of the launcher's overlay, whatever its
	// readOnly says.
	readOnly := vol.PersistentVolumeClaim != nil && vol.PersistentVolumeClaim.ReadOnly || vol.Ephemeral != nil
	// A device has no read-only mount, so a read-only block PVC is published read-only. A
	// filesystem PVC is read-only in the container instead: kubelet gives a volume published
	// read-only no fsGroup, and QEMU, which is not root, could not reach the disk.img of a
	// volume no writable mount ever gave to the launcher's group.
	s.volumes = append(s.volumes, corev1.Volume{Name: volName, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: facts.ClaimName[vol.Name], ReadOnly: readOnly && facts.Block[vol.Name]},
	}})
	if facts.Block[vol.Name] {
		s.computeDevices = append(s.computeDevices, corev1.VolumeDevice{Name: volName, DevicePath: path.Join(launcherpod.BlockDir, vol.Name)})
		return
	}
	s.computeMounts = append(s.computeMounts, corev1.VolumeMount{Name: volName, MountPath: path.Join(launcherpod.PVCDir, vol.Name), ReadOnly: readOnly})
}

// addHostDisk mounts a hostDisk's image, never its directory: the launcher sees no other file
// of the node. The kubelet checks that a Disk's image exists and is a file; a DiskOrCreate's it
// creates empty, and the hostdisk-owner container sizes it. The kubelet follows links on
// the way, which is why the hostdisk-owner container checks, on the node, that the image it
// got is the file below the allowed directory, reached without a link, before anything else
// runs.
func (s *podVolumeSet) addHostDisk(name string, hd *v1.HostDisk, place hostDiskPlace) {
	volName := dnsLabel("hostdisk-", name)
	fileType := corev1.HostPathFile
	var size int64
	if hd.Type == v1.HostDiskExistsOrCreate {
		fileType = corev1.HostPathFileOrCreate
		if hd.Capacity != nil {
			size = hd.Capacity.Value()
		}
	}
	s.volumes = append(s.volumes, corev1.Volume{Name: volName, VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: hd.Path, Type: &fileType},
	}})
	file := path.Join(launcherpod.HostDiskDir, name, path.Base(hd.Path))
	mount := corev1.VolumeMount{Name: volName, MountPath: file}
	s.computeMounts = append(s.computeMounts, mount)
	s.hostDiskMounts = append(s.hostDiskMounts, mount)

	dirVol := "hostdisk-dir-" + strconv.Itoa(place.Index)
	dirMount := path.Join(hostDiskDirsMount, strconv.Itoa(place.Index))
	if !slices.ContainsFunc(s.volumes, func(v corev1.Volume) bool { return v.Name == dirVol }) {
		s.volumes = append(s.volumes, corev1.Volume{Name: dirVol, VolumeSource: corev1.VolumeSource{
			// An allowed directory may be made where it is missing (it is the cluster owner's
			// choice); the image's own directory must exist: FileOrCreate makes no directory.
			HostPath: &corev1.HostPathVolumeSource{Path: place.Dir, Type: ptr.To(corev1.HostPathDirectoryOrCreate)},
		}})
		s.hostDiskMounts = append(s.hostDiskMounts, corev1.VolumeMount{Name: dirVol, MountPath: dirMount, ReadOnly: true})
	}
	s.hostDiskArgs = append(s.hostDiskArgs, file, dirMount, place.Rel, strconv.FormatInt(size, 10))
}

// hostDiskOwnerContainer checks each hostDisk image on the node and gives it to the launcher's
// account, as KubeVirt's node handler does for its non-root launcher: the one init container
// that runs as root, with CHOWN as its only capability, and only for VMIs with hostDisks
// (allowed by the cluster's owner). Its arguments are, per image: the image as mounted, the
// allowed directory as mounted (read-only), the image's path below that directory, and the
// size to give an empty image (0 for type Disk). It changes the owner of the image only,
// never of a directory.
func hostDiskOwnerContainer(cfg PodConfig, set podVolumeSet) corev1.Container {
	cmd := []string{launcherpod.DiskcopyInImage, "own", "--uid", strconv.Itoa(launcherpod.LauncherUID), "--gid", strconv.Itoa(launcherpod.LauncherGID)}
	return corev1.Container{
		Name:            hostDiskOwner,
		Image:           cfg.LauncherImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         append(cmd, set.hostDiskArgs...),
		VolumeMounts:    set.hostDiskMounts,
		Resources:       initResources(),
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To[int64](0),
			RunAsNonRoot:             ptr.To(false),
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"CHOWN"}},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// addSecrets mounts a cloud-init volume's Secrets, merged into one directory (a projected
// volume): the user-data Secret carries key userdata, the network-data Secret networkdata.
func (s *podVolumeSet) addSecrets(name string, refs ...*corev1.LocalObjectReference) {
	var sources []corev1.VolumeProjection
	seen := map[string]bool{}
	for _, ref := range refs {
		if ref == nil || seen[ref.Name] {
			continue
		}
		seen[ref.Name] = true
		sources = append(sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{LocalObjectReference: *ref}})
	}
	if len(sources) == 0 {
		return
	}
	volName := dnsLabel("secret-", name)
	s.volumes = append(s.volumes, corev1.Volume{Name: volName, VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{Sources: sources},
	}})
	s.computeMounts = append(s.computeMounts, corev1.VolumeMount{Name: volName, MountPath: path.Join(launcherpod.SecretsDir, name), ReadOnly: true})
}

// dnsLabel makes a pod volume or container name from a prefix and a VMI volume name. Both are
// DNS labels of at most 63 characters; a name that would grow past that is shortened and made
// unique again with a hash.
func dnsLabel(prefix, name string) string {
	if len(prefix)+len(name) <= 63 {
		return prefix + name
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:])[:8]
	keep := 63 - len(prefix) - len(h) - 1
	return prefix + name[:keep] + "-" + h
}
