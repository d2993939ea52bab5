package datavolume_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/datavolume"
	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/csi/kube/importsecret"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestImportCredentials runs the reconcilers on a real API server and plays the driver (its
// report on the PVC) and the garbage collector (deleting a deleted DataVolume's PVC): an
// import's Secret is copied, only the keys the importer uses, into the release namespace
// before the import, and the copy is deleted when the import ends or the PVC goes; a Secret
// of another namespace is never copied. TestDataVolumes does the same with the real driver,
// provisioner and garbage collector.
func TestImportCredentials(t *testing.T) {
	env, err := testenv.Start("credentials")
	testutil.Must(t, err)
	t.Cleanup(func() { env.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	scheme := runtime.NewScheme()
	testutil.Must(t, clientgoscheme.AddToScheme(scheme))
	testutil.Must(t, v1.AddToScheme(scheme))
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	testutil.Must(t, err)
	for _, ns := range []string{"vms", "other-tenant", release} {
		testutil.Must(t, env.Namespace(ctx, ns))
	}
	testutil.Must(t, c.Create(ctx, &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: "slimvirt", Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner: driver.DefaultName, VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
	}))
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		// Each test of the package runs its own manager with the same controllers.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)}})
	testutil.Must(t, err)
	testutil.Must(t, datavolume.SetupWithManager(mgr, datavolume.Options{Namespace: release}))
	go mgr.Start(ctx)

	testutil.Must(t, c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "image-creds", Namespace: "vms"},
		Data: map[string][]byte{"accessKeyId": []byte("tenant-user"), "secretKey": []byte("tenant-pass"), "unrelated": []byte("not copied")}}))
	testutil.Must(t, c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "image-ca", Namespace: "vms"},
		Data: map[string]string{"ca.crt": "PEM"}}))
	testutil.Must(t, c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: "other-tenant"},
		Data: map[string][]byte{"accessKeyId": []byte("other-user"), "secretKey": []byte("other-pass")}}))
	newDV := func(name, secretRef, caRef string) {
		testutil.Must(t, c.Create(ctx, &v1.DataVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "vms"},
			Spec: v1.DataVolumeSpec{Source: v1.DataVolumeSourceSpec{HTTP: &v1.DataVolumeSourceHTTP{URL: "https://images.example.com/disk.img", SecretRef: secretRef, CertConfigMap: caRef}},
				Storage: &v1.StorageSpec{Resources: v1.StorageResources{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}}}},
		}))
	}
	// report writes on the PVC what the driver writes when the import ends.
	report := func(pvc *corev1.PersistentVolumeClaim, phase string) {
		patch := client.MergeFrom(pvc.DeepCopy())
		pvc.Annotations[claim.AnnPhase] = phase
		testutil.Must(t, c.Patch(ctx, pvc, patch))
	}
	finalizerGone := func(name string) {
		t.Helper()
		for i := 0; ; i++ {
			pvc := &corev1.PersistentVolumeClaim{}
			err := c.Get(ctx, types.NamespacedName{Namespace: "vms", Name: name}, pvc)
			if client.IgnoreNotFound(err) == nil && !slices.Contains(pvc.Finalizers, datavolume.CredentialsFinalizer) {
				return
			}
			if i > 150 {
				t.Fatalf("PVC %s keeps finalizer %s", name, datavolume.CredentialsFinalizer)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	t.Run("copied before the import, only the importer's keys, deleted when it ends", func(t *testing.T) {
		newDV("private", "image-creds", "image-ca")
		pvc := waitPVC(t, c, "private")
		s := waitSecret(t, c, importsecret.Name(pvc.UID), true)
		if got := keysOf(s.Data); !slices.Equal(got, []string{"accessKeyId", "ca.crt", "secretKey"}) ||
			string(s.Data["accessKeyId"]) != "tenant-user" || string(s.Data["secretKey"]) != "tenant-pass" || string(s.Data["ca.crt"]) != "PEM\n" {
			t.Fatalf("per-volume Secret holds keys %v", got)
		}
		if s.Labels[importsecret.LabelUID] != string(pvc.UID) || s.Labels[importsecret.LabelNamespace] != "vms" || len(s.OwnerReferences) != 0 {
			t.Fatalf("per-volume Secret labels %v owners %v", s.Labels, s.OwnerReferences)
		}
		pvc = waitPVC(t, c, "private")
		if !slices.Contains(pvc.Finalizers, datavolume.CredentialsFinalizer) {
			t.Fatalf("PVC finalizers %v, want %s while the copy exists", pvc.Finalizers, datavolume.CredentialsFinalizer)
		}
		report(pvc, "Ready")
		waitSecret(t, c, importsecret.Name(pvc.UID), false)
		finalizerGone("private")
	})

	t.Run("a failed import's copy is deleted too", func(t *testing.T) {
		newDV("failing", "image-creds", "")
		pvc := waitPVC(t, c, "failing")
		waitSecret(t, c, importsecret.Name(pvc.UID), true)
		report(waitPVC(t, c, "failing"), "Failed")
		waitSecret(t, c, importsecret.Name(pvc.UID), false)
	})

	t.Run("deleted with the PVC", func(t *testing.T) {
		newDV("abandoned", "image-creds", "")
		pvc := waitPVC(t, c, "abandoned")
		waitSecret(t, c, importsecret.Name(pvc.UID), true)
		testutil.Must(t, c.Delete(ctx, &v1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: "abandoned", Namespace: "vms"}}))
		testutil.Must(t, c.Delete(ctx, pvc)) // the garbage collector's part
		waitSecret(t, c, importsecret.Name(pvc.UID), false)
		finalizerGone("abandoned")
	})

	t.Run("a hand-written PVC's credentials are copied too", func(t *testing.T) {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "by-hand", Namespace: "vms", Annotations: map[string]string{
			claim.AnnSource: claim.SourceHTTP, claim.AnnEndpoint: "https://images.example.com/disk.img", claim.AnnSecret: "image-creds"}},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To("slimvirt"),
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}}}}
		testutil.Must(t, c.Create(ctx, pvc))
		s := waitSecret(t, c, importsecret.Name(pvc.UID), true)
		if string(s.Data["accessKeyId"]) != "tenant-user" {
			t.Fatalf("per-volume Secret of a hand-written PVC holds %v", keysOf(s.Data))
		}
		report(waitPVC(t, c, "by-hand"), "Ready")
		waitSecret(t, c, importsecret.Name(pvc.UID), false)
	})

	t.Run("a Secret of another namespace is not copied", func(t *testing.T) {
		newDV("borrowed", "theirs", "")
		pvc := waitPVC(t, c, "borrowed")
		var dv *v1.DataVolume
		for i := 0; ; i++ {
			dv = &v1.DataVolume{}
			testutil.Must(t, c.Get(ctx, types.NamespacedName{Namespace: "vms", Name: "borrowed"}, dv))
			if runningReason(dv) == "ImportSecretNotFound" {
				break
			}
			if i > 150 {
				t.Fatalf("DataVolume status %+v, want reason ImportSecretNotFound", dv.Status)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if msg := runningMessage(dv); !strings.Contains(msg, "Secret theirs not found in namespace vms") {
			t.Fatalf("message %q does not say which Secret is missing where", msg)
		}
		var all corev1.SecretList
		testutil.Must(t, c.List(ctx, &all, client.InNamespace(release), client.MatchingLabels{importsecret.LabelUID: string(pvc.UID)}))
		if len(all.Items) != 0 {
			t.Fatalf("a per-volume Secret was made from another namespace's Secret: %s", all.Items[0].Name)
		}
	})
}
