package kube_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/csi/kube"
	"github.com/slimvirt/slimvirt/csi/kube/importsecret"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

const release = "slimvirt"

// TestCredentialsFromReleaseNamespace runs the node's credential reader on a real API server,
// as the node's service account with the chart's rights (get on Secrets of the release
// namespace only): it reads the per-volume Secret of the PVC it imports, found from the PVC's
// UID, and nothing a tenant names.
func TestCredentialsFromReleaseNamespace(t *testing.T) {
	env, err := testenv.Start("kube")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	ctx := t.Context()
	admin := env.Clientset
	for _, ns := range []string{release, "tenant-a", "tenant-b"} {
		testutil.Must(t, env.Namespace(ctx, ns))
	}
	cs := nodeClient(t, env)

	// Each tenant's own Secret, which the node must never read.
	for _, ns := range []string{"tenant-a", "tenant-b"} {
		_, err := admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds"},
			Data: map[string][]byte{"accessKeyId": []byte(ns + "-own"), "secretKey": []byte("x")}}, metav1.CreateOptions{})
		testutil.Must(t, err)
	}
	if _, err := cs.CoreV1().Secrets("tenant-a").Get(ctx, "creds", metav1.GetOptions{}); err == nil {
		t.Fatal("the node's account reads a tenant's Secret: the test's RBAC is too wide")
	}
	pvcA := makePVC(t, admin, "tenant-a", "a", map[string]string{claim.AnnSecret: "creds", claim.AnnCertConfigMap: "ca"})
	pvcB := makePVC(t, admin, "tenant-b", "b", map[string]string{claim.AnnSecret: "creds"})
	makePVC(t, admin, "tenant-a", "pending", map[string]string{claim.AnnSecret: "creds"})
	forged := makePVC(t, admin, "tenant-a", "forged", map[string]string{claim.AnnSecret: "creds"})
	// The controller's copies: from tenant a, user-a with a CA; from tenant b, user-b.
	for _, c := range []struct {
		pvc  *corev1.PersistentVolumeClaim
		user string
		ca   bool
	}{{pvcA, "user-a", true}, {pvcB, "user-b", false}} {
		var ca *corev1.ConfigMap
		if c.ca {
			ca = &corev1.ConfigMap{Data: map[string]string{"ca.crt": "PEM-A"}}
		}
		s, err := importsecret.Build(release, c.pvc, &corev1.Secret{Data: map[string][]byte{"username": []byte(c.user), "password": []byte("pw")}}, ca)
		testutil.Must(t, err)
		_, err = admin.CoreV1().Secrets(release).Create(ctx, s, metav1.CreateOptions{})
		testutil.Must(t, err)
	}
	// A Secret with the right name for PVC "forged" but not made for it (no labels).
	_, err = admin.CoreV1().Secrets(release).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: importsecret.Name(forged.UID)},
		Data: map[string][]byte{"accessKeyId": []byte("forged"), "secretKey": []byte("x")}}, metav1.CreateOptions{})
	testutil.Must(t, err)

	node := kube.NewInNamespace(cs, release)
	src, err := node.ClaimSource(ctx, "tenant-a", "a")
	testutil.Must(t, err)
	if want := importsecret.Name(pvcA.UID); src.Import.SecretRef != want || src.Import.CertConfigMap != want {
		t.Fatalf("source names %q and %q, want the per-volume Secret %s", src.Import.SecretRef, src.Import.CertConfigMap, want)
	}
	user, pass, err := node.BasicAuth(ctx, "tenant-a", src.Import.SecretRef)
	testutil.Must(t, err)
	if user != "user-a" || pass != "pw" {
		t.Fatalf("credentials %q %q, want the copy of tenant a's (user-a pw)", user, pass)
	}
	pem, err := node.CABundle(ctx, "tenant-a", src.Import.CertConfigMap)
	testutil.Must(t, err)
	if string(pem) != "PEM-A\n" {
		t.Fatalf("CA bundle %q", pem)
	}

	refused := []struct {
		name string
		call func() error
		want string
	}{
		{"a tenant's own Secret by name", func() error { _, _, err := node.BasicAuth(ctx, "tenant-a", "creds"); return err }, "not a per-volume import Secret"},
		{"another tenant's per-volume Secret", func() error {
			_, _, err := node.BasicAuth(ctx, "tenant-a", importsecret.Name(pvcB.UID))
			return err
		}, "is not the import Secret of a PVC"},
		{"a Secret of the release namespace not made for the PVC", func() error {
			_, _, err := node.BasicAuth(ctx, "tenant-a", importsecret.Name(forged.UID))
			return err
		}, "is not the import Secret of a PVC"},
		{"a CA from a Secret without one", func() error { _, err := node.CABundle(ctx, "tenant-b", importsecret.Name(pvcB.UID)); return err }, "no CA bundle"},
		{"a PVC whose copy is not made yet", func() error { _, err := node.ClaimSource(ctx, "tenant-a", "pending"); return err }, "import credentials are not ready"},
		{"a PVC whose Secret was not made for it", func() error { _, err := node.ClaimSource(ctx, "tenant-a", "forged"); return err }, "is not the import Secret"},
		{"release namespace unknown", func() error {
			_, _, err := kube.NewInNamespace(cs, "").BasicAuth(ctx, "tenant-a", src.Import.SecretRef)
			return err
		}, "POD_NAMESPACE"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
		})
	}
	var pe *importer.PermanentError
	if _, _, err := node.BasicAuth(ctx, "tenant-a", importsecret.Name(pvcB.UID)); !errors.As(err, &pe) {
		t.Fatalf("reading another tenant's copy: %v, want a permanent error (no retries)", err)
	}
}

// nodeClient is a clientset of a service account with the node's rights on credentials: get on
// Secrets of the release namespace, and get on PVCs.
func nodeClient(t *testing.T, env *testenv.Env) kubernetes.Interface {
	t.Helper()
	ctx := t.Context()
	admin := env.Clientset
	_, err := admin.RbacV1().Roles(release).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "node"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{})
	testutil.Must(t, err)
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: release, Name: "node"}}
	_, err = admin.RbacV1().RoleBindings(release).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "node"},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "node"}, Subjects: subject}, metav1.CreateOptions{})
	testutil.Must(t, err)
	_, err = admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "node-pvcs"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{})
	testutil.Must(t, err)
	_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "node-pvcs"},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "node-pvcs"}, Subjects: subject}, metav1.CreateOptions{})
	testutil.Must(t, err)
	token, err := env.Token(ctx, release, "node")
	testutil.Must(t, err)
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = token
	cs, err := kubernetes.NewForConfig(cfg)
	testutil.Must(t, err)
	return cs
}

func makePVC(t *testing.T, cs kubernetes.Interface, ns, name string, ann map[string]string) *corev1.PersistentVolumeClaim {
	t.Helper()
	ann[claim.AnnSource] = claim.SourceHTTP
	ann[claim.AnnEndpoint] = "https://images.example.com/disk.img"
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	testutil.Must(t, err)
	return pvc
}
