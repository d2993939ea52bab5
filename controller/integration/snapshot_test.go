package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// storage makes a StorageClass of a driver of the test's own, and, unless noClass, a
// VolumeSnapshotClass of that driver; it returns the StorageClass's name.
func storage(t *testing.T, ns string, noClass bool) string {
	t.Helper()
	ctx := context.Background()
	driver := ns + ".csi.test"
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: ns}, Provisioner: driver}
	if err := env.c.Create(ctx, sc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.c.Delete(ctx, sc) })
	if noClass {
		return sc.Name
	}
	vsc := &snapv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: ns}, Driver: driver, DeletionPolicy: snapv1.VolumeSnapshotContentDelete}
	if err := env.c.Create(ctx, vsc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.c.Delete(ctx, vsc) })
	return sc.Name
}

// snapshotVM makes a stopped VM with the example's containerDisk, emptyDisk and cloud-init
// volumes and a DataVolume disk "data" (from a dataVolumeTemplate of 1Gi in class sc), and
// waits for the DataVolume's PVC.
func snapshotVM(t *testing.T, ns, name, sc string) *v1.VirtualMachine {
	t.Helper()
	ctx := context.Background()
	halted := v1.RunStrategyHalted
	vm := newVM(ns, name, &halted, nil)
	vm.Spec.Template.Spec.Domain.Devices.Disks = append(vm.Spec.Template.Spec.Domain.Devices.Disks, v1.Disk{Name: "data", Disk: &v1.DiskTarget{Bus: "virtio"}})
	vm.Spec.Template.Spec.Volumes = append(vm.Spec.Template.Spec.Volumes, v1.Volume{Name: "data", VolumeSource: v1.VolumeSource{DataVolume: &v1.DataVolumeSource{Name: name + "-data"}}})
	vm.Spec.DataVolumeTemplates = []v1.DataVolumeTemplateSpec{{
		ObjectMeta: v1.TemplateObjectMeta{Name: name + "-data"},
		Spec: v1.DataVolumeTemplateData{
			Source: v1.DataVolumeSourceSpec{Blank: &v1.DataVolumeBlankImage{}},
			Storage: &v1.StorageSpec{StorageClassName: ptr.To(sc),
				Resources: v1.StorageResources{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
		},
	}}
	if err := env.c.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the datavolume's pvc", func() (bool, error) {
		err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name + "-data"}, &corev1.PersistentVolumeClaim{})
		return err == nil, err
	})
	return getVM(t, ns, name)
}

func newSnapshot(t *testing.T, ns, name, vm string, mod func(*v1.VirtualMachineSnapshot)) *v1.VirtualMachineSnapshot {
	t.Helper()
	s := &v1.VirtualMachineSnapshot{ObjectMeta: objectMeta(ns, name), Spec: v1.VirtualMachineSnapshotSpec{
		Source: v1.SnapshotSourceReference{APIGroup: ptr.To("slimvirt.io"), Kind: "VirtualMachine", Name: vm}}}
	if mod != nil {
		mod(s)
	}
	if err := env.c.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitSnapshot waits until cond holds for the snapshot and returns it.
func waitSnapshot(t *testing.T, ns, name, what string, cond func(*v1.VirtualMachineSnapshot) bool) *v1.VirtualMachineSnapshot {
	t.Helper()
	s := &v1.VirtualMachineSnapshot{}
	eventually(t, "snapshot "+name+" "+what, func() (bool, error) {
		if err := env.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
			return false, err
		}
		return cond(s), fmt.Errorf("status %+v", s.Status)
	})
	return s
}

func failedWith(msg string) func(*v1.VirtualMachineSnapshot) bool {
	return func(s *v1.VirtualMachineSnapshot) bool {
		return s.Status.Phase == v1.SnapshotFailed && s.Status.Error != nil && strings.Contains(ptr.Deref(s.Status.Error.Message, ""), msg)
	}
}

// readyVolumeSnapshot plays the snapshot-controller (nothing provisions volumes here): it marks
// the VolumeSnapshot ready to use with a restore size, as that controller does once the CSI
// driver has cut the snapshot.
func readyVolumeSnapshot(t *testing.T, ns, name, size string) {
	t.Helper()
	eventually(t, "volumesnapshot "+name+" marked ready", func() (bool, error) {
		vs := &snapv1.VolumeSnapshot{}
		if err := env.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, vs); err != nil {
			return false, err
		}
		vs.Status = &snapv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(true), RestoreSize: ptr.To(resource.MustParse(size)),
			CreationTime: ptr.To(metav1.Now()), BoundVolumeSnapshotContentName: ptr.To("snapcontent-" + name)}
		err := env.c.Status().Update(context.Background(), vs)
		return err == nil, err
	})
}

// TestVMSnapshotAndRestore: a stopped VM with a DataVolume disk and containerDisk, emptyDisk
// and cloud-init volumes is snapshotted: the content holds the VM's spec and one backup for the
// DataVolume's PVC, whose VolumeSnapshot is made with the driver's class; the other volumes are
// listed as excluded. The snapshot is ready when its VolumeSnapshot is. A restore of the stopped
// VM makes a PVC from the VolumeSnapshot, points the VM at it and deletes the old DataVolume;
// a restore of the running VM is refused.
func TestVMSnapshotAndRestore(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	playKubelet(t, ns)
	sc := storage(t, ns, false)
	vm := snapshotVM(t, ns, "db", sc)

	newSnapshot(t, ns, "snap", "db", nil)
	s := waitSnapshot(t, ns, "snap", "in progress with its content", func(s *v1.VirtualMachineSnapshot) bool {
		return s.Status.Phase == v1.SnapshotInProgress && s.Status.VirtualMachineSnapshotContentName != nil
	})
	if got := s.Status.SnapshotVolumes; got == nil || strings.Join(got.IncludedVolumes, ",") != "data" ||
		strings.Join(got.ExcludedVolumes, ",") != "containerdisk,emptydisk,cloudinitdisk" {
		t.Errorf("snapshotVolumes = %+v, want included [data], excluded [containerdisk emptydisk cloudinitdisk]", got)
	}
	if ptr.Deref(s.Status.SourceUID, "") != vm.UID || ptr.Deref(s.Status.ReadyToUse, true) || len(s.Status.Indications) != 0 {
		t.Errorf("status %+v: want the VM's UID, not ready, no indications (offline)", s.Status)
	}
	content := &v1.VirtualMachineSnapshotContent{}
	if err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: *s.Status.VirtualMachineSnapshotContentName}, content); err != nil {
		t.Fatal(err)
	}
	if cvm := content.Spec.Source.VirtualMachine; cvm == nil || cvm.ObjectMeta.Name != "db" || len(cvm.Spec.Template.Spec.Volumes) != 4 || len(cvm.Spec.DataVolumeTemplates) != 1 {
		t.Fatalf("content source %+v: want the VM's spec", content.Spec.Source)
	}
	if b := content.Spec.VolumeBackups; len(b) != 1 || b[0].VolumeName != "data" || b[0].PersistentVolumeClaim.ObjectMeta.Name != "db-data" ||
		ptr.Deref(b[0].PersistentVolumeClaim.Spec.StorageClassName, "") != sc {
		t.Fatalf("volume backups %+v", b)
	}
	if !metav1.IsControlledBy(content, s) {
		t.Errorf("content owners %+v: want the snapshot (deletionPolicy Delete)", content.OwnerReferences)
	}
	vsName := *content.Spec.VolumeBackups[0].VolumeSnapshotName
	vs := &snapv1.VolumeSnapshot{}
	if err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: vsName}, vs); err != nil {
		t.Fatal(err)
	}
	if ptr.Deref(vs.Spec.Source.PersistentVolumeClaimName, "") != "db-data" || ptr.Deref(vs.Spec.VolumeSnapshotClassName, "") != ns || !metav1.IsControlledBy(vs, content) {
		t.Errorf("volumesnapshot spec %+v owners %+v", vs.Spec, vs.OwnerReferences)
	}

	readyVolumeSnapshot(t, ns, vsName, "2Gi")
	waitSnapshot(t, ns, "snap", "ready", func(s *v1.VirtualMachineSnapshot) bool {
		return s.Status.Phase == v1.SnapshotSucceeded && ptr.Deref(s.Status.ReadyToUse, false) && s.Status.CreationTime != nil
	})

	// The restore.
	rs := &v1.VirtualMachineRestore{ObjectMeta: objectMeta(ns, "back"), Spec: v1.VirtualMachineRestoreSpec{
		Target: v1.SnapshotSourceReference{APIGroup: ptr.To("slimvirt.io"), Kind: "VirtualMachine", Name: "db"}, VirtualMachineSnapshotName: "snap"}}
	if err := env.c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the restore to complete", func() (bool, error) {
		err := env.c.Get(ctx, client.ObjectKeyFromObject(rs), rs)
		return err == nil && ptr.Deref(rs.Status.Complete, false), fmt.Errorf("%w: %+v", err, rs.Status)
	})
	pvcName := "restore-" + string(rs.UID) + "-data"
	if r := rs.Status.Restores; len(r) != 1 || r[0].VolumeName != "data" || r[0].PersistentVolumeClaimName != pvcName || r[0].VolumeSnapshotName != vsName ||
		ptr.Deref(r[0].DataVolumeName, "") != "db-data" {
		t.Errorf("restores %+v", r)
	}
	if strings.Join(rs.Status.DeletedDataVolumes, ",") != "db-data" || rs.Status.RestoreTime == nil {
		t.Errorf("status %+v: want deletedDataVolumes [db-data] and a restore time", rs.Status)
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: pvcName}, pvc); err != nil {
		t.Fatal(err)
	}
	ds := pvc.Spec.DataSource
	if ds == nil || ds.Kind != "VolumeSnapshot" || ds.Name != vsName || ptr.Deref(ds.APIGroup, "") != "snapshot.storage.k8s.io" {
		t.Errorf("restored pvc dataSource %+v", ds)
	}
	if size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; size.String() != "2Gi" || ptr.Deref(pvc.Spec.StorageClassName, "") != sc {
		t.Errorf("restored pvc size %s class %v: want the snapshot's restoreSize 2Gi and class %s", size.String(), pvc.Spec.StorageClassName, sc)
	}
	if len(pvc.OwnerReferences) != 1 || pvc.OwnerReferences[0].UID != vm.UID {
		t.Errorf("restored pvc owners %+v: want the VM", pvc.OwnerReferences)
	}
	vm = getVM(t, ns, "db")
	if vol := vm.Spec.Template.Spec.Volumes[3]; vol.Name != "data" || vol.PersistentVolumeClaim == nil || vol.PersistentVolumeClaim.ClaimName != pvcName || vol.DataVolume != nil {
		t.Errorf("the VM's data volume is %+v, want the restored PVC", vol)
	}
	if len(vm.Spec.DataVolumeTemplates) != 0 || vm.EffectiveRunStrategy() != v1.RunStrategyHalted {
		t.Errorf("the VM keeps templates %+v or changed its run strategy %s", vm.Spec.DataVolumeTemplates, vm.EffectiveRunStrategy())
	}
	eventually(t, "the old datavolume to be deleted", func() (bool, error) {
		err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "db-data"}, &v1.DataVolume{})
		return apierrors.IsNotFound(err), err
	})

	// A running VM is not restored.
	always := v1.RunStrategyAlways
	vm.Spec.RunStrategy = &always
	if err := env.c.Update(ctx, vm); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the VMI", func() (bool, error) {
		err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "db"}, &v1.VirtualMachineInstance{})
		return err == nil, err
	})
	rs2 := &v1.VirtualMachineRestore{ObjectMeta: objectMeta(ns, "again"), Spec: rs.Spec}
	if err := env.c.Create(ctx, rs2); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the restore of a running VM to be refused", func() (bool, error) {
		err := env.c.Get(ctx, client.ObjectKeyFromObject(rs2), rs2)
		for _, c := range rs2.Status.Conditions {
			if c.Type == v1.ConditionReady && c.Reason == "VMNotStopped" && strings.Contains(c.Message, "stop it before restoring") {
				return true, nil
			}
		}
		return false, fmt.Errorf("%w: %+v", err, rs2.Status)
	})
	if ptr.Deref(rs2.Status.Complete, true) || len(rs2.Status.Restores) != 0 {
		t.Errorf("refused restore status %+v", rs2.Status)
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := env.c.List(ctx, &pvcs, client.InNamespace(ns), client.MatchingLabels{"restore.slimvirt.io/name": "again"}); err != nil || len(pvcs.Items) != 0 {
		t.Errorf("the refused restore made PVCs: %d, %v", len(pvcs.Items), err)
	}
}

// TestVMSnapshotFailures: what cannot be snapshotted fails with a message that says why.
func TestVMSnapshotFailures(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	other := newNamespace(t)
	sc := storage(t, ns, false)
	snapshotVM(t, ns, "vm", sc)
	// A VM of the same name in another namespace is not a source.
	snapshotVM(t, other, "elsewhere", storage(t, other, false))

	newSnapshot(t, ns, "not-a-vm", "vm", func(s *v1.VirtualMachineSnapshot) { s.Spec.Source.Kind = "Pod"; s.Spec.Source.APIGroup = nil })
	waitSnapshot(t, ns, "not-a-vm", "failed", failedWith("the source must be a VirtualMachine"))
	newSnapshot(t, ns, "other-ns", "elsewhere", nil)
	waitSnapshot(t, ns, "other-ns", "failed", failedWith("VirtualMachine elsewhere does not exist in namespace "+ns))

	noClass := newNamespace(t)
	snapshotVM(t, noClass, "vm", storage(t, noClass, true))
	newSnapshot(t, noClass, "no-class", "vm", nil)
	s := waitSnapshot(t, noClass, "no-class", "failed", failedWith("no VolumeSnapshotClass for driver "+noClass+".csi.test"))
	if c := s.Status.Conditions; len(c) != 3 {
		t.Errorf("conditions %+v: want Progressing, Ready and Failure", c)
	}
	var list snapv1.VolumeSnapshotList
	if err := env.c.List(context.Background(), &list, client.InNamespace(noClass)); err != nil || len(list.Items) != 0 {
		t.Errorf("volumesnapshots made for a failed snapshot: %d, %v", len(list.Items), err)
	}
}

// TestVMSnapshotOnline: a running VM without a guest agent is snapshotted crash-consistent
// (Online, NoGuestAgent); one whose agent is connected is frozen first, and when the freeze
// cannot be carried out (here no node agent serves it) no VolumeSnapshot is made and the
// snapshot fails at its failureDeadline saying why.
func TestVMSnapshotOnline(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	playKubelet(t, ns)
	sc := storage(t, ns, false)
	for _, name := range []string{"noagent", "agent"} {
		vm := snapshotVM(t, ns, name, sc)
		vm.Spec.RunStrategy = ptr.To(v1.RunStrategyAlways)
		vm.Spec.DataVolumeTemplates[0].Spec.Source = v1.DataVolumeSourceSpec{Blank: &v1.DataVolumeBlankImage{}}
		if err := env.c.Update(ctx, vm); err != nil {
			t.Fatal(err)
		}
		eventually(t, "pvc "+name+"-data bound", func() (bool, error) {
			pvc := &corev1.PersistentVolumeClaim{}
			if err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name + "-data"}, pvc); err != nil {
				return false, err
			}
			pvc.Status.Phase = corev1.ClaimBound
			err := env.c.Status().Update(ctx, pvc)
			return err == nil, err
		})
		runVMI(t, ns, name)
	}
	// The node agent's part: the guest agent of "agent" is connected.
	eventually(t, "the agent connected", func() (bool, error) {
		vmi := getVMI(t, ns, "agent")
		vmi.Status.SetCondition(v1.VirtualMachineInstanceCondition{Type: v1.VMIAgentConnected, Status: corev1.ConditionTrue}, metav1.Now())
		err := env.c.Status().Update(ctx, vmi)
		return err == nil, err
	})

	newSnapshot(t, ns, "online", "noagent", nil)
	s := waitSnapshot(t, ns, "online", "with indications", func(s *v1.VirtualMachineSnapshot) bool { return len(s.Status.Indications) > 0 })
	if fmt.Sprint(s.Status.Indications) != "[Online NoGuestAgent]" {
		t.Errorf("indications %v, want [Online NoGuestAgent]", s.Status.Indications)
	}
	eventually(t, "the volumesnapshot of the running VM", func() (bool, error) {
		err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "vmsnapshot-" + string(s.UID) + "-volume-data"}, &snapv1.VolumeSnapshot{})
		return err == nil, err
	})

	start := time.Now()
	newSnapshot(t, ns, "frozen", "agent", func(s *v1.VirtualMachineSnapshot) {
		s.Spec.FailureDeadline = &metav1.Duration{Duration: 3 * time.Second}
	})
	s = waitSnapshot(t, ns, "frozen", "failed at its deadline", failedWith("failure deadline 3s: freeze the guest's filesystems"))
	if time.Since(start) < 3*time.Second {
		t.Errorf("failed after %s, before its deadline", time.Since(start))
	}
	var list snapv1.VolumeSnapshotList
	if err := env.c.List(ctx, &list, client.InNamespace(ns)); err != nil || len(list.Items) != 1 {
		t.Errorf("volumesnapshots: %d, %v; want only the one of the VM without an agent", len(list.Items), err)
	}
}

// TestVMSnapshotDeletionPolicy: with the garbage collector running, deleting a snapshot deletes
// its content and VolumeSnapshots (Delete, the default) or leaves them (Retain).
func TestVMSnapshotDeletionPolicy(t *testing.T) {
	needController(t)
	ctx := context.Background()
	if err := env.te.StartGarbageCollector(t.Context(), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t)
	snapshotVM(t, ns, "vm", storage(t, ns, false))
	for _, policy := range []v1.DeletionPolicy{v1.VirtualMachineSnapshotContentDelete, v1.VirtualMachineSnapshotContentRetain} {
		name := strings.ToLower(string(policy))
		newSnapshot(t, ns, name, "vm", func(s *v1.VirtualMachineSnapshot) { s.Spec.DeletionPolicy = ptr.To(policy) })
		s := waitSnapshot(t, ns, name, "with its content", func(s *v1.VirtualMachineSnapshot) bool {
			return s.Status.VirtualMachineSnapshotContentName != nil
		})
		contentKey := types.NamespacedName{Namespace: ns, Name: *s.Status.VirtualMachineSnapshotContentName}
		vsKey := types.NamespacedName{Namespace: ns, Name: "vmsnapshot-" + string(s.UID) + "-volume-data"}
		eventually(t, "the volumesnapshot", func() (bool, error) {
			err := env.c.Get(ctx, vsKey, &snapv1.VolumeSnapshot{})
			return err == nil, err
		})
		if err := env.c.Delete(ctx, s); err != nil {
			t.Fatal(err)
		}
		eventually(t, "snapshot "+name+" gone", func() (bool, error) {
			err := env.c.Get(ctx, client.ObjectKeyFromObject(s), &v1.VirtualMachineSnapshot{})
			return apierrors.IsNotFound(err), err
		})
		if policy == v1.VirtualMachineSnapshotContentDelete {
			eventually(t, "the content and volumesnapshot to go", func() (bool, error) {
				errC := env.c.Get(ctx, contentKey, &v1.VirtualMachineSnapshotContent{})
				errV := env.c.Get(ctx, vsKey, &snapv1.VolumeSnapshot{})
				return apierrors.IsNotFound(errC) && apierrors.IsNotFound(errV), errors.Join(errC, errV)
			})
			continue
		}
		time.Sleep(3 * time.Second) // the garbage collector has had its chance
		if err := env.c.Get(ctx, contentKey, &v1.VirtualMachineSnapshotContent{}); err != nil {
			t.Errorf("retained content: %v", err)
		}
		if err := env.c.Get(ctx, vsKey, &snapv1.VolumeSnapshot{}); err != nil {
			t.Errorf("retained volumesnapshot: %v", err)
		}
	}
}

// TestDataVolumeSnapshotSource: a DataVolume with a snapshot source gets a PVC whose dataSource
// is the VolumeSnapshot (of the snapshot's restoreSize when it names no size) and succeeds once
// the PVC is bound; a snapshot of another namespace is refused.
func TestDataVolumeSnapshotSource(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	sc := storage(t, ns, false)
	src := &corev1.PersistentVolumeClaim{ObjectMeta: objectMeta(ns, "src"), Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To(sc),
		Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if err := env.c.Create(ctx, src); err != nil {
		t.Fatal(err)
	}
	vs := &snapv1.VolumeSnapshot{ObjectMeta: objectMeta(ns, "vs"), Spec: snapv1.VolumeSnapshotSpec{
		Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("src")}, VolumeSnapshotClassName: ptr.To(ns)}}
	if err := env.c.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	readyVolumeSnapshot(t, ns, "vs", "3Gi")
	dv := &v1.DataVolume{ObjectMeta: objectMeta(ns, "restored"), Spec: v1.DataVolumeSpec{
		Source:  v1.DataVolumeSourceSpec{Snapshot: &v1.DataVolumeSourceSnapshot{Name: "vs"}},
		Storage: &v1.StorageSpec{StorageClassName: ptr.To(sc)}}}
	if err := env.c.Create(ctx, dv); err != nil {
		t.Fatal(err)
	}
	pvc := &corev1.PersistentVolumeClaim{}
	eventually(t, "the pvc", func() (bool, error) {
		err := env.c.Get(ctx, client.ObjectKeyFromObject(dv), pvc)
		return err == nil, err
	})
	if ds := pvc.Spec.DataSource; ds == nil || ds.Kind != "VolumeSnapshot" || ds.Name != "vs" || ptr.Deref(ds.APIGroup, "") != "snapshot.storage.k8s.io" {
		t.Errorf("dataSource %+v", pvc.Spec.DataSource)
	}
	if size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; size.String() != "3Gi" {
		t.Errorf("size %s, want the restoreSize 3Gi", size.String())
	}
	pvc.Status.Phase = corev1.ClaimBound
	if err := env.c.Status().Update(ctx, pvc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the datavolume to succeed", func() (bool, error) {
		err := env.c.Get(ctx, client.ObjectKeyFromObject(dv), dv)
		return err == nil && dv.Status.Phase == v1.DataVolumeSucceeded, fmt.Errorf("%w: %+v", err, dv.Status)
	})

	cross := &v1.DataVolume{ObjectMeta: objectMeta(ns, "cross"), Spec: v1.DataVolumeSpec{
		Source:  v1.DataVolumeSourceSpec{Snapshot: &v1.DataVolumeSourceSnapshot{Namespace: "kube-system", Name: "vs"}},
		Storage: &v1.StorageSpec{Resources: v1.StorageResources{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}}
	if err := env.c.Create(ctx, cross); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cross-namespace datavolume to fail", func() (bool, error) {
		err := env.c.Get(ctx, client.ObjectKeyFromObject(cross), cross)
		for _, c := range cross.Status.Conditions {
			if cross.Status.Phase == v1.DataVolumeFailed && c.Reason == "CrossNamespaceSnapshotUnsupported" && strings.Contains(c.Message, "must be in the DataVolume's namespace") {
				return true, nil
			}
		}
		return false, fmt.Errorf("%w: %+v", err, cross.Status)
	})
	if err := env.c.Get(ctx, client.ObjectKeyFromObject(cross), &corev1.PersistentVolumeClaim{}); !apierrors.IsNotFound(err) {
		t.Errorf("a pvc was made for a snapshot of another namespace: %v", err)
	}
}
