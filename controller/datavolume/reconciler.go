// Package datavolume reconciles DataVolumes: it makes each DataVolume's PVC, annotated with
// the content slimvirt-csi must fill it with, and mirrors the fill progress the driver writes
// on the PVC into the DataVolume's status, phases and events (CDI's shape).
package datavolume

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/requeue"
	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/kube/importsecret"
)

const (
	// annSelectedNode is where the scheduler (or we) put the node a late-binding PVC goes to.
	annSelectedNode = "volume.kubernetes.io/selected-node"
	// AnnBindImmediate asks for a WaitForFirstConsumer DataVolume to be filled before any pod
	// uses it (CDI's annotation, so CDI manifests keep working).
	AnnBindImmediate = "cdi.kubevirt.io/storage.bind.immediate.requested"
	// retry is how often a DataVolume waiting on something we do not watch is looked at again.
	retry = 10 * time.Second
)

// Options configure the reconciler.
type Options struct {
	// DriverName is the CSI driver whose nodes take uploads and clones; csi.slimvirt.io by default.
	DriverName string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Namespace holds the per-volume Secrets that carry import credentials to the nodes, and
	// the importer pods of registry sources: slimvirt's own namespace; the controller's pod
	// namespace when empty.
	Namespace string
	// Tokens signs the upload tokens registry importers send their disk with; without it,
	// registry DataVolumes fail.
	Tokens TokenIssuer
}

// Reconciler makes DataVolumes' PVCs and reports their progress.
type Reconciler struct {
	Client client.Client
	// Reader reads what is not cached (a snapshot source's VolumeSnapshot).
	Reader    client.Reader
	Recorder  recorder.EventRecorder
	Options   Options
	creds     *credentials
	importers *importers
}

// SetupWithManager registers the DataVolume reconciler, which watches DataVolumes and their
// PVCs, and the reconciler of import credentials, which watches PVCs that name some.
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	if opts.DriverName == "" {
		opts.DriverName = claim.DriverName
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Namespace == "" {
		opts.Namespace = importsecret.PodNamespace()
	}
	creds := &credentials{client: mgr.GetClient(), reader: mgr.GetAPIReader(), namespace: opts.Namespace, driverName: opts.DriverName}
	if err := setupClaims(mgr, creds); err != nil {
		return err
	}
	r := &Reconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("slimvirt-datavolume"), Options: opts, creds: creds,
		importers: &importers{client: mgr.GetClient(), reader: mgr.GetAPIReader(), namespace: opts.Namespace, tokens: opts.Tokens}}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.DataVolume{}).
		Owns(&corev1.PersistentVolumeClaim{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(dataVolumeOfImporter),
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
				return o.GetNamespace() == opts.Namespace && o.GetLabels()[labelImporterFor] != ""
			}))).
		Named("datavolume").
		Complete(r)
}

// Reconcile brings one DataVolume's PVC and status up to date.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	dv := &v1.DataVolume{}
	if err := r.Client.Get(ctx, req.NamespacedName, dv); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.importers.cleanup(ctx, req.Namespace, req.Name, "")
		}
		return ctrl.Result{}, err
	}
	if !dv.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // the PVC is owned by the DataVolume and goes with it
	}
	obs, err := r.observe(ctx, dv)
	if err != nil {
		return requeue.Result(ctrl.Result{}, err)
	}
	return requeue.Result(ctrl.Result{}, r.writeStatus(ctx, dv, obs))
}

// observe finds or makes the PVC and looks up what the status depends on.
func (r *Reconciler) observe(ctx context.Context, dv *v1.DataVolume) (Observation, error) {
	if p := validate(dv); p != nil {
		return Observation{Problem: p}, nil
	}
	pvc := &corev1.PersistentVolumeClaim{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: dv.Namespace, Name: dv.Name}, pvc)
	switch {
	case apierrors.IsNotFound(err):
		if pvc, err = r.createPVC(ctx, dv); err != nil {
			var p *Problem
			if errors.As(err, &p) {
				return Observation{Problem: p}, nil
			}
			return Observation{}, err
		}
	case err != nil:
		return Observation{}, fmt.Errorf("get pvc %s/%s: %w", dv.Namespace, dv.Name, err)
	case !metav1.IsControlledBy(pvc, dv):
		return Observation{Problem: &Problem{Reason: "ErrClaimNotValid",
			Message: fmt.Sprintf("PVC %s already exists and is not owned by this DataVolume", dv.Name)}}, nil
	}
	obs := Observation{PVC: pvc}
	if pvc != nil && metav1.IsControlledBy(pvc, dv) {
		// Before the import starts: the node waits for the copy to exist.
		if obs.Wait, err = r.creds.sync(ctx, pvc); err != nil {
			return Observation{}, err
		}
		if dv.Spec.Source.Registry != nil {
			if obs.Wait, obs.Problem, err = r.importers.sync(ctx, dv, pvc); err != nil {
				return Observation{}, err
			}
		}
	}
	if sc := storageClassName(pvc); sc != "" {
		var class storagev1.StorageClass
		if err := r.Client.Get(ctx, types.NamespacedName{Name: sc}, &class); err == nil {
			obs.WaitForFirstConsumer = class.VolumeBindingMode != nil && *class.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer
		}
	}
	return obs, nil
}

// validate reports what the schema cannot say.
func validate(dv *v1.DataVolume) *Problem {
	if src := dv.Spec.Source.PVC; src != nil && src.Namespace != "" && src.Namespace != dv.Namespace {
		return &Problem{Reason: "CrossNamespaceCloneUnsupported",
			Message: "a pvc source must be in the DataVolume's namespace (" + dv.Namespace + ")"}
	}
	if src := dv.Spec.Source.Snapshot; src != nil && src.Namespace != "" && src.Namespace != dv.Namespace {
		return &Problem{Reason: "CrossNamespaceSnapshotUnsupported",
			Message: "a snapshot source must be in the DataVolume's namespace (" + dv.Namespace + ")"}
	}
	if dv.Spec.Source.HTTP != nil {
		if err := importOf(dv.Spec.Source.HTTP).Validate(); err != nil {
			return &Problem{Reason: "InvalidSource", Message: err.Error()}
		}
	}
	if dv.Spec.Source.Registry != nil {
		if _, err := claim.ParseImage(dv.Spec.Source.Registry.URL); err != nil {
			return &Problem{Reason: "InvalidSource", Message: err.Error()}
		}
	}
	return nil
}

func storageSpec(dv *v1.DataVolume) v1.StorageSpec {
	if dv.Spec.Storage != nil {
		return *dv.Spec.Storage
	}
	if dv.Spec.PVC != nil {
		return *dv.Spec.PVC
	}
	return v1.StorageSpec{}
}

func storageClassName(pvc *corev1.PersistentVolumeClaim) string {
	if pvc.Spec.StorageClassName != nil {
		return *pvc.Spec.StorageClassName
	}
	return ""
}

// createPVC makes the DataVolume's claim. It returns nil, nil when it must wait (a clone
// source that is not bound yet).
func (r *Reconciler) createPVC(ctx context.Context, dv *v1.DataVolume) (*corev1.PersistentVolumeClaim, error) {
	spec := storageSpec(dv)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: dv.Name, Namespace: dv.Namespace, Annotations: map[string]string{}, Labels: map[string]string{
			"app.kubernetes.io/managed-by": "slimvirt",
		}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      spec.AccessModes,
			StorageClassName: spec.StorageClassName,
			VolumeMode:       spec.VolumeMode,
		},
	}
	if len(pvc.Spec.AccessModes) == 0 {
		pvc.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	if pvc.Spec.VolumeMode == nil {
		pvc.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeFilesystem)
	}
	if pvc.Spec.StorageClassName == nil {
		if name, err := r.defaultStorageClass(ctx); err != nil {
			return nil, err
		} else if name != "" {
			pvc.Spec.StorageClassName = &name
		}
	}
	size, hasSize := spec.Resources.Requests[corev1.ResourceStorage]
	immediate := dv.Annotations[AnnBindImmediate] == "true"
	switch src := dv.Spec.Source; {
	case src.HTTP != nil, src.Registry != nil, src.Upload != nil, src.Blank != nil:
		uploadLike, err := annotateSource(pvc.Annotations, src)
		if err != nil {
			return nil, err
		}
		immediate = immediate || uploadLike
	case src.PVC != nil:
		source, node, err := r.cloneSource(ctx, dv)
		if err != nil || source == nil {
			return nil, err
		}
		pvc.Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: source.Name}
		if !hasSize {
			size, hasSize = source.Status.Capacity[corev1.ResourceStorage]
		}
		if node != "" {
			// The copy is local: the clone must be made where the source lives.
			pvc.Annotations[annSelectedNode] = node
		}
		immediate = false
	case src.Snapshot != nil:
		pvc.Spec.DataSource = &corev1.TypedLocalObjectReference{APIGroup: ptr.To(snapshotGroup), Kind: "VolumeSnapshot", Name: src.Snapshot.Name}
		if !hasSize {
			var err error
			if size, err = r.restoreSize(ctx, dv); err != nil {
				return nil, err
			}
			hasSize = true
		}
	}
	if !hasSize || size.IsZero() {
		return nil, &Problem{Reason: "ErrClaimNotValid", Message: "no size: set resources.requests.storage"}
	}
	pvc.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: size}
	if immediate {
		if err := r.pickNode(ctx, pvc); err != nil {
			return nil, err
		}
	}
	if err := controllerutil.SetControllerReference(dv, pvc, r.Client.Scheme()); err != nil {
		return nil, fmt.Errorf("own pvc %s: %w", pvc.Name, err)
	}
	if err := r.Client.Create(ctx, pvc); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil, requeue.After(time.Second, "pvc appeared while creating it")
		}
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return nil, nil // the namespace, and the DataVolume with it, is going away
		}
		r.Recorder.Eventf(dv, nil, corev1.EventTypeWarning, "ErrClaimNotValid", "CreatePVC", "create PVC %s: %v", pvc.Name, err)
		if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
			// The DataVolume's spec is immutable: the same claim would be refused again.
			return nil, &Problem{Reason: "ErrClaimNotValid", Message: fmt.Sprintf("the API server refused PVC %s: %v", pvc.Name, err)}
		}
		return nil, fmt.Errorf("create pvc %s/%s: %w", pvc.Namespace, pvc.Name, err)
	}
	log.FromContext(ctx).Info("created PVC", "pvc", pvc.Name, "size", size.String())
	r.Recorder.Eventf(dv, pvc, corev1.EventTypeNormal, "Pending", "CreatePVC", "PVC %s created", pvc.Name)
	return pvc, nil
}

// annotateSource writes what the driver fills the volume with (an import, an upload, blank)
// as the PVC's annotations; uploads are true: nothing consumes their volume before the upload.
func annotateSource(ann map[string]string, src v1.DataVolumeSourceSpec) (upload bool, err error) {
	switch {
	case src.HTTP != nil:
		ann[claim.AnnSource] = claim.SourceHTTP
		ann[claim.AnnEndpoint] = src.HTTP.URL
		setIf(ann, claim.AnnChecksum, src.HTTP.Checksum)
		setIf(ann, claim.AnnSecret, src.HTTP.SecretRef)
		setIf(ann, claim.AnnCertConfigMap, src.HTTP.CertConfigMap)
	case src.Registry != nil:
		ref, err := claim.ParseImage(src.Registry.URL)
		if err != nil {
			return false, &Problem{Reason: "InvalidSource", Message: err.Error()}
		}
		ann[claim.AnnSource] = claim.SourceRegistry
		ann[claim.AnnEndpoint] = ref
	case src.Upload != nil:
		ann[claim.AnnSource] = claim.SourceUpload
		return true, nil
	default:
		ann[claim.AnnSource] = claim.SourceBlank
	}
	return false, nil
}

func setIf(m map[string]string, k, v string) {
	if v != "" {
		m[k] = v
	}
}

func (r *Reconciler) defaultStorageClass(ctx context.Context) (string, error) {
	var classes storagev1.StorageClassList
	if err := r.Client.List(ctx, &classes); err != nil {
		return "", fmt.Errorf("list storage classes: %w", err)
	}
	for _, c := range classes.Items {
		if c.Annotations["storageclass.kubernetes.io/is-default-class"] == "true" {
			return c.Name, nil
		}
	}
	return "", nil
}

// cloneSource returns the source PVC and the node its volume is on; nil while it is not bound.
func (r *Reconciler) cloneSource(ctx context.Context, dv *v1.DataVolume) (*corev1.PersistentVolumeClaim, string, error) {
	src := &corev1.PersistentVolumeClaim{}
	key := types.NamespacedName{Namespace: dv.Namespace, Name: dv.Spec.Source.PVC.Name}
	if err := r.Client.Get(ctx, key, src); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, "", requeue.After(retry, "clone source "+key.Name+" not found")
		}
		return nil, "", fmt.Errorf("get clone source %s: %w", key, err)
	}
	if src.Status.Phase != corev1.ClaimBound {
		return nil, "", requeue.After(retry, "clone source "+key.Name+" not bound")
	}
	var pv corev1.PersistentVolume
	if err := r.Client.Get(ctx, types.NamespacedName{Name: src.Spec.VolumeName}, &pv); err != nil {
		return nil, "", fmt.Errorf("get pv %s of clone source: %w", src.Spec.VolumeName, err)
	}
	return src, claim.NodeOf(&pv), nil
}

// snapshotGroup is the API group of CSI VolumeSnapshots.
const snapshotGroup = "snapshot.storage.k8s.io"

// restoreSize is the size of the snapshot source's volume, read from the VolumeSnapshot's
// status (unstructured: the cluster may not serve VolumeSnapshots at all).
func (r *Reconciler) restoreSize(ctx context.Context, dv *v1.DataVolume) (resource.Quantity, error) {
	vs := &unstructured.Unstructured{}
	vs.SetGroupVersionKind(schema.GroupVersionKind{Group: snapshotGroup, Version: "v1", Kind: "VolumeSnapshot"})
	key := types.NamespacedName{Namespace: dv.Namespace, Name: dv.Spec.Source.Snapshot.Name}
	if err := r.Reader.Get(ctx, key, vs); err != nil {
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return resource.Quantity{}, requeue.After(retry, "snapshot source "+key.Name+" not found")
		}
		return resource.Quantity{}, fmt.Errorf("get snapshot source %s: %w", key, err)
	}
	raw, _, _ := unstructured.NestedString(vs.Object, "status", "restoreSize")
	size, err := resource.ParseQuantity(raw)
	if raw == "" || err != nil || size.Sign() <= 0 {
		return resource.Quantity{}, requeue.After(retry, "snapshot source "+key.Name+" has no restoreSize yet")
	}
	return size, nil
}

// pickNode sends a late-binding claim that no pod will trigger to a node running the driver:
// the one with the most free capacity reported, by name when equal.
func (r *Reconciler) pickNode(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	if pvc.Spec.StorageClassName == nil {
		return nil
	}
	var class storagev1.StorageClass
	if err := r.Client.Get(ctx, types.NamespacedName{Name: *pvc.Spec.StorageClassName}, &class); err != nil {
		return requeue.After(retry, "storage class "+*pvc.Spec.StorageClassName+" not found")
	}
	if class.VolumeBindingMode == nil || *class.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
		return nil
	}
	var nodes storagev1.CSINodeList
	if err := r.Client.List(ctx, &nodes); err != nil {
		return fmt.Errorf("list csi nodes: %w", err)
	}
	var caps storagev1.CSIStorageCapacityList
	_ = r.Client.List(ctx, &caps) // optional: without capacities, nodes are taken by name
	free := map[string]int64{}
	for _, c := range caps.Items {
		if c.StorageClassName != class.Name || c.Capacity == nil || c.NodeTopology == nil {
			continue
		}
		if n := c.NodeTopology.MatchLabels[claim.TopologyKey]; n != "" {
			free[n] = c.Capacity.Value()
		}
	}
	var candidates []string
	for _, n := range nodes.Items {
		for _, d := range n.Spec.Drivers {
			if d.Name == r.Options.DriverName {
				candidates = append(candidates, d.NodeID)
			}
		}
	}
	if len(candidates) == 0 {
		return requeue.After(retry, "no node runs "+r.Options.DriverName)
	}
	sort.Slice(candidates, func(i, j int) bool {
		if free[candidates[i]] != free[candidates[j]] {
			return free[candidates[i]] > free[candidates[j]]
		}
		return candidates[i] < candidates[j]
	})
	pvc.Annotations[annSelectedNode] = candidates[0]
	return nil
}

// writeStatus updates the status when it changed and records phase changes as events.
func (r *Reconciler) writeStatus(ctx context.Context, dv *v1.DataVolume, obs Observation) error {
	st := Status(dv, obs, r.Options.Now())
	if apiequality.Semantic.DeepEqual(withoutProbeTimes(st), withoutProbeTimes(dv.Status)) {
		return nil
	}
	old := dv.Status.Phase
	patch := client.MergeFrom(dv.DeepCopy())
	dv.Status = st
	if err := r.Client.Status().Patch(ctx, dv, patch); err != nil {
		return fmt.Errorf("update status of datavolume %s: %w", dv.Name, err)
	}
	if st.Phase != old {
		r.phaseEvent(dv, st)
	}
	return nil
}

func withoutProbeTimes(s v1.DataVolumeStatus) v1.DataVolumeStatus {
	c := *s.DeepCopy()
	for i := range c.Conditions {
		c.Conditions[i].LastProbeTime = metav1.Time{}
	}
	return c
}

// phaseEvent records a phase change under CDI's event reasons.
func (r *Reconciler) phaseEvent(dv *v1.DataVolume, st v1.DataVolumeStatus) {
	typ, reason, msg := corev1.EventTypeNormal, string(st.Phase), fmt.Sprintf("DataVolume %s is %s", dv.Name, st.Phase)
	switch st.Phase {
	case v1.DataVolumeSucceeded:
		reason = map[kind]string{kindImport: "ImportSucceeded", kindRegistry: "ImportSucceeded", kindUpload: "UploadSucceeded", kindClone: "CloneSucceeded", kindBlank: "ImportSucceeded", kindSnapshot: "CloneSucceeded"}[sourceKind(dv)]
		msg = "Successfully populated PVC " + dv.Name
	case v1.DataVolumeFailed:
		typ, reason = corev1.EventTypeWarning, "Error"
		for _, c := range st.Conditions {
			if c.Type == v1.DataVolumeRunning && c.Message != "" {
				msg = c.Message
			}
		}
	}
	r.Recorder.Eventf(dv, nil, typ, reason, "Reconcile", "%s", msg)
}

func importOf(h *v1.DataVolumeSourceHTTP) claim.Import {
	return claim.Import{URL: h.URL, Checksum: h.Checksum, SecretRef: h.SecretRef, CertConfigMap: h.CertConfigMap}
}
