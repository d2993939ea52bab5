package series

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Tables the cluster benchmarks write in markdown. Like the text tables, they hold summary
// figures only (percentiles, rounded values).
const (
	StartLatencyTableFile = "start-latency.md"
	ControlPlaneTableFile = "control-plane.md"
)

// mdRow is a row of a markdown table with its line number.
type mdRow struct {
	line  int
	cells []string
}

// readMarkdownTable returns the first table of path: its header cells and its rows.
func readMarkdownTable(path string) (header mdRow, rows []mdRow, err error) {
	err = scanLines(path, func(n int, line string) (bool, error) {
		if !strings.HasPrefix(line, "|") {
			return header.cells == nil, nil // the table ends at its first other line
		}
		cells := strings.Split(strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case header.cells == nil:
			header = mdRow{n, cells}
		case strings.HasPrefix(cells[0], "---"):
		case len(cells) != len(header.cells):
			return false, &ParseError{path, n, fmt.Errorf("%d cells, the header has %d", len(cells), len(header.cells))}
		default:
			rows = append(rows, mdRow{n, cells})
		}
		return true, nil
	})
	if err == nil && header.cells == nil {
		err = fmt.Errorf("read %s: no markdown table", path)
	}
	return header, rows, err
}

// StartLatencySummary is a row of start-latency.md: percentiles of one shape of start.
type StartLatencySummary struct {
	Label                                      string
	N                                          int
	RunningP50, RunningP95, LeaseP50, LeaseP95 time.Duration // 0 where the table has "-"
}

// ReadStartLatencySummary reads start-latency.md.
func ReadStartLatencySummary(path string) ([]StartLatencySummary, error) {
	header, rows, err := readMarkdownTable(path)
	if err != nil {
		return nil, err
	}
	want := []string{"n", "Running P50", "Running P95", "lease P50", "lease P95"}
	if strings.Join(header.cells[1:], "|") != strings.Join(want, "|") {
		return nil, &ParseError{path, header.line, fmt.Errorf("columns %q, want %q", header.cells[1:], want)}
	}
	var out []StartLatencySummary
	for _, r := range rows {
		s := StartLatencySummary{Label: r.cells[0]}
		n, err := strconv.Atoi(r.cells[1])
		if err != nil {
			return nil, &ParseError{path, r.line, fmt.Errorf("column n: %w", err)}
		}
		s.N = n
		for i, p := range []*time.Duration{&s.RunningP50, &s.RunningP95, &s.LeaseP50, &s.LeaseP95} {
			v, err := quantity(r.cells[2+i], "s")
			if err != nil {
				return nil, &ParseError{path, r.line, fmt.Errorf("column %s: %w", want[1+i], err)}
			}
			*p = time.Duration(math.Round(v * float64(time.Second)))
		}
		out = append(out, s)
	}
	return out, nil
}

var vmisColumn = regexp.MustCompile(`^(\d+) VMIs( Running)?$`)

// ReadControlPlaneSummary reads control-plane.md: rows "COMPONENT CPU" in cores and
// "COMPONENT working set" in MiB, one column per count of VMIs Running.
func ReadControlPlaneSummary(path string) ([]ControlPlane, error) {
	header, rows, err := readMarkdownTable(path)
	if err != nil {
		return nil, err
	}
	var counts []int
	for _, c := range header.cells[1:] {
		m := vmisColumn.FindStringSubmatch(c)
		if m == nil {
			return nil, &ParseError{path, header.line, fmt.Errorf("column %q, want \"N VMIs\" or \"N VMIs Running\"", c)}
		}
		n, _ := strconv.Atoi(m[1])
		counts = append(counts, n)
	}
	type key struct {
		running   int
		component string
	}
	byKey := map[key]*ControlPlane{}
	var out []*ControlPlane
	for _, r := range rows {
		label, _, _ := strings.Cut(r.cells[0], " (") // "node agent pod CPU (CNI installer, ...)"
		component, isCPU := strings.CutSuffix(label, " CPU")
		if !isCPU {
			var ok bool
			if component, ok = strings.CutSuffix(label, " working set"); !ok {
				return nil, &ParseError{path, r.line, fmt.Errorf("row %q is neither CPU nor working set", r.cells[0])}
			}
		}
		component = strings.TrimSuffix(component, " pod")
		for i, n := range counts {
			c := byKey[key{n, component}]
			if c == nil {
				c = &ControlPlane{Running: n, Component: component}
				byKey[key{n, component}] = c
				out = append(out, c)
			}
			unit := "MiB"
			if isCPU {
				unit = "cores"
			}
			v, err := quantity(r.cells[1+i], unit)
			if err != nil {
				return nil, &ParseError{path, r.line, err}
			}
			if isCPU {
				c.CPU = v
			} else {
				c.WorkingSet = int64(math.Round(v * (1 << 20)))
			}
		}
	}
	var cps []ControlPlane
	for _, c := range out {
		cps = append(cps, *c)
	}
	return cps, nil
}

// quantity parses "1.3 s", "16.5 MiB", "0.003 cores" in unit; "-" is 0.
func quantity(cell, unit string) (float64, error) {
	if cell == "-" {
		return 0, nil
	}
	v, ok := strings.CutSuffix(cell, " "+unit)
	f, err := strconv.ParseFloat(v, 64)
	if !ok || err != nil || f < 0 {
		return 0, fmt.Errorf("cell %q: want \"N %s\"", cell, unit)
	}
	return f, nil
}
