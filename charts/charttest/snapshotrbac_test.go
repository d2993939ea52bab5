package charttest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// TestTenantSnapshotRights installs the chart's user roles on the API server, with
// kube-controller-manager aggregating them into the built-in roles as in a cluster, and acts
// as namespace users: one bound to edit creates a VirtualMachineSnapshot and a
// VirtualMachineRestore and may freeze a VMI, but writes no content and nothing in another
// namespace; one bound to view reads and cannot create or freeze.
func TestTenantSnapshotRights(t *testing.T) {
	ctx := t.Context()
	objs, err := cluster.helm.template(ctx, prepare(t, valueSets[0]))
	if err != nil {
		t.Fatal(err)
	}
	cs := cluster.env.Clientset
	for _, o := range rendered(objs) {
		if o.GetKind() != "ClusterRole" || !strings.HasPrefix(o.GetName(), "slimvirt-") || o.GetName() == "slimvirt-controller" || o.GetName() == "slimvirt-node" {
			continue
		}
		var role rbacv1.ClusterRole
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
			t.Fatal(err)
		}
		role.ResourceVersion = ""
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create %s: %v", role.Name, err)
		}
		t.Cleanup(func() { _ = cs.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{}) })
	}
	if err := cluster.env.StartControllers(ctx, t.TempDir(), "clusterrole-aggregation-controller"); err != nil {
		t.Fatal(err)
	}
	ns, other := "snap-tenant", "snap-other"
	editor := tenant(t, ns, "editor", "edit")
	viewer := tenant(t, ns, "viewer", "view")
	_ = tenant(t, other, "someone", "edit")

	// The aggregation controller takes a moment to fold the roles in.
	waitAllowed(t, ns, "editor", authzv1.ResourceAttributes{Group: "slimvirt.io", Resource: "virtualmachinesnapshots", Verb: "create"})
	waitAllowed(t, ns, "viewer", authzv1.ResourceAttributes{Group: "slimvirt.io", Resource: "virtualmachinesnapshots", Verb: "list"})

	snapshots := schema.GroupVersionResource{Group: "slimvirt.io", Version: "v1alpha1", Resource: "virtualmachinesnapshots"}
	restores := schema.GroupVersionResource{Group: "slimvirt.io", Version: "v1alpha1", Resource: "virtualmachinerestores"}
	contents := schema.GroupVersionResource{Group: "slimvirt.io", Version: "v1alpha1", Resource: "virtualmachinesnapshotcontents"}
	snap := obj("VirtualMachineSnapshot", "snap", map[string]any{"source": map[string]any{"apiGroup": "slimvirt.io", "kind": "VirtualMachine", "name": "vm"}})
	restore := obj("VirtualMachineRestore", "back", map[string]any{
		"target": map[string]any{"apiGroup": "slimvirt.io", "kind": "VirtualMachine", "name": "vm"}, "virtualMachineSnapshotName": "snap"})
	content := obj("VirtualMachineSnapshotContent", "forged", map[string]any{"source": map[string]any{}})

	if _, err := editor.Resource(snapshots).Namespace(ns).Create(ctx, snap, metav1.CreateOptions{}); err != nil {
		t.Errorf("edit creates a snapshot: %v", err)
	}
	if _, err := editor.Resource(restores).Namespace(ns).Create(ctx, restore, metav1.CreateOptions{}); err != nil {
		t.Errorf("edit creates a restore: %v", err)
	}
	if _, err := editor.Resource(contents).Namespace(ns).Create(ctx, content, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("edit creates a content (a restore trusts contents): %v", err)
	}
	if _, err := editor.Resource(snapshots).Namespace(other).Create(ctx, snap, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("edit creates a snapshot in another namespace: %v", err)
	}
	if _, err := editor.Resource(restores).Namespace(other).Create(ctx, restore, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("edit creates a restore in another namespace: %v", err)
	}
	if _, err := viewer.Resource(snapshots).Namespace(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("view lists snapshots: %v", err)
	}
	snap.SetName("by-viewer")
	if _, err := viewer.Resource(snapshots).Namespace(ns).Create(ctx, snap, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("view creates a snapshot: %v", err)
	}
	if _, err := viewer.Resource(restores).Namespace(ns).Create(ctx, restore, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("view creates a restore: %v", err)
	}
	// Freeze is a subresource of the aggregated API, which the kube-apiserver authorizes before
	// it proxies: the same question the API server answers here.
	for _, sub := range []string{"freeze", "unfreeze"} {
		attr := authzv1.ResourceAttributes{Namespace: ns, Group: "subresources.slimvirt.io", Resource: "virtualmachineinstances", Subresource: sub, Name: "vm", Verb: "update"}
		if !allowed(t, ns, "editor", attr) {
			t.Errorf("edit may not %s", sub)
		}
		if allowed(t, ns, "viewer", attr) {
			t.Errorf("view may %s", sub)
		}
		attr.Namespace = other
		if allowed(t, ns, "editor", attr) {
			t.Errorf("edit may %s in another namespace", sub)
		}
	}
}

func obj(kind, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "slimvirt.io/v1alpha1", "kind": kind, "metadata": map[string]any{"name": name}, "spec": spec}}
}

// tenant makes a service account bound to a built-in role in ns and returns a client acting
// as it.
func tenant(t *testing.T, ns, name, role string) *dynamic.DynamicClient {
	t.Helper()
	ctx := t.Context()
	token, err := cluster.env.Token(ctx, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}}
	if _, err := cluster.env.Clientset.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(cluster.env.Config)
	cfg.BearerToken = token
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return dc
}

// allowed asks the API server's authorizer whether service account ns/name may do attr.
func allowed(t *testing.T, ns, name string, attr authzv1.ResourceAttributes) bool {
	t.Helper()
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: fmt.Sprintf("system:serviceaccount:%s:%s", ns, name), Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		ResourceAttributes: &attr}}
	if attr.Namespace == "" {
		sar.Spec.ResourceAttributes.Namespace = ns
	}
	out, err := cluster.env.Clientset.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), sar, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out.Status.Allowed
}

func waitAllowed(t *testing.T, ns, name string, attr authzv1.ResourceAttributes) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !allowed(t, ns, name, attr) {
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s was never allowed %+v: the roles were not aggregated", ns, name, attr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
