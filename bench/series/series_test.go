package series

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	sl := []StartLatency{
		{Shape: ShapeSingle, Together: 1, VMI: "bench-single-0", Running: 1300 * time.Millisecond, Lease: 13600 * time.Millisecond},
		{Shape: ShapeBatch, Together: 10, VMI: "bench-batch-3", Running: 5812 * time.Millisecond, Lease: 70612 * time.Millisecond},
	}
	mem := []VMMemory{{Running: 1, VMI: "bench-overhead", Guest: 128 << 20, WorkingSet: 234985062, LauncherPSS: 39216742, QEMUPSS: 237292748}}
	cp := []ControlPlane{
		{Running: 0, Component: "controller", CPU: 0.003, WorkingSet: 17301504, Window: time.Minute},
		{Running: 20, Component: "node agent", CPU: 0.0105, WorkingSet: 52848230, Window: time.Minute},
	}
	cni := []CNISample{{Chain: "bridge", Run: 0, Add: 16400 * time.Microsecond, Del: 25700 * time.Microsecond}}

	check := func(name string, write func(string) error, read func(string) (any, error), want any) {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			if err := write(path); err != nil {
				t.Fatal(err)
			}
			got, err := read(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("read back %+v, want %+v", got, want)
			}
		})
	}
	check(StartLatencyFile, func(p string) error { return WriteStartLatency(p, sl) },
		func(p string) (any, error) { return ReadStartLatency(p) }, sl)
	check(VMMemoryFile, func(p string) error { return WriteVMMemory(p, mem) },
		func(p string) (any, error) { return ReadVMMemory(p) }, mem)
	check(ControlPlaneFile, func(p string) error { return WriteControlPlane(p, cp) },
		func(p string) (any, error) { return ReadControlPlane(p) }, cp)
	check(CNIFile, func(p string) error { return WriteCNI(p, cni) },
		func(p string) (any, error) { return ReadCNI(p) }, cni)
}

func TestWriteRefusesTabs(t *testing.T) {
	err := WriteCNI(filepath.Join(t.TempDir(), CNIFile), []CNISample{{Chain: "a\tb"}})
	if err == nil || !strings.Contains(err.Error(), "tab") {
		t.Fatalf("got %v, want a refusal of the tab", err)
	}
}

func TestReadMalformed(t *testing.T) {
	const header = "shape\ttogether\tvmi\trunning_s\tlease_s\n"
	for _, tc := range []struct {
		name, text string
		line       int
		says       string
	}{
		{"wrong header", "# c\nshape\tn\tvmi\trunning_s\tlease_s\n", 2, "header"},
		{"no header", "# only a comment\n", 1, "no header"},
		{"short row", header + "single\t1\tbench-0\t1.3\n", 2, "4 fields, want 5"},
		{"not a number", header + "single\t1\tbench-0\t1.3\t13.6\nsingle\t1\tbench-1\tsoon\t13.6\n", 3, "column running_s"},
		{"negative", header + "batch\t-10\tbench-0\t1.3\t13.6\n", 2, "column together: negative"},
		{"empty name", header + "single\t1\t\t1.3\t13.6\n", 2, "column vmi: empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), StartLatencyFile)
			if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadStartLatency(path)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a ParseError", err)
			}
			if pe.File != path || pe.Line != tc.line || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("got %q (line %d), want %s:%d saying %q", err, pe.Line, path, tc.line, tc.says)
			}
			if !strings.HasPrefix(err.Error(), path+":") {
				t.Errorf("%q does not start with the file name", err)
			}
		})
	}
}

func TestReadMissing(t *testing.T) {
	_, err := ReadCNI(filepath.Join(t.TempDir(), CNIFile))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want os.ErrNotExist", err)
	}
	_, err = ReadImports(filepath.Join(t.TempDir(), CSIFile))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want os.ErrNotExist", err)
	}
}
