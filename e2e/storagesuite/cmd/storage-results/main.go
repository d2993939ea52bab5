// Command storage-results turns the External Storage suite's JUnit report into the markdown
// tables docs/csi.md shows: one row per test pattern and test suite, with the specs that passed,
// failed and were skipped, then each reason for a skip with its count (the suite skips what the
// driver definition does not claim; "skipped" alone is a spec the harness left out by name).
package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

type report struct {
	Suites []struct {
		Cases []testCase `xml:"testcase"`
	} `xml:"testsuite"`
}

type testCase struct {
	Name    string    `xml:"name,attr"`
	Failure *struct{} `xml:"failure"`
	Error   *struct{} `xml:"error"`
	Skipped *struct {
		Message string `xml:"message,attr"`
	} `xml:"skipped"`
}

// spec matches "... External Storage [Driver: X] [Testpattern: P] suite ..." and captures
// the pattern and the suite's name (the word after the pattern).
var spec = regexp.MustCompile(`External Storage \[Driver: [^\]]+\] \[Testpattern: ([^\]]+)\] (\S+)`)

type counts struct{ passed, failed, skipped int }

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: storage-results junit.xml")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "storage-results:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read the report: %w", err)
	}
	return render(os.Stdout, data)
}

// render writes the tables for the JUnit report data to w.
func render(w io.Writer, data []byte) error {
	var r report
	if err := xml.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("decode the report: %w", err)
	}
	rows := map[[2]string]*counts{}
	reasons := map[string]int{}
	for _, s := range r.Suites {
		for _, c := range s.Cases {
			m := spec.FindStringSubmatch(c.Name)
			if m == nil {
				continue
			}
			k := [2]string{m[1], m[2]}
			if rows[k] == nil {
				rows[k] = &counts{}
			}
			switch {
			case c.Failure != nil || c.Error != nil:
				rows[k].failed++
			case c.Skipped != nil:
				rows[k].skipped++
				reasons[c.Skipped.Message]++
			default:
				rows[k].passed++
			}
		}
	}
	keys := make([][2]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	fmt.Fprintln(w, "| test pattern | suite | passed | failed | skipped |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	var total counts
	for _, k := range keys {
		c := rows[k]
		total.passed, total.failed, total.skipped = total.passed+c.passed, total.failed+c.failed, total.skipped+c.skipped
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d |\n", k[0], k[1], c.passed, c.failed, c.skipped)
	}
	fmt.Fprintf(w, "| **all** | | **%d** | **%d** | **%d** |\n", total.passed, total.failed, total.skipped)
	printReasons(w, reasons)
	return nil
}

func printReasons(w io.Writer, reasons map[string]int) {
	msgs := make([]string, 0, len(reasons))
	for m := range reasons {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool {
		return reasons[msgs[i]] > reasons[msgs[j]] || reasons[msgs[i]] == reasons[msgs[j]] && msgs[i] < msgs[j]
	})
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| skipped | reason the suite gives |")
	fmt.Fprintln(w, "|---|---|")
	for _, m := range msgs {
		reason := strings.TrimSpace(strings.TrimPrefix(m, "skipped - "))
		if m == "skipped" {
			reason = "left out by the harness by name (see e2e/storagesuite/run.sh)"
		}
		fmt.Fprintf(w, "| %d | %s |\n", reasons[m], strings.ReplaceAll(reason, "|", "\\|"))
	}
}
