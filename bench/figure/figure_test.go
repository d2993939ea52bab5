package figure

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/bench/series"
)

// results writes a results directory holding every file the figures read, with a few rows each.
func results(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s := func(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }
	var sl []series.StartLatency
	for i, r := range []float64{1.2, 1.3, 1.3, 1.5} {
		sl = append(sl, series.StartLatency{Shape: series.ShapeSingle, Together: 1, VMI: fmt.Sprintf("bench-single-%d", i), Running: s(r), Lease: s(r + 12.3)})
	}
	for i, r := range []float64{5.1, 5.8, 6.2, 6.9} {
		sl = append(sl, series.StartLatency{Shape: series.ShapeBatch, Together: 10, VMI: fmt.Sprintf("bench-batch-%d", i), Running: s(r), Lease: s(r + 64)})
	}
	var cni []series.CNISample
	for i := 0; i < 5; i++ {
		ms := time.Millisecond
		cni = append(cni,
			series.CNISample{Chain: "bridge", Run: i, Add: time.Duration(16+i) * ms, Del: time.Duration(23+i) * ms},
			series.CNISample{Chain: "bridge + slimvirt", Run: i, Add: time.Duration(30+i) * ms, Del: time.Duration(70+2*i) * ms})
	}
	for _, err := range []error{
		series.WriteStartLatency(filepath.Join(dir, series.StartLatencyFile), sl),
		series.WriteVMMemory(filepath.Join(dir, series.VMMemoryFile), []series.VMMemory{
			{Running: 1, VMI: "bench-overhead", Guest: 128 * mib, WorkingSet: 235 * mib, LauncherPSS: 37 * mib, QEMUPSS: 226 * mib},
		}),
		series.WriteControlPlane(filepath.Join(dir, series.ControlPlaneFile), []series.ControlPlane{
			{Running: 0, Component: "controller", CPU: 0.003, WorkingSet: 16 * mib, Window: time.Minute},
			{Running: 0, Component: "node agent", CPU: 0.008, WorkingSet: 47 * mib, Window: time.Minute},
			{Running: 20, Component: "controller", CPU: 0.003, WorkingSet: 18 * mib, Window: time.Minute},
			{Running: 20, Component: "node agent", CPU: 0.010, WorkingSet: 50 * mib, Window: time.Minute},
		}),
		series.WriteCNI(filepath.Join(dir, series.CNIFile), cni),
		copyFile(filepath.Join("..", "series", "testdata", series.CSIFile), filepath.Join(dir, series.CSIFile)),
		copyFile(filepath.Join("..", "series", "testdata", series.CNITableFile), filepath.Join(dir, series.CNITableFile)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// copyFile copies the tables the series package's tests read (as the benchmarks print them).
func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// svgText parses an SVG as XML and returns the text it shows, one element per line.
func svgText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	var text []string
	root := ""
	inText := false
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not XML: %v", path, err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = el.Name.Local
			}
			inText = el.Name.Local == "text"
		case xml.EndElement:
			inText = false
		case xml.CharData:
			if inText {
				text = append(text, string(el))
			}
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", path, root)
	}
	return strings.Join(text, "\n")
}

func newPlotter(t *testing.T, dir string) (*Plotter, string, *bytes.Buffer) {
	t.Helper()
	out := t.TempDir()
	var logs bytes.Buffer
	p, err := New(Config{Results: dir, Out: out, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p, out, &logs
}

func TestRunDrawsEveryFigure(t *testing.T) {
	p, out, _ := newPlotter(t, results(t))
	wrote, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"start-latency.svg": {"one at a time (n=4)", "batch of 10 (n=4)", "to phase Running", "to guest DHCP lease",
			"KubeVirt density test P50 22.6 s (PR #14876)", "KubeVirt density test P95 29.7 s (PR #14876)",
			"KubeVirt density test P50 15 s", "KubeVirt density test P95 19.5 s"},
		"overhead-memory-per-vm.svg": {"launcher pod working set less guest RAM",
			"launcher's own processes, PSS", "KubeVirt reserve per VM besides guest RAM, 240 MiB", "VMIs Running", "150"},
		"control-plane-cpu.svg":    {"controller", "node agent", "cores", "VMIs Running"},
		"control-plane-memory.svg": {"controller", "node agent", "MiB"},
		"cni-latency.svg":          {"bridge (n=5)", "bridge + slimvirt (n=5)", "ADD", "DEL", "CNI chain latency, every run"},
		"csi-import.svg": {"summary figures from csi.txt", "raw: curl -o", "raw: curl -o + fsync", "raw: slimvirt import (incl. fsync)",
			"qcow2: curl -o + qemu-img convert", "qcow2: curl -o + qemu-img convert + fsync", "qcow2: slimvirt import (incl. fsync)",
			"baseline (curl, qemu-img)"},
	}
	if len(wrote) != len(Figures()) {
		t.Errorf("wrote %v, want every figure", wrote)
	}
	for _, f := range Figures() {
		text := svgText(t, filepath.Join(out, f.SVG))
		names, ok := want[f.SVG]
		if !ok {
			t.Errorf("%s: no expectations in this test", f.SVG)
		}
		for _, n := range names {
			if !strings.Contains(text, n) {
				t.Errorf("%s does not show %q; it shows:\n%s", f.SVG, n, text)
			}
		}
	}
}

func TestRunSkipsMissingFiles(t *testing.T) {
	p, out, logs := newPlotter(t, t.TempDir())
	wrote, err := p.Run(context.Background())
	if err != nil || len(wrote) != 0 {
		t.Fatalf("Run on an empty directory: wrote %v, err %v; want nothing and no error", wrote, err)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("files written: %v", entries)
	}
	for _, f := range Figures() {
		if !strings.Contains(logs.String(), "svg="+f.SVG) {
			t.Errorf("no log line for skipped %s:\n%s", f.SVG, logs)
		}
	}
}

func TestRunSkipsFilesWithoutRows(t *testing.T) {
	dir := t.TempDir()
	for _, err := range []error{
		series.WriteStartLatency(filepath.Join(dir, series.StartLatencyFile), nil),
		series.WriteVMMemory(filepath.Join(dir, series.VMMemoryFile), nil),
		series.WriteControlPlane(filepath.Join(dir, series.ControlPlaneFile), nil),
		series.WriteCNI(filepath.Join(dir, series.CNIFile), nil),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	p, _, logs := newPlotter(t, dir)
	wrote, err := p.Run(context.Background())
	if err != nil || len(wrote) != 0 {
		t.Fatalf("wrote %v, err %v; want nothing and no error", wrote, err)
	}
	if !strings.Contains(logs.String(), "reason=\"no rows\"") {
		t.Errorf("no log line says why:\n%s", logs)
	}
}

func TestRunRefusesMalformedFile(t *testing.T) {
	dir := results(t)
	path := filepath.Join(dir, series.VMMemoryFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, "20\tbench-2\tlots\t1\t1\t1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	p, out, _ := newPlotter(t, dir)
	wrote, err := p.Run(context.Background())
	lines := strings.Count(string(b), "\n") + 1
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%s:%d:", path, lines)) || !strings.Contains(err.Error(), "guest_bytes") {
		t.Fatalf("got %v, want an error at %s:%d naming the column", err, path, lines)
	}
	// The other figures are still drawn.
	if len(wrote) != len(Figures())-1 {
		t.Errorf("wrote %v, want all but the memory figure", wrote)
	}
	if _, err := os.Stat(filepath.Join(out, "overhead-memory-per-vm.svg")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the figure of the malformed file was written (%v)", err)
	}
}

// TestFiguresFromTables draws the figures that have a table to fall back on from that table
// when no run has written the series yet, and says so on each.
func TestFiguresFromTables(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{series.CNITableFile, series.StartLatencyTableFile, series.ControlPlaneTableFile} {
		if err := copyFile(filepath.Join("..", "series", "testdata", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	p, out, _ := newPlotter(t, dir)
	wrote, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"cni-latency.svg": {"summary figures (median, P95) from cni.txt", "bridge + slimvirt", "slimvirt adds", "ADD median", "DEL P95"},
		"start-latency.svg": {"summary figures (P50, P95) from start-latency.md", "single VMIs, one after another (n=20)",
			"batch created together (n=10)", "to Running, P50", "to guest lease, P95", "KubeVirt density test P95 29.7 s (PR #14876)"},
		"control-plane-cpu.svg":    {"summary figures from control-plane.md", "controller", "node agent", "cores"},
		"control-plane-memory.svg": {"summary figures from control-plane.md", "controller", "node agent", "MiB"},
	}
	if len(wrote) != len(want) {
		t.Errorf("wrote %v, want %d figures", wrote, len(want))
	}
	for svg, names := range want {
		text := svgText(t, filepath.Join(out, svg))
		for _, n := range names {
			if !strings.Contains(text, n) {
				t.Errorf("%s does not show %q; it shows:\n%s", svg, n, text)
			}
		}
	}
	// The KubeVirt row of the table is a reference line, not a category.
	if text := svgText(t, filepath.Join(out, "start-latency.svg")); strings.Contains(text, "(n=100)") {
		t.Errorf("start-latency.svg shows KubeVirt's row as a category:\n%s", text)
	}
}

func TestNewRefusesMissingResults(t *testing.T) {
	if _, err := New(Config{Results: filepath.Join(t.TempDir(), "none")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want os.ErrNotExist", err)
	}
}
