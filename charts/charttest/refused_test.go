package charttest

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The tests below show that the checks above can fail: each gives them something broken and
// wants the error that names it.

// TestRefusedValues renders values that make invalid objects: a pool name is part of a
// StorageClass name and of a volume name, which must be lowercase DNS names.
func TestRefusedValues(t *testing.T) {
	ctx := t.Context()
	r := prepare(t, valueSet{name: "bad-pool-name", values: `storage:
  pools:
    - {name: Fast_SSD, path: /mnt/ssd}
`})
	err := cluster.helm.lint(ctx, r)
	wantError(t, err, `object name does not conform to Kubernetes naming requirements: "slimvirt-Fast_SSD"`)

	objs, err := cluster.helm.template(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"StorageClass slimvirt-Fast_SSD": `metadata.name: Invalid value: "slimvirt-Fast_SSD"`,
		"DaemonSet slimvirt-node":        `name: Invalid value: "pool-Fast_SSD"`,
	}
	d, err := cluster.dryRunner()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		err := d.dryRun(ctx, o)
		if msg, ok := want[o.GetKind()+" "+o.GetName()]; ok {
			wantError(t, err, msg)
			delete(want, o.GetKind()+" "+o.GetName())
		} else if err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
	for o := range want {
		t.Errorf("%s was not rendered", o)
	}
}

// TestRefusedNothingOnNodes: with neither the node agent nor the CSI driver, the node
// DaemonSet would run nothing; the chart says so instead of rendering it.
func TestRefusedNothingOnNodes(t *testing.T) {
	r := prepare(t, valueSet{name: "nothing-on-nodes", values: "node:\n  agent:\n    enabled: false\nstorage:\n  enabled: false\n"})
	_, err := cluster.helm.template(t.Context(), r)
	wantError(t, err, "node.agent.enabled and storage.enabled are both false")
}

// TestRefusedLintWarning sets a table to a string: helm lint --strict exits 0 and warns on
// stderr only, which the lint check must not let pass.
func TestRefusedLintWarning(t *testing.T) {
	r := prepare(t, valueSet{name: "table-as-string", values: "controller:\n  resources: lots\n"})
	wantError(t, cluster.helm.lint(t.Context(), r), "cannot overwrite table with non table for controller.resources")
}

// TestRefusedObjects breaks one rendered object at a time and wants the dry run to refuse it.
func TestRefusedObjects(t *testing.T) {
	ctx := t.Context()
	objs, err := cluster.helm.template(ctx, prepare(t, valueSet{name: "defaults"}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		kind   string // of the rendered object to break
		mutate func(u *unstructured.Unstructured)
		want   string
	}{{
		name: "a container mounts a volume the pod lacks",
		kind: "DaemonSet",
		mutate: func(u *unstructured.Unstructured) {
			editContainer(t, u, 0, func(c map[string]any) {
				c["volumeMounts"] = append(c["volumeMounts"].([]any), map[string]any{"name": "no-such-volume", "mountPath": "/x"})
			})
		},
		want: `Not found: "no-such-volume"`,
	}, {
		name:   "a misspelled field (strict field validation)",
		kind:   "DaemonSet",
		mutate: func(u *unstructured.Unstructured) { set(t, u, true, "spec", "template", "spec", "hostNetwrok") },
		want:   `unknown field "spec.template.spec.hostNetwrok"`,
	}, {
		name: "a selector that does not select the pod template",
		kind: "Deployment",
		mutate: func(u *unstructured.Unstructured) {
			set(t, u, "someone-else", "spec", "selector", "matchLabels", "app.kubernetes.io/name")
		},
		want: "`selector` does not match template `labels`",
	}, {
		name:   "a misspelled enum value",
		kind:   "StorageClass",
		mutate: func(u *unstructured.Unstructured) { set(t, u, "WaitForFirstConsumr", "volumeBindingMode") },
		want:   `Unsupported value: "WaitForFirstConsumr"`,
	}, {
		name: "a CEL rule that does not compile",
		kind: "CustomResourceDefinition",
		mutate: func(u *unstructured.Unstructured) {
			versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
			v := versions[0].(map[string]any)
			rules := []any{map[string]any{"rule": "self.noSuchField == 1", "message": "never"}}
			if err := unstructured.SetNestedSlice(v, rules, "schema", "openAPIV3Schema", "x-kubernetes-validations"); err != nil {
				t.Fatal(err)
			}
			set(t, u, versions, "spec", "versions")
		},
		want: "compilation failed",
	}, {
		name: "a deprecated node label (a warning from the server)",
		kind: "Deployment",
		mutate: func(u *unstructured.Unstructured) {
			set(t, u, "amd64", "spec", "template", "spec", "nodeSelector", "beta.kubernetes.io/arch")
		},
		want: "the server warned",
	}, {
		name:   "an API version no longer served",
		kind:   "DaemonSet",
		mutate: func(u *unstructured.Unstructured) { u.SetAPIVersion("extensions/v1beta1") },
		want:   `kind not served: no matches for kind "DaemonSet" in version "extensions/v1beta1"`,
	}, {
		name:   "a namespaced object without a namespace",
		kind:   "ServiceAccount",
		mutate: func(u *unstructured.Unstructured) { u.SetNamespace("") },
		want:   "namespaced object without metadata.namespace",
	}, {
		name:   "a cluster-scoped object with a namespace",
		kind:   "ClusterRole",
		mutate: func(u *unstructured.Unstructured) { u.SetNamespace("slimvirt") },
		want:   `cluster-scoped object with metadata.namespace "slimvirt"`,
	}, {
		name: "a pod of a priority class that does not exist",
		kind: "DaemonSet",
		mutate: func(u *unstructured.Unstructured) {
			set(t, u, "no-such-priority", "spec", "template", "spec", "priorityClassName")
			pod, _ := podOf(object{Unstructured: u})
			u.Object = pod.Object
		},
		want: "no PriorityClass with name no-such-priority was found",
	}}
	d, err := cluster.dryRunner()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o object
			for _, r := range objs {
				if r.GetKind() == tt.kind {
					o = object{source: r.source, Unstructured: r.DeepCopy()}
					break
				}
			}
			if o.Unstructured == nil {
				t.Fatalf("no %s rendered", tt.kind)
			}
			if err := d.dryRun(ctx, o); err != nil {
				t.Fatalf("%s before breaking it: %v", o, err)
			}
			tt.mutate(o.Unstructured)
			err := d.dryRun(ctx, o)
			wantError(t, err, tt.want)
			t.Logf("%s: %v", o, err)
		})
	}
}

// TestDecodeDuplicateKey: YAML keeps the last of two equal keys; the decoder refuses them.
func TestDecodeDuplicateKey(t *testing.T) {
	_, err := decode([]byte("---\n# Source: slimvirt/templates/x.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nmetadata: {name: b}\n"))
	wantError(t, err, "slimvirt/templates/x.yaml")
	_, err = decode([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"))
	wantError(t, err, "rendered twice")
}

func wantError(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("no error, want one containing %q", want)
	} else if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want one containing %q", err, want)
	}
}

func set(t *testing.T, u *unstructured.Unstructured, value any, path ...string) {
	t.Helper()
	if err := unstructured.SetNestedField(u.Object, value, path...); err != nil {
		t.Fatal(err)
	}
}

func editContainer(t *testing.T, u *unstructured.Unstructured, i int, edit func(map[string]any)) {
	t.Helper()
	cs, _, err := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
	if err != nil || len(cs) <= i {
		t.Fatalf("no container %d: %v", i, err)
	}
	edit(cs[i].(map[string]any))
	set(t, u, cs, "spec", "template", "spec", "containers")
}
