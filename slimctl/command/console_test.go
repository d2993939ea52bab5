package command

import (
	"io"
	"strings"
	"testing"
)

func TestEscapeReaderStopsAtCtrlRightBracket(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ls\r\n", "ls\r\n"},
		{"abc\x1ddef", "abc"},
		{"\x1d", ""},
	}
	for _, tt := range tests {
		r := &escapeReader{r: strings.NewReader(tt.in)}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("read %q from %q, want %q", got, tt.in, tt.want)
		}
	}
}
