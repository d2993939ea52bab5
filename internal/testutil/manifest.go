package testutil

import (
	"bufio"
	"bytes"
	"strings"
)

// WantLine is a test manifest's "# want: " line: the message the API server's refusal of it
// must contain (the refusal catalogue in controller/integration/testdata/bad). "" if none.
func WantLine(raw []byte) string {
	s := bufio.NewScanner(bytes.NewReader(raw))
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "# want: "); ok {
			return rest
		}
	}
	return ""
}
