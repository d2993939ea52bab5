package subresources

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	api "github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// user makes a service account in ns bound to a Role with rules, and returns its token.
func (s *suite) user(t *testing.T, ns, name string, rules ...rbacv1.PolicyRule) string {
	t.Helper()
	ctx := context.Background()
	token, err := s.te.Token(ctx, ns, name)
	testutil.Must(t, err)
	if len(rules) == 0 {
		return token
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules}
	testutil.Must(t, s.c.Create(ctx, role))
	testutil.Must(t, s.c.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
	}))
	return token
}

// allow is a rule granting verb on subresources of the aggregated group.
func allow(verb string, resources ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{api.Group}, Resources: resources, Verbs: []string{verb}}
}

// do sends a request to the server under test as the bearer of token.
func (s *suite) do(t *testing.T, token, method, path string, header http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.base+path, bytes.NewReader(nil))
	testutil.Must(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.http.Do(req)
	testutil.Must(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	testutil.Must(t, err)
	return resp.StatusCode, body
}

// expectStatus checks that an answer is a metav1.Status with code, and returns it.
func expectStatus(t *testing.T, code int, gotCode int, body []byte) metav1.Status {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal(body, &st); err != nil || st.Kind != "Status" {
		t.Fatalf("answer %d is no Status: %s", gotCode, body)
	}
	if gotCode != code || int(st.Code) != code {
		t.Fatalf("answer %d (Status code %d), want %d: %s", gotCode, st.Code, code, st.Message)
	}
	return st
}

// vmi makes a VMI (the example's spec) and gives it a status, as the controller would.
func (s *suite) vmi(t *testing.T, ns, name string, phase v1.VirtualMachineInstancePhase, node string) *v1.VirtualMachineInstance {
	t.Helper()
	vmi := &v1.VirtualMachineInstance{}
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "vmi-linux.yaml"))
	testutil.Must(t, err)
	testutil.Must(t, yaml.Unmarshal(raw, vmi))
	vmi.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: name}
	testutil.Must(t, s.te.Namespace(context.Background(), ns))
	testutil.Must(t, s.c.Create(context.Background(), vmi))
	if phase != "" {
		vmi.Status.Phase, vmi.Status.NodeName = phase, node
		testutil.Must(t, s.c.Status().Update(context.Background(), vmi))
	}
	return vmi
}

// vm makes a VM with the example's template and a run strategy.
func (s *suite) vm(t *testing.T, ns, name string, strategy v1.VirtualMachineRunStrategy) {
	t.Helper()
	vmi := &v1.VirtualMachineInstance{}
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "vmi-linux.yaml"))
	testutil.Must(t, err)
	testutil.Must(t, yaml.Unmarshal(raw, vmi))
	testutil.Must(t, s.te.Namespace(context.Background(), ns))
	testutil.Must(t, s.c.Create(context.Background(), &v1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.VirtualMachineSpec{
			RunStrategy: &strategy,
			Template:    v1.VirtualMachineInstanceTemplateSpec{Spec: vmi.Spec},
		},
	}))
}

func (s *suite) getVM(t *testing.T, ns, name string) *v1.VirtualMachine {
	t.Helper()
	vm := &v1.VirtualMachine{}
	testutil.Must(t, s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, vm))
	return vm
}

// dv makes a DataVolume with a source.
func (s *suite) dv(t *testing.T, ns, name string, src v1.DataVolumeSourceSpec) *v1.DataVolume {
	t.Helper()
	testutil.Must(t, s.te.Namespace(context.Background(), ns))
	dv := &v1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.DataVolumeSpec{Source: src, Storage: &v1.StorageSpec{Resources: v1.StorageResources{
			Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
		}}},
	}
	testutil.Must(t, s.c.Create(context.Background(), dv))
	return dv
}
