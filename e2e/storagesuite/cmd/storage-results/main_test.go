package main

import (
	"strings"
	"testing"
)

const sample = `<testsuites><testsuite>
<testcase name="[sig-storage] CSI Volumes External Storage [Driver: csi.x] [Testpattern: Dynamic PV (default fs)] provisioning should provision storage with pvc data source"></testcase>
<testcase name="[sig-storage] CSI Volumes External Storage [Driver: csi.x] [Testpattern: Dynamic PV (default fs)] provisioning should mount multiple PV"><failure message="boom"></failure></testcase>
<testcase name="[sig-storage] CSI Volumes External Storage [Driver: csi.x] [Testpattern: Dynamic PV (block volmode)] volumes should store data"><skipped message="skipped - Driver csi.x doesn't support RWX -- skipping"></skipped></testcase>
<testcase name="[sig-storage] CSI Volumes External Storage [Driver: csi.x] [Testpattern: Dynamic PV (block volmode)] disruptive should test that pv written before kubelet restart"><skipped message="skipped"></skipped></testcase>
<testcase name="[sig-apps] Deployment should run"><skipped message="skipped"></skipped></testcase>
</testsuite></testsuites>`

// TestRender: specs are counted per pattern and suite by outcome, specs outside External
// Storage are left out, and each skip reason is listed with its count, a bare "skipped" as the
// harness's own choice.
func TestRender(t *testing.T) {
	var b strings.Builder
	if err := render(&b, []byte(sample)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| Dynamic PV (default fs) | provisioning | 1 | 1 | 0 |",
		"| Dynamic PV (block volmode) | disruptive | 0 | 0 | 1 |",
		"| Dynamic PV (block volmode) | volumes | 0 | 0 | 1 |",
		"| **all** | | **1** | **1** | **2** |",
		"| 1 | Driver csi.x doesn't support RWX -- skipping |",
		"| 1 | left out by the harness by name",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Deployment") {
		t.Errorf("a spec outside External Storage is counted:\n%s", out)
	}
}
