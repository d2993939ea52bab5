//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestBadInputRefusedAtApply: every manifest of the API's refusal catalogue
// (controller/integration/testdata/bad, each with the message it must get on its "# want:"
// line: negative sizes, a zero emptyDisk, hostDisk.shared, unknown fields, ...) is refused by
// `kubectl apply` on the cluster with that message, and nothing is made; the edge cases that must
// pass (testdata/good) are accepted. A client that does not ask for strict validation gets an
// unknown field dropped with a warning that names it.
func TestBadInputRefusedAtApply(t *testing.T) {
	const ns = "e2e-validation"
	mustKubectl(t, "create", "ns", ns)
	t.Cleanup(func() { _, _ = kubectl(t, "delete", "ns", ns, "--wait=false") })
	bad, err := filepath.Glob("../controller/integration/testdata/bad/*.yaml")
	if err != nil || len(bad) < 50 {
		t.Fatalf("the refusal catalogue: %d files (%v)", len(bad), err)
	}
	for _, file := range bad {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		want := testutil.WantLine(raw)
		if want == "" {
			t.Fatalf("%s has no '# want:' line", file)
		}
		out, err := kubectl(t, "-n", ns, "apply", "-f", file)
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("kubectl apply -f %s: %v\n%s\nwant refused with %q", filepath.Base(file), err, out, want)
		}
	}
	left := mustKubectl(t, "-n", ns, "get", "vm,vmi,vmirs,dv", "-o", "name")
	if strings.TrimSpace(left) != "" {
		t.Errorf("refused manifests left objects: %s", left)
	}
	good, _ := filepath.Glob("../controller/integration/testdata/good/*.yaml")
	for _, file := range good {
		if out, err := kubectl(t, "-n", ns, "apply", "--dry-run=server", "-f", file); err != nil {
			t.Errorf("kubectl apply --dry-run=server -f %s: %v\n%s", filepath.Base(file), err, out)
		}
	}
	// --validate=warn asks the server what a client without strict validation gets: the field
	// dropped, with a warning that names it.
	out, err := kubectl(t, "-n", ns, "apply", "--validate=warn", "--dry-run=server", "-o", "jsonpath={.spec.domain}",
		"-f", "../controller/integration/testdata/bad/01-unknown-domain-field.yaml")
	if err != nil || !strings.Contains(out, `unknown field "spec.domain.foo"`) || strings.Contains(out, `"foo"`) {
		t.Errorf("kubectl apply --validate=warn with an unknown field: %v\n%s\nwant it accepted with a warning and dropped", err, out)
	}
}
