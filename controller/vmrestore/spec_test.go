package vmrestore

import (
	"reflect"
	"testing"

	"k8s.io/utils/ptr"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

func TestRestoredSpec(t *testing.T) {
	captured := v1.VirtualMachineSpec{
		RunStrategy: ptr.To(v1.RunStrategyAlways),
		Template: v1.VirtualMachineInstanceTemplateSpec{Spec: v1.VirtualMachineInstanceSpec{Volumes: []v1.Volume{
			{Name: "root", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "img"}}},
			{Name: "data", VolumeSource: v1.VolumeSource{DataVolume: &v1.DataVolumeSource{Name: "vm-data"}}},
			{Name: "logs", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "logs"}}},
		}}},
		DataVolumeTemplates: []v1.DataVolumeTemplateSpec{{ObjectMeta: v1.TemplateObjectMeta{Name: "vm-data"}}},
	}
	current := &v1.VirtualMachine{Spec: *captured.DeepCopy()}
	current.Spec.RunStrategy = ptr.To(v1.RunStrategyHalted)
	current.Spec.Template.Spec.Volumes = append(current.Spec.Template.Spec.Volumes,
		v1.Volume{Name: "added", VolumeSource: v1.VolumeSource{DataVolume: &v1.DataVolumeSource{Name: "added-later"}}})

	spec, deleted := RestoredSpec(captured, current, map[string]string{"data": "restore-u-data", "logs": "restore-u-logs"})
	if *spec.RunStrategy != v1.RunStrategyHalted {
		t.Errorf("run strategy %s: a restore must not start the VM", *spec.RunStrategy)
	}
	vols := spec.Template.Spec.Volumes
	if len(vols) != 3 || vols[0].ContainerDisk == nil || vols[1].PersistentVolumeClaim.ClaimName != "restore-u-data" || vols[1].DataVolume != nil ||
		vols[2].PersistentVolumeClaim.ClaimName != "restore-u-logs" {
		t.Errorf("volumes %+v", vols)
	}
	if len(spec.DataVolumeTemplates) != 0 {
		t.Errorf("templates %+v: the restored DataVolume's template must go", spec.DataVolumeTemplates)
	}
	if !reflect.DeepEqual(deleted, []string{"added-later", "vm-data"}) {
		t.Errorf("deleted %v", deleted)
	}
	if captured.Template.Spec.Volumes[1].DataVolume == nil {
		t.Error("the captured spec was changed")
	}
}
