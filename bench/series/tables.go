package series

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Text tables some benchmarks print instead of a series file. They hold summary figures only;
// whoever draws them must say so.
const (
	CSIFile      = "csi.txt"
	CNITableFile = "cni.txt"
)

// Import is one row of the import table in csi.txt: the best of the runs of one way to turn a
// served image into a disk.
type Import struct {
	Format  string // "raw", "qcow2"
	Method  string // "curl -o", "slimvirt import (incl. fsync)", ...
	Time    time.Duration
	MiBps   float64
	Heading string // the table's heading, e.g. "import of a 1 GiB image (best of 2)"
}

var (
	importHeading = regexp.MustCompile(`^(import of .*\S)\s+time\s+MiB/s$`)
	importPrefix  = regexp.MustCompile(`^[a-z0-9]+: `)
	importRow     = regexp.MustCompile(`^([a-z0-9]+): (.*\S)\s+(\S+)\s+([0-9.]+)$`)
)

// ReadImports reads the import table csi/bench prints (make bench-csi tees it into csi.txt).
// A file without that table is an error: the table is what the file is read for.
func ReadImports(path string) ([]Import, error) {
	var rows []Import
	heading := ""
	err := scanLines(path, func(n int, line string) (bool, error) {
		if heading == "" {
			if m := importHeading.FindStringSubmatch(line); m != nil {
				heading = m[1]
			}
			return true, nil
		}
		if !importPrefix.MatchString(line) {
			return false, nil // the table ends at the first line that is not a row
		}
		m := importRow.FindStringSubmatch(line)
		if m == nil {
			return false, &ParseError{path, n, fmt.Errorf("import row %q: want \"FORMAT: METHOD  TIME  MIB/S\"", line)}
		}
		d, err := time.ParseDuration(m[3])
		if err != nil {
			return false, &ParseError{path, n, fmt.Errorf("import time: %w", err)}
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			return false, &ParseError{path, n, fmt.Errorf("import MiB/s: %w", err)}
		}
		rows = append(rows, Import{Format: m[1], Method: m[2], Time: d, MiBps: v, Heading: heading})
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("read %s: no import table (a line \"import of ... time MiB/s\" followed by rows)", path)
	}
	return rows, nil
}

// CNISummary is one row of the table cni/plugin's TestLatency prints (cni.txt).
type CNISummary struct {
	Chain                          string
	AddP50, AddP95, DelP50, DelP95 time.Duration
	Heading                        string // e.g. "CNI chain latency, 100 runs each, alternating (...)"
}

const cniTableHeader = "| chain | ADD median | ADD p95 | DEL median | DEL p95 |"

// ReadCNISummary reads the median/P95 table from cni.txt.
func ReadCNISummary(path string) ([]CNISummary, error) {
	var rows []CNISummary
	heading, inTable := "", false
	err := scanLines(path, func(n int, line string) (bool, error) {
		switch {
		case !inTable && strings.HasPrefix(line, "CNI chain latency"):
			heading = line
		case !inTable && line == cniTableHeader:
			inTable = true
		case inTable && strings.HasPrefix(line, "|---"):
		case inTable && strings.HasPrefix(line, "|"):
			cells := strings.Split(strings.Trim(line, "|"), "|")
			if len(cells) != 5 {
				return false, &ParseError{path, n, fmt.Errorf("CNI row has %d cells, want 5", len(cells))}
			}
			r := CNISummary{Chain: strings.TrimSpace(cells[0]), Heading: heading}
			for i, p := range []*time.Duration{&r.AddP50, &r.AddP95, &r.DelP50, &r.DelP95} {
				v, ok := strings.CutSuffix(strings.TrimSpace(cells[1+i]), " ms")
				f, err := strconv.ParseFloat(v, 64)
				if !ok || err != nil {
					return false, &ParseError{path, n, fmt.Errorf("CNI cell %q: want \"N ms\"", strings.TrimSpace(cells[1+i]))}
				}
				*p = time.Duration(math.Round(f * float64(time.Millisecond)))
			}
			rows = append(rows, r)
		case inTable:
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("read %s: no CNI latency table (%q followed by rows)", path, cniTableHeader)
	}
	return rows, nil
}

// scanLines calls line for each line of path (numbered from 1) until it returns false or an
// error.
func scanLines(path string, line func(n int, text string) (bool, error)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		more, err := line(n, strings.TrimRight(sc.Text(), "\r"))
		if err != nil {
			return err
		}
		if !more {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
