//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// tenant is a user of one namespace with only the built-in edit role there: a real
// ServiceAccount token, not impersonation, so the API server's admission and authorization
// see exactly what a hostile tenant's requests look like.
type tenant struct {
	ns         string
	client     client.Client
	clientset  kubernetes.Interface
	config     *rest.Config
	kubeconfig string
}

// newTenant makes namespace ns (removed at the end of the test), labelled to enforce the Pod
// Security level podSecurity ("" leaves the namespace unlabelled), and a ServiceAccount in it
// bound to the edit ClusterRole; it returns clients that act with that account's token.
func newTenant(t *testing.T, ns, podSecurity string) *tenant {
	t.Helper()
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(cluster.config)
	if err != nil {
		t.Fatalf("admin clientset: %v", err)
	}
	_ = cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	eventually(t, 3*time.Minute, "old namespace "+ns+" gone", func() (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{}}}
	if podSecurity != "" {
		nsObj.Labels["pod-security.kubernetes.io/enforce"] = podSecurity
		nsObj.Labels["pod-security.kubernetes.io/enforce-version"] = "latest"
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, nsObj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	t.Cleanup(func() {
		if os.Getenv("KEEP_TENANT") == "" {
			_ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		}
	})
	tn := tenantAccount(t, ns, "tenant", "edit")
	// The edit role is aggregated from slimvirt-edit: the tenant must be able to make VMs, and
	// must not be able to read the cluster's Secrets.
	if out, err := tn.kubectl("auth", "can-i", "create", "virtualmachineinstances.slimvirt.io"); err != nil || strings.TrimSpace(out) != "yes" {
		t.Fatalf("tenant cannot create VMIs: %v %s", err, out)
	}
	if out, _ := tn.kubectl("auth", "can-i", "get", "secrets", "-n", "kube-system"); strings.TrimSpace(out) != "no" {
		t.Fatalf("tenant can read kube-system Secrets: %s", out)
	}
	return tn
}

// tenantAccount makes ServiceAccount name in namespace ns, bound there to clusterRole (edit,
// view, admin), and returns clients that act with its token.
func tenantAccount(t *testing.T, ns, name, clusterRole string) *tenant {
	t.Helper()
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(cluster.config)
	if err != nil {
		t.Fatalf("admin clientset: %v", err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service account: %v", err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-" + clusterRole, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatalf("bind %s: %v", clusterRole, err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for the tenant: %v", err)
	}
	cfg := rest.AnonymousClientConfig(cluster.config)
	cfg.BearerToken = tr.Status.Token
	c, err := client.New(cfg, client.Options{Scheme: cluster.client.Scheme()})
	if err != nil {
		t.Fatalf("tenant client: %v", err)
	}
	tcs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("tenant clientset: %v", err)
	}
	kc := filepath.Join(t.TempDir(), name+".kubeconfig")
	caData := cfg.CAData
	if len(caData) == 0 && cfg.CAFile != "" {
		if caData, err = os.ReadFile(cfg.CAFile); err != nil {
			t.Fatalf("read the cluster CA: %v", err)
		}
	}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: %q, certificate-authority-data: %q}}]
users: [{name: tenant, user: {token: %q}}]
contexts: [{name: tenant, context: {cluster: local, user: tenant, namespace: %q}}]
current-context: tenant
`, cfg.Host, base64.StdEncoding.EncodeToString(caData), tr.Status.Token, ns)
	if err := os.WriteFile(kc, []byte(kubeconfig), 0o600); err != nil {
		t.Fatalf("write tenant kubeconfig: %v", err)
	}
	return &tenant{ns: ns, client: c, clientset: tcs, config: cfg, kubeconfig: kc}
}

// kubectl runs kubectl as the tenant in its namespace.
func (tn *tenant) kubectl(args ...string) (string, error) {
	cmd := exec.Command(cluster.kubectl, append([]string{"--kubeconfig", tn.kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// apply applies a manifest as the tenant and fails the test when the API server refuses it.
func (tn *tenant) apply(t *testing.T, manifest string) {
	t.Helper()
	cmd := exec.Command(cluster.kubectl, "--kubeconfig", tn.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tenant apply: %v\n%s\n%s", err, out, manifest)
	}
}
