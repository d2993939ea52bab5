package datavolume

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/finalizer"
	"github.com/slimvirt/slimvirt/controller/requeue"
	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/kube/importsecret"
)

// CredentialsFinalizer keeps a PVC until its per-volume import Secret is deleted, so the copy
// of a tenant's credentials never outlives the import it is for.
const CredentialsFinalizer = "import.slimvirt.io/credentials"

// credentials copies the Secret and CA ConfigMap an import names, from the PVC's namespace,
// into the PVC's per-volume Secret in slimvirt's namespace, where the node reads it, and
// deletes that copy when the import ends or the PVC goes.
type credentials struct {
	client client.Client
	// reader reads past the cache: the controller neither lists nor watches Secrets or
	// ConfigMaps, it gets the few an import names.
	reader     client.Reader
	namespace  string
	driverName string
}

// importCredentials returns the Secret and ConfigMap a PVC's import names; both empty when
// it names none.
func importCredentials(pvc *corev1.PersistentVolumeClaim) (secret, configMap string) {
	if pvc.Annotations[claim.AnnSource] != claim.SourceHTTP {
		return "", ""
	}
	return pvc.Annotations[claim.AnnSecret], pvc.Annotations[claim.AnnCertConfigMap]
}

// importEnded says whether the driver reported the PVC's import finished, either way.
func importEnded(pvc *corev1.PersistentVolumeClaim) bool {
	r, ok := claim.ParseReport(pvc.Annotations)
	return ok && (r.Phase == claim.PhaseReady || r.Phase == claim.PhaseFailed)
}

// sync makes the PVC's per-volume Secret while its import needs it, and deletes it otherwise.
// The Problem is what the tenant must fix (a missing Secret); the import waits for it.
func (c *credentials) sync(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (*Problem, error) {
	secretRef, cmRef := importCredentials(pvc)
	if !pvc.DeletionTimestamp.IsZero() || importEnded(pvc) || secretRef == "" && cmRef == "" {
		return nil, c.release(ctx, pvc)
	}
	if ours, err := c.ofDriver(ctx, pvc); err != nil || !ours {
		// Another driver's claim is never given credentials; a finalizer found on one is let go.
		return nil, errors.Join(err, c.release(ctx, pvc))
	}
	if c.namespace == "" {
		return &Problem{Reason: "ImportCredentialsUnavailable",
			Message: "the controller does not know its namespace (POD_NAMESPACE), where import credentials are kept"}, nil
	}
	// The finalizer first: a Secret made for a PVC is deleted with it, even if the controller
	// stops between the two writes.
	if err := finalizer.Ensure(ctx, c.client, pvc, CredentialsFinalizer); err != nil {
		return nil, err
	}
	key := types.NamespacedName{Namespace: c.namespace, Name: importsecret.Name(pvc.UID)}
	var existing corev1.Secret
	err := c.reader.Get(ctx, key, &existing)
	if err == nil {
		return nil, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get secret %s: %w", key, err)
	}
	var secret *corev1.Secret
	if secretRef != "" {
		secret = &corev1.Secret{}
		if p, err := c.tenantObject(ctx, pvc.Namespace, secretRef, "Secret", secret); p != nil || err != nil {
			return p, err
		}
	}
	var cm *corev1.ConfigMap
	if cmRef != "" {
		cm = &corev1.ConfigMap{}
		if p, err := c.tenantObject(ctx, pvc.Namespace, cmRef, "ConfigMap", cm); p != nil || err != nil {
			return p, err
		}
	}
	out, err := importsecret.Build(c.namespace, pvc, secret, cm)
	if err != nil {
		return &Problem{Reason: "InvalidImportCredentials", Message: err.Error()}, nil
	}
	if err := c.client.Create(ctx, out); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create secret %s: %w", key, err)
	}
	log.FromContext(ctx).Info("copied import credentials", "pvc", pvc.Namespace+"/"+pvc.Name, "secret", key.String())
	return nil, nil
}

// tenantObject reads an object the import names in the PVC's own namespace, never elsewhere.
func (c *credentials) tenantObject(ctx context.Context, ns, name, kind string, into client.Object) (*Problem, error) {
	err := c.reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, into)
	if apierrors.IsNotFound(err) {
		return &Problem{Reason: "Import" + kind + "NotFound",
			Message: fmt.Sprintf("%s %s not found in namespace %s: the import waits for it", kind, name, ns)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s %s/%s: %w", strings.ToLower(kind), ns, name, err)
	}
	return nil, nil
}

// release deletes the PVC's per-volume Secret, then lets the PVC go.
func (c *credentials) release(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	if !controllerutil.ContainsFinalizer(pvc, CredentialsFinalizer) {
		return nil
	}
	if c.namespace != "" {
		s := &corev1.Secret{}
		s.Namespace, s.Name = c.namespace, importsecret.Name(pvc.UID)
		if err := c.client.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete secret %s/%s: %w", s.Namespace, s.Name, err)
		}
		log.FromContext(ctx).Info("deleted import credentials", "pvc", pvc.Namespace+"/"+pvc.Name, "secret", s.Namespace+"/"+s.Name)
	}
	before := pvc.DeepCopy()
	controllerutil.RemoveFinalizer(pvc, CredentialsFinalizer)
	if err := c.client.Patch(ctx, pvc, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer %s from pvc %s/%s: %w", CredentialsFinalizer, pvc.Namespace, pvc.Name, err)
	}
	return nil
}

// ClaimReconciler copies and deletes import credentials for every PVC of the driver: those a
// DataVolume made (their deletion and the end of their import) and hand-written ones.
type ClaimReconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	creds    *credentials
}

// Reconcile brings one PVC's per-volume import Secret up to date.
func (r *ClaimReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := r.Client.Get(ctx, req.NamespacedName, pvc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	problem, err := r.creds.sync(ctx, pvc)
	if err != nil {
		return requeue.Result(ctrl.Result{}, err)
	}
	if problem != nil {
		// A DataVolume's PVC: the DataVolume's status says it.
		if owner := controllerKind(pvc); owner != "DataVolume" {
			r.Recorder.Eventf(pvc, nil, corev1.EventTypeWarning, problem.Reason, "CopyImportCredentials", "%s", problem.Message)
		}
		return ctrl.Result{RequeueAfter: retry}, nil
	}
	return ctrl.Result{}, nil
}

// ofDriver says whether the PVC's StorageClass is the driver's: credentials are copied for
// slimvirt's imports only.
func (c *credentials) ofDriver(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (bool, error) {
	sc := storageClassName(pvc)
	if sc == "" {
		return false, nil
	}
	var class storagev1.StorageClass
	if err := c.client.Get(ctx, types.NamespacedName{Name: sc}, &class); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return class.Provisioner == c.driverName, nil
}

func controllerKind(pvc *corev1.PersistentVolumeClaim) string {
	for _, o := range pvc.OwnerReferences {
		if o.Controller != nil && *o.Controller && o.APIVersion == v1.GroupVersion.String() {
			return o.Kind
		}
	}
	return ""
}

// wantsCredentials filters the PVC events the ClaimReconciler acts on.
func wantsCredentials(o client.Object) bool {
	pvc, ok := o.(*corev1.PersistentVolumeClaim)
	if !ok {
		return false
	}
	s, cm := importCredentials(pvc)
	return s != "" || cm != "" || controllerutil.ContainsFinalizer(pvc, CredentialsFinalizer)
}

func setupClaims(mgr ctrl.Manager, creds *credentials) error {
	r := &ClaimReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("slimvirt-datavolume"), creds: creds}
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.PersistentVolumeClaim{}, builder.WithPredicates(predicate.NewPredicateFuncs(wantsCredentials))).
		Named("importcredentials").
		Complete(r)
}
