package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReferenceIsCurrent fails when docs/api-reference.md is not what the CRDs make, as after
// `make generate` without `make api-reference`.
func TestReferenceIsCurrent(t *testing.T) {
	want, err := generate("../../charts/slimvirt/crds")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../docs/api-reference.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) == string(want) {
		return
	}
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(g), len(w)) {
		if i >= len(g) || i >= len(w) || g[i] != w[i] {
			t.Fatalf("docs/api-reference.md is stale (run make api-reference); line %d is\n%s\nwant\n%s",
				i+1, lineAt(g, i), lineAt(w, i))
		}
	}
}

func lineAt(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "(end of file)"
}

// example has one of each thing the reference shows. Its Inner type appears twice, the second
// time with another description, so it is described twice; its Shared type twice alike, so once.
const example = `---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.io
spec:
  group: example.io
  names:
    categories: [all]
    kind: Widget
    listKind: WidgetList
    plural: widgets
    shortNames: [wd]
    singular: widget
  scope: Namespaced
  versions:
  - additionalPrinterColumns:
    - {jsonPath: .status.phase, name: Phase, type: string, description: "The phase"}
    - {jsonPath: .spec.size, name: Size, type: string, priority: 1}
    name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    schema:
      openAPIV3Schema:
        description: Widget is a <thing> with | pipes.
        type: object
        x-kubernetes-validations:
        - {rule: "self.metadata.name.size() <= 10 || false", message: name too long}
        properties:
          metadata: {type: object}
          spec:
            type: object
            required: [mode]
            properties:
              mode:
                type: string
                enum: [Fast, Slow]
                default: Fast
                description: |-
                  Mode is how it goes,
                  as the ` + "`mode: Fast`" + ` example shows.
              size:
                anyOf: [{type: integer}, {type: string}]
                pattern: ^(\+|-)?[0-9]+$
                x-kubernetes-int-or-string: true
              tags:
                type: array
                maxItems: 1
                items: {type: string, maxLength: 8}
                x-kubernetes-validations:
                - {rule: "self.all(t, t != 'x')", messageExpression: "'bad tag'", reason: FieldValueInvalid}
              labels:
                type: object
                additionalProperties: {type: string}
              parts:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    shared: {type: object, description: Shared is alike., properties: {x: {type: integer, format: int32, minimum: 0}}}
              one: {type: object, description: Shared is alike., properties: {x: {type: integer, format: int32, minimum: 0}}}
              inner: {type: object, description: Inner first., properties: {y: {type: boolean}}}
              other: {type: object, description: Inner again., properties: {y: {type: boolean}}}
`

func TestRender(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "widget.yaml"), []byte(example), 0o644); err != nil {
		t.Fatal(err)
	}
	doc, err := generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := string(doc)
	for _, want := range []string{
		"# API reference: `example.io/v1`",
		"- [Widget](#widget) (`wd`)",
		"Widget is a &lt;thing&gt; with \\| pipes.",
		"| short names | `wd` |",
		"| subresources | `status`, `scale` (replicas `.spec.replicas`, `.status.replicas`) |",
		"| PHASE | string | `.status.phase` | The phase |",
		"| SIZE | string | `.spec.size` | (with `-o wide`) |",
		"| this object | `self.metadata.name.size() <= 10 \\|\\| false` | name too long |",
		"| `spec` | [object](#widget-spec) |  |  |  |",
		"| `spec.mode` | string | yes | `Fast` | Mode is how it goes, as the `mode: Fast` example shows. One of: `Fast`, `Slow`. |",
		"| `spec.size` | quantity (int or string) |  |  |  |",
		"| `spec.tags` | []string |  |  | At most 1 item. Each item: At most 8 characters. |",
		"| `spec.tags` | `self.all(t, t != 'x')` | computed: `'bad tag'` (reason `FieldValueInvalid`) |",
		"| `spec.labels` | map[string]string |  |  |  |",
		"| `spec.parts` | \\[\\][object](#widget-spec-parts) |  |  | Keyed by `name`: one item per key. |",
		"| `spec.parts[].name` | string | yes |  |  |",
		"| `spec.one` | [object](#widget-spec-one) |  |  | Shared is alike. |",
		"| `spec.parts[].shared` | [object](#widget-spec-one) |  |  | Shared is alike. |",
		"| `spec.one.x` | integer (int32) |  |  | At least 0. |",
		"| `spec.inner` | [object](#widget-spec-inner) |",
		"| `spec.other` | [object](#widget-spec-other) |",
		`<a id="widget-spec-one"></a>`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no line with %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "spec.parts[].shared.x") {
		t.Error("the shared type is described twice")
	}
	again, err := generate(dir)
	if err != nil || string(again) != out {
		t.Errorf("a second run made another reference (%v)", err)
	}
}

// TestUnknownKeyword: a schema keyword the reference would not show fails the generator.
func TestUnknownKeyword(t *testing.T) {
	dir := t.TempDir()
	crd := strings.Replace(example, "minimum: 0}}}\n              inner", "minimum: 0, exclusiveMinimum: true}}}\n              inner", 1)
	if err := os.WriteFile(filepath.Join(dir, "widget.yaml"), []byte(crd), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := generate(dir)
	if err == nil || !strings.Contains(err.Error(), `unknown field "exclusiveMinimum"`) {
		t.Fatalf("error %v, want one naming exclusiveMinimum", err)
	}
}
