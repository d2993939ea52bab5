package vmrestore

import (
	"sort"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// PVCName is the PVC restored for a volume, named as KubeVirt names it.
func PVCName(r *v1.VirtualMachineRestore, volume string) string {
	return "restore-" + string(r.UID) + "-" + volume
}

// RestoredSpec is the VM's spec after the restore: the captured spec, with each restored
// volume using its new PVC (a dataVolume volume becomes a persistentVolumeClaim volume, and
// its dataVolumeTemplate goes), and the run strategy the VM has now, so that a restore never
// starts a VM. deleted are the DataVolumes the VM uses now that the restored spec does not use.
func RestoredSpec(captured v1.VirtualMachineSpec, current *v1.VirtualMachine, restored map[string]string) (spec v1.VirtualMachineSpec, deleted []string) {
	spec = *captured.DeepCopy()
	spec.Running, spec.RunStrategy = current.Spec.Running, current.Spec.RunStrategy
	dropped := map[string]bool{}
	for i, vol := range spec.Template.Spec.Volumes {
		claim, ok := restored[vol.Name]
		if !ok {
			continue
		}
		if vol.DataVolume != nil {
			dropped[vol.DataVolume.Name] = true
		}
		spec.Template.Spec.Volumes[i].VolumeSource = v1.VolumeSource{
			PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}
	}
	var templates []v1.DataVolumeTemplateSpec
	for _, t := range spec.DataVolumeTemplates {
		if !dropped[t.ObjectMeta.Name] {
			templates = append(templates, t)
		}
	}
	spec.DataVolumeTemplates = templates
	used := dataVolumes(&spec)
	for name := range dataVolumes(&current.Spec) {
		if !used[name] {
			deleted = append(deleted, name)
		}
	}
	sort.Strings(deleted)
	return spec, deleted
}

// dataVolumes are the DataVolumes a VM spec uses or makes.
func dataVolumes(spec *v1.VirtualMachineSpec) map[string]bool {
	out := map[string]bool{}
	for _, vol := range spec.Template.Spec.Volumes {
		if vol.DataVolume != nil {
			out[vol.DataVolume.Name] = true
		}
	}
	for _, t := range spec.DataVolumeTemplates {
		out[t.ObjectMeta.Name] = true
	}
	return out
}
