package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// create sends a manifest as `kubectl apply` does by default: strict field validation, so an
// unknown or misspelt field is an error and never silently dropped.
func create(ns string, raw []byte) error {
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
		return err
	}
	obj.SetNamespace(ns)
	return env.c.Create(context.Background(), obj, client.FieldValidation("Strict"))
}

// TestExamplesAccepted: the seed guide's two manifests (vmi-linux.yaml, vm-windows.yaml, only
// apiVersion changed in the Windows one) and the other examples are accepted by the API server
// with strict field validation.
func TestExamplesAccepted(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "examples", "*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("examples: %v (%d files)", err, len(files))
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", name))
			if err != nil {
				t.Fatal(err)
			}
			if err := create(newNamespace(t), raw); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

// TestBadInputRefused applies every manifest under testdata/bad to the API server; each must
// be refused with the message its first line names ("# want: ...").
func TestBadInputRefused(t *testing.T) {
	forEachManifest(t, "bad", 30, func(t *testing.T, ns, file string, raw []byte) {
		want := testutil.WantLine(raw)
		if want == "" {
			t.Fatalf("%s has no '# want:' line", file)
		}
		err := create(ns, raw)
		if err == nil {
			t.Fatalf("accepted; want refused with %q", want)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("refused with\n  %v\nwant a message containing\n  %q", err, want)
		}
		t.Logf("refused: %v", err)
	})
}

// TestEdgeInputAccepted applies every manifest under testdata/good: values at the edges of what
// the schema allows (a guest as large as its limit, zero replicas, a capacity written as an
// integer or with a leading 0), so the rules that refuse bad input refuse nothing more.
func TestEdgeInputAccepted(t *testing.T) {
	forEachManifest(t, "good", 1, func(t *testing.T, ns, _ string, raw []byte) {
		if err := create(ns, raw); err != nil {
			t.Fatalf("refused: %v", err)
		}
	})
}

// forEachManifest runs check as a subtest for each manifest in testdata/dir, all in one
// namespace; fewer than least manifests there is an error (a glob that found nothing).
func forEachManifest(t *testing.T, dir string, least int, check func(t *testing.T, ns, file string, raw []byte)) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.yaml"))
	if err != nil || len(files) < least {
		t.Fatalf("want at least %d manifests in testdata/%s, found %d (%v)", least, dir, len(files), err)
	}
	ns := newNamespace(t)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			check(t, ns, file, raw)
		})
	}
}

// TestUnknownFields: a client that asks for strict field validation, as kubectl apply does, is
// refused an unknown field, by its name; a client that does not (client-go's default) has the
// object made without the field and gets a warning that names it.
func TestUnknownFields(t *testing.T) {
	ctx := context.Background()
	raw, err := os.ReadFile(filepath.Join("testdata", "bad", "01-unknown-domain-field.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const want = `unknown field "spec.domain.foo"`
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
		t.Fatal(err)
	}
	warnings := &testenv.Warnings{}
	cfg := rest.CopyConfig(env.cfg)
	cfg.WarningHandler = warnings
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vmis := dc.Resource(v1.GroupVersion.WithResource("virtualmachineinstances")).Namespace(newNamespace(t))

	_, err = vmis.Create(ctx, obj, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("strict create: %v, want refused with %q", err, want)
	}

	got, err := vmis.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create without field validation: %v, want accepted", err)
	}
	if _, found, _ := unstructured.NestedFieldNoCopy(got.Object, "spec", "domain", "foo"); found {
		t.Errorf("spec.domain.foo was stored; want it dropped")
	}
	if w := warnings.Take(); !slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, want) }) {
		t.Errorf("warnings %q, want one containing %q", w, want)
	}
}

// TestVMISpecImmutable: a VMI's spec cannot change after creation (its pod is made from it);
// its metadata can.
func TestVMISpecImmutable(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	vmi := loadExampleVMI(t, ns)
	if err := env.c.Create(ctx, vmi); err != nil {
		t.Fatal(err)
	}
	// Defaults from the schema are filled in.
	got := getVMI(t, ns, vmi.Name)
	if bus := got.Spec.Domain.Devices.Disks[0].Disk.Bus; bus != "virtio" {
		t.Errorf("default disk bus = %q", bus)
	}
	if m := got.Spec.Domain.Devices.Interfaces[0].Model; m != "virtio" {
		t.Errorf("default interface model = %q", m)
	}
	eventually(t, "a label update", func() (bool, error) {
		got := getVMI(t, ns, vmi.Name)
		got.Labels["tier"] = "web"
		err := env.c.Update(ctx, got)
		return err == nil, err
	})
	var err error
	for range 20 {
		got = getVMI(t, ns, vmi.Name)
		got.Spec.TerminationGracePeriodSeconds = ptr.To(int64(5))
		if err = env.c.Update(ctx, got); !apierrors.IsConflict(err) {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "spec is immutable") {
		t.Errorf("spec update: %v, want refused as immutable", err)
	}
}
