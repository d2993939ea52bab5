package qcow2

import (
	"errors"
	"os"
	"testing"
	"time"
)

// FuzzParse: any bytes either parse into a header whose sizes are sane and whose bound covers
// its virtual size, or are refused with an error; never a panic, never a slow parse.
func FuzzParse(f *testing.F) {
	for _, args := range [][]string{
		{"1M"}, {"-o", "compat=0.10", "1M"}, {"-o", "extended_l2=on,compression_type=zstd", "1G"},
		{"-o", "data_file=DIR/d,data_file_raw=on", "1M"}, {"-u", "-b", "json:{}", "-F", "raw", "1M"},
	} {
		b, err := os.ReadFile(makeImage(f, args...))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:min(len(b), 8192)])
	}
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		start := time.Now()
		h, err := Parse(b)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("parse took %v", d)
		}
		if err != nil {
			var re *Error
			if !errors.As(err, &re) && !errors.Is(err, ErrShort) {
				t.Fatalf("error %v is neither a refusal nor a short header", err)
			}
			return
		}
		if h.ClusterSize < 512 || h.ClusterSize > MaxClusterSize || h.ClusterSize&(h.ClusterSize-1) != 0 {
			t.Fatalf("accepted cluster size %d", h.ClusterSize)
		}
		if h.Incompatible&(IncompatDataFile|IncompatCorrupt) != 0 || h.Autoclear&AutoclearDataFileRaw != 0 {
			t.Fatalf("accepted features %#x/%#x", h.Incompatible, h.Autoclear)
		}
		if h.VirtualSize < 0 || h.VirtualSize > MaxVirtualSize {
			t.Fatalf("accepted virtual size %d", h.VirtualSize)
		}
		if m := h.MaxFileSize(); m < h.VirtualSize || m <= 0 {
			t.Fatalf("bound %d below virtual size %d", m, h.VirtualSize)
		}
	})
}
