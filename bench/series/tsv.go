// Package series holds the formats of the raw series the benchmarks write into bench/results/
// beside their tables: one tab-separated file per benchmark, '#' comment lines, a header line
// naming the columns (units in the names), then one row per measurement. The benchmarks write
// them with the Write functions and the plots read them back with the Read functions, so the
// format is decided here only.
package series

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ParseError is a line of a results file that does not parse.
type ParseError struct {
	File string
	Line int
	Err  error
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *ParseError) Unwrap() error { return e.Err }

// writeTSV writes rows under a comment and a header, atomically (temp file + rename) so a
// reader never sees half a file.
func writeTSV(path, comment string, header []string, rows [][]string) error {
	var b strings.Builder
	for _, l := range strings.Split(comment, "\n") {
		b.WriteString("# " + l + "\n")
	}
	b.WriteString(strings.Join(header, "\t") + "\n")
	for _, r := range rows {
		if len(r) != len(header) {
			return fmt.Errorf("write %s: row %q has %d fields, header has %d", path, r, len(r), len(header))
		}
		for _, f := range r {
			if strings.ContainsAny(f, "\t\n") {
				return fmt.Errorf("write %s: field %q holds a tab or a newline", path, f)
			}
		}
		b.WriteString(strings.Join(r, "\t") + "\n")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readTSV calls row for each data line of path after checking its header. A missing file
// is returned as an error that matches os.ErrNotExist; anything else that is wrong names the
// file and the line.
func readTSV(path string, header []string, row func(fields []string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n, seenHeader := 0, false
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if !seenHeader {
			if strings.Join(fields, "\t") != strings.Join(header, "\t") {
				return &ParseError{path, n, fmt.Errorf("header %q, want %q", line, strings.Join(header, "\t"))}
			}
			seenHeader = true
			continue
		}
		if len(fields) != len(header) {
			return &ParseError{path, n, fmt.Errorf("%d fields, want %d (%s)", len(fields), len(header), strings.Join(header, ", "))}
		}
		if err := row(fields); err != nil {
			return &ParseError{path, n, err}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if !seenHeader {
		return &ParseError{path, n, errors.New("no header line")}
	}
	return nil
}
