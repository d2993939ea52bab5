package series

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testdata holds a csi.txt and a cni.txt as make bench-csi and make bench-cni write them
// (go test's lines included).
func testdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadImports(t *testing.T) {
	rows, err := ReadImports(writeFile(t, CSIFile, testdata(t, CSIFile)))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 6 {
		t.Fatalf("got %d rows, want 6: %+v", len(rows), rows)
	}
	want := Import{Format: "qcow2", Method: "curl -o + qemu-img convert + fsync", Time: 3229 * time.Millisecond, MiBps: 317, Heading: "import of a 1 GiB image (best of 2)"}
	if rows[4] != want {
		t.Errorf("row 5 = %+v, want %+v", rows[4], want)
	}
	if rows[2].Format != "raw" || rows[2].Method != "slimvirt import (incl. fsync)" || rows[2].MiBps != 701 {
		t.Errorf("row 3 = %+v", rows[2])
	}
}

// TestReadTablesMalformed checks that a broken row of a table is refused with its file and
// line, and that a file without the table is refused.
func TestReadTablesMalformed(t *testing.T) {
	csiText, cniText := testdata(t, CSIFile), testdata(t, CNITableFile)
	sl, cp := testdata(t, StartLatencyTableFile), testdata(t, ControlPlaneTableFile)
	imports := func(p string) error { _, err := ReadImports(p); return err }
	cniSummary := func(p string) error { _, err := ReadCNISummary(p); return err }
	startLatency := func(p string) error { _, err := ReadStartLatencySummary(p); return err }
	controlPlane := func(p string) error { _, err := ReadControlPlaneSummary(p); return err }
	for _, tc := range []struct {
		name, text string
		read       func(string) error
		line       int
	}{
		{"import without MiB/s", strings.Replace(csiText, "1.461s        701", "1.461s", 1), imports, 4},
		{"import time", strings.Replace(csiText, "1.532s", "1.532x", 1), imports, 5},
		{"CNI row missing a cell", strings.Replace(cniText, "| 42.5 ms |", "|", 1), cniSummary, 5},
		{"CNI cell not in ms", strings.Replace(cniText, "31.4 ms", "31.4 s", 1), cniSummary, 6},
		{"start latency columns", strings.Replace(sl, "| lease P95 |", "| lease P99 |", 1), startLatency, 1},
		{"start latency n", strings.Replace(sl, "| 20 |", "| twenty |", 1), startLatency, 3},
		{"start latency unit", strings.Replace(sl, "70.6 s", "70.6 ms", 1), startLatency, 4},
		{"start latency cells", strings.Replace(sl, "| 13.6 s |", "|", 1), startLatency, 3},
		{"control plane column", strings.Replace(cp, "| 20 VMIs Running |", "| twenty |", 1), controlPlane, 1},
		{"control plane row", strings.Replace(cp, "| controller working set |", "| controller RSS |", 1), controlPlane, 4},
		{"control plane unit", strings.Replace(cp, "0.010 cores", "0.010", 1), controlPlane, 5},
		{"no import table", "CreateVolume over 50 volumes: median 2.117ms\n", imports, 0},
		{"no CNI table", "--- PASS: TestLatency (15.39s)\n", cniSummary, 0},
		{"no markdown table", "nothing measured\n", controlPlane, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "results.txt", tc.text)
			err := tc.read(path)
			if tc.line == 0 {
				if err == nil || !strings.Contains(err.Error(), "no ") || !strings.Contains(err.Error(), path) {
					t.Fatalf("got %v, want an error naming %s and saying the table is missing", err, path)
				}
				return
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line != tc.line || pe.File != path {
				t.Fatalf("got %v, want a ParseError at %s:%d", err, path, tc.line)
			}
		})
	}
}

func TestReadCNISummary(t *testing.T) {
	rows, err := ReadCNISummary(writeFile(t, CNITableFile, testdata(t, CNITableFile)))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("got %d rows, want 3: %+v", len(rows), rows)
	}
	r := rows[1]
	if r.Chain != "bridge + slimvirt" || r.AddP50 != 31400*time.Microsecond || r.DelP95 != 88400*time.Microsecond {
		t.Errorf("row 2 = %+v", r)
	}
	if !strings.HasPrefix(r.Heading, "CNI chain latency, 100 runs each") {
		t.Errorf("heading %q", r.Heading)
	}
}
