// Package vmrestore reconciles VirtualMachineRestores: for a stopped VM and a ready snapshot of
// it, it makes one PVC per volume backup from its VolumeSnapshot, rewrites the VM's spec to the
// captured one using them, deletes the DataVolumes the VM no longer uses, and marks the restore
// complete (KubeVirt's steps).
package vmrestore

import (
	"context"
	"errors"
	"fmt"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/requeue"
)

const (
	// retry is how soon a waiting restore is looked at again.
	retry = 10 * time.Second
	// LabelRestore marks the PVCs a restore made with the restore's name.
	LabelRestore = "restore.slimvirt.io/name"
)

// Reconciler carries out VirtualMachineRestores.
type Reconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// SetupWithManager registers the reconciler; it watches restores, and the snapshots and VMs
// they wait for.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1.VirtualMachineRestore{}, indexSnapshot,
		func(o client.Object) []string {
			return []string{o.(*v1.VirtualMachineRestore).Spec.VirtualMachineSnapshotName}
		}); err != nil {
		return fmt.Errorf("index restores by snapshot: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1.VirtualMachineRestore{}, indexTarget,
		func(o client.Object) []string { return []string{o.(*v1.VirtualMachineRestore).Spec.Target.Name} }); err != nil {
		return fmt.Errorf("index restores by target: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VirtualMachineRestore{}).
		Watches(&v1.VirtualMachineSnapshot{}, handler.EnqueueRequestsFromMapFunc(r.restoresOf(indexSnapshot))).
		Watches(&v1.VirtualMachineInstance{}, handler.EnqueueRequestsFromMapFunc(r.restoresOf(indexTarget))).
		Named("vmrestore").
		Complete(r)
}

const (
	indexSnapshot = "spec.virtualMachineSnapshotName"
	indexTarget   = "spec.target.name"
)

// restoresOf maps an object to the restores of its namespace that name it under index.
func (r *Reconciler) restoresOf(index string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list v1.VirtualMachineRestoreList
		if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{index: o.GetName()}); err != nil {
			return nil
		}
		var out []reconcile.Request
		for _, x := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: x.Namespace, Name: x.Name}})
		}
		return out
	}
}

// Reconcile carries one restore on.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rs := &v1.VirtualMachineRestore{}
	if err := r.Client.Get(ctx, req.NamespacedName, rs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !rs.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // what it restored belongs to the VM
	}
	obs, err := r.reconcile(ctx, rs)
	if err != nil && !errors.As(err, new(*requeue.Error)) {
		return requeue.Result(ctrl.Result{}, err)
	}
	if werr := r.writeStatus(ctx, rs, Status(rs.Status, obs, r.Now())); werr != nil {
		return requeue.Result(ctrl.Result{}, werr)
	}
	if obs.Waiting != "" && err == nil {
		err = requeue.After(retry, obs.Waiting)
	}
	return requeue.Result(ctrl.Result{}, err)
}

// reconcile checks the restore's inputs, then restores the volumes and the spec.
func (r *Reconciler) reconcile(ctx context.Context, rs *v1.VirtualMachineRestore) (Observation, error) {
	if ptr.Deref(rs.Status.Complete, false) || isFailed(rs.Status) {
		return Observation{}, nil
	}
	in, obs, err := r.inputs(ctx, rs)
	if err != nil || obs.Problem != "" || obs.Waiting != "" {
		return obs, err
	}
	restored := map[string]string{}
	for _, b := range in.content.Spec.VolumeBackups {
		vr, err := r.restorePVC(ctx, rs, in, b)
		var p *problem
		if errors.As(err, &p) {
			return Observation{Problem: p.msg}, nil
		}
		if err != nil {
			return obs, err
		}
		obs.Restores = append(obs.Restores, vr)
		restored[b.VolumeName] = vr.PersistentVolumeClaimName
	}
	spec, deleted := RestoredSpec(in.content.Spec.Source.VirtualMachine.Spec, in.vm, restored)
	obs.Deleted = deleted
	// The DataVolumes to delete are recorded before the VM stops naming them: a restore that
	// is interrupted after the update still knows them.
	if err := r.writeStatus(ctx, rs, Status(rs.Status, obs, r.Now())); err != nil {
		return obs, err
	}
	if !apiequality.Semantic.DeepEqual(spec, in.vm.Spec) {
		patch := client.MergeFromWithOptions(in.vm.DeepCopy(), client.MergeFromWithOptimisticLock{})
		in.vm.Spec = spec
		if err := r.Client.Patch(ctx, in.vm, patch); err != nil {
			return obs, fmt.Errorf("update vm %s with the restored spec: %w", in.vm.Name, err)
		}
		log.FromContext(ctx).Info("restored the VM's spec", "vm", in.vm.Name, "volumes", len(restored))
	}
	for _, name := range rs.Status.DeletedDataVolumes {
		dv := &v1.DataVolume{ObjectMeta: metav1.ObjectMeta{Namespace: rs.Namespace, Name: name}}
		if err := r.Client.Delete(ctx, dv); client.IgnoreNotFound(err) != nil {
			return obs, fmt.Errorf("delete datavolume %s: %w", name, err)
		}
	}
	obs.Done = true
	r.Recorder.Eventf(rs, in.vm, corev1.EventTypeNormal, "VirtualMachineRestoreComplete", "Restore",
		"Successfully completed VirtualMachineRestore %s", rs.Name)
	return obs, nil
}

// inputs are the restore's checked objects.
type inputs struct {
	vm      *v1.VirtualMachine
	content *v1.VirtualMachineSnapshotContent
}

type problem struct{ msg string }

func (p *problem) Error() string { return p.msg }

// inputs gets and checks the target VM, the snapshot and its content, all of the restore's
// namespace: the snapshot must be of the target and ready, the VM stopped.
func (r *Reconciler) inputs(ctx context.Context, rs *v1.VirtualMachineRestore) (inputs, Observation, error) {
	t := rs.Spec.Target
	if t.Kind != "VirtualMachine" || (ptr.Deref(t.APIGroup, "") != "" && *t.APIGroup != v1.GroupVersion.Group) {
		return inputs{}, Observation{Problem: fmt.Sprintf("the target must be a VirtualMachine of apiGroup %s, not %s %s",
			v1.GroupVersion.Group, ptr.Deref(t.APIGroup, ""), t.Kind)}, nil
	}
	s := &v1.VirtualMachineSnapshot{}
	if err := r.get(ctx, rs.Namespace, rs.Spec.VirtualMachineSnapshotName, s); err != nil {
		return waiting(err, "SnapshotNotFound", "VirtualMachineSnapshot "+rs.Spec.VirtualMachineSnapshotName+" does not exist")
	}
	if s.Spec.Source.Name != t.Name {
		return inputs{}, Observation{Problem: fmt.Sprintf("VirtualMachineSnapshot %s is of VirtualMachine %s, not %s", s.Name, s.Spec.Source.Name, t.Name)}, nil
	}
	if s.Status.Phase == v1.SnapshotFailed {
		return inputs{}, Observation{Problem: "VirtualMachineSnapshot " + s.Name + " failed"}, nil
	}
	if !ptr.Deref(s.Status.ReadyToUse, false) || s.Status.VirtualMachineSnapshotContentName == nil {
		return inputs{}, Observation{Waiting: "VirtualMachineSnapshot " + s.Name + " is not ready to use", Reason: "SnapshotNotReady"}, nil
	}
	c := &v1.VirtualMachineSnapshotContent{}
	if err := r.get(ctx, rs.Namespace, *s.Status.VirtualMachineSnapshotContentName, c); err != nil {
		if apierrors.IsNotFound(err) {
			return inputs{}, Observation{Problem: "VirtualMachineSnapshotContent " + *s.Status.VirtualMachineSnapshotContentName + " does not exist"}, nil
		}
		return inputs{}, Observation{}, err
	}
	if ptr.Deref(c.Spec.VirtualMachineSnapshotName, "") != s.Name || c.Spec.Source.VirtualMachine == nil {
		return inputs{}, Observation{Problem: "VirtualMachineSnapshotContent " + c.Name + " does not hold VirtualMachineSnapshot " + s.Name}, nil
	}
	vm := &v1.VirtualMachine{}
	if err := r.get(ctx, rs.Namespace, t.Name, vm); err != nil {
		return waiting(err, "TargetNotFound", "VirtualMachine "+t.Name+" does not exist")
	}
	if msg := running(ctx, r.Client, vm); msg != "" {
		return inputs{}, Observation{Waiting: msg, Reason: "VMNotStopped"}, nil
	}
	return inputs{vm: vm, content: c}, Observation{}, nil
}

func (r *Reconciler) get(ctx context.Context, namespace, name string, obj client.Object) error {
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, obj); err != nil {
		return fmt.Errorf("get %s/%s: %w", namespace, name, err)
	}
	return nil
}

// waiting turns a not-found into a wait with reason and msg, and passes other errors on.
func waiting(err error, reason, msg string) (inputs, Observation, error) {
	if apierrors.IsNotFound(err) {
		return inputs{}, Observation{Waiting: msg, Reason: reason}, nil
	}
	return inputs{}, Observation{}, err
}

// running says why the VM is not stopped, or "" when it is: its VMI exists, or its run
// strategy would start one at once. KubeVirt refuses to restore a running VM the same way.
func running(ctx context.Context, c client.Client, vm *v1.VirtualMachine) string {
	vmi := &v1.VirtualMachineInstance{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: vm.Namespace, Name: vm.Name}, vmi); err == nil {
		return fmt.Sprintf("VirtualMachine %s is not stopped (its VMI is %s): stop it before restoring", vm.Name, orNone(string(vmi.Status.Phase)))
	}
	switch rs := vm.EffectiveRunStrategy(); rs {
	case v1.RunStrategyAlways, v1.RunStrategyRerunOnFailure:
		return fmt.Sprintf("VirtualMachine %s has runStrategy %s and would start: stop it before restoring", vm.Name, rs)
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return "starting"
	}
	return s
}

// restorePVC makes (or finds) the PVC of one volume backup, from its VolumeSnapshot, owned by
// the VM.
func (r *Reconciler) restorePVC(ctx context.Context, rs *v1.VirtualMachineRestore, in inputs, b v1.VolumeBackup) (v1.VolumeRestore, error) {
	vsName := ptr.Deref(b.VolumeSnapshotName, "")
	vr := v1.VolumeRestore{VolumeName: b.VolumeName, PersistentVolumeClaimName: PVCName(rs, b.VolumeName), VolumeSnapshotName: vsName}
	// The captured spec, not the VM's: a restore resumed after the VM was rewritten says the same.
	for _, vol := range in.content.Spec.Source.VirtualMachine.Spec.Template.Spec.Volumes {
		if vol.Name == b.VolumeName && vol.DataVolume != nil {
			vr.DataVolumeName = ptr.To(vol.DataVolume.Name)
		}
	}
	existing := &corev1.PersistentVolumeClaim{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: vr.PersistentVolumeClaimName}, existing)
	if err == nil {
		if existing.Labels[LabelRestore] != rs.Name {
			return vr, &problem{msg: "PersistentVolumeClaim " + existing.Name + " exists and was not made by this restore"}
		}
		return vr, nil
	}
	if !apierrors.IsNotFound(err) {
		return vr, fmt.Errorf("get pvc %s: %w", vr.PersistentVolumeClaimName, err)
	}
	vs := &snapv1.VolumeSnapshot{}
	if err := r.get(ctx, rs.Namespace, vsName, vs); err != nil {
		if apierrors.IsNotFound(err) {
			return vr, &problem{msg: fmt.Sprintf("volume %s: VolumeSnapshot %s does not exist", b.VolumeName, vsName)}
		}
		return vr, err
	}
	spec := b.PersistentVolumeClaim.Spec
	size := spec.Resources.Requests[corev1.ResourceStorage]
	if vs.Status != nil && vs.Status.RestoreSize != nil && vs.Status.RestoreSize.Cmp(size) > 0 {
		size = *vs.Status.RestoreSize
	}
	if size.IsZero() {
		return vr, &problem{msg: fmt.Sprintf("volume %s: neither the VolumeSnapshot nor the captured PVC has a size", b.VolumeName)}
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: vr.PersistentVolumeClaimName, Namespace: rs.Namespace,
			Labels: map[string]string{LabelRestore: rs.Name, "app.kubernetes.io/managed-by": "slimvirt"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      spec.AccessModes,
			StorageClassName: spec.StorageClassName,
			VolumeMode:       spec.VolumeMode,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
			DataSource:       &corev1.TypedLocalObjectReference{APIGroup: ptr.To(snapv1.GroupName), Kind: "VolumeSnapshot", Name: vsName},
		},
	}
	if len(pvc.Spec.AccessModes) == 0 {
		pvc.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	if err := controllerutil.SetOwnerReference(in.vm, pvc, r.Client.Scheme()); err != nil {
		return vr, fmt.Errorf("own pvc %s: %w", pvc.Name, err)
	}
	if err := r.Client.Create(ctx, pvc); err != nil && !apierrors.IsAlreadyExists(err) {
		if apierrors.IsInvalid(err) {
			return vr, &problem{msg: fmt.Sprintf("the API server refused PVC %s: %v", pvc.Name, err)}
		}
		return vr, fmt.Errorf("create pvc %s: %w", pvc.Name, err)
	}
	log.FromContext(ctx).Info("restored PVC", "pvc", pvc.Name, "volumesnapshot", vsName, "size", size.String())
	return vr, nil
}

// writeStatus patches the status when it changed.
func (r *Reconciler) writeStatus(ctx context.Context, rs *v1.VirtualMachineRestore, st v1.VirtualMachineRestoreStatus) error {
	if apiequality.Semantic.DeepEqual(st, rs.Status) {
		return nil
	}
	patch := client.MergeFrom(rs.DeepCopy())
	rs.Status = st
	if err := r.Client.Status().Patch(ctx, rs, patch); err != nil {
		return fmt.Errorf("update status of vmrestore %s: %w", rs.Name, err)
	}
	return nil
}
