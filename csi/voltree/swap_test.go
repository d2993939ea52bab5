package voltree

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestCopySwappedEntries: a pod swaps a file for a symlink to /etc/shadow, and a directory
// for a symlink to /etc, between the copy listing the names and opening them (the test hook
// runs exactly there, so the race is won every time). The copy holds symlinks with that
// text; nothing of /etc is read.
func TestCopySwappedEntries(t *testing.T) {
	testutil.RequireRoot(t, "the copy keeps owners")
	src := t.TempDir()
	testutil.Must(t, os.WriteFile(filepath.Join(src, "f"), []byte("mine"), 0o644))
	testutil.Must(t, os.MkdirAll(filepath.Join(src, "d", "inner"), 0o755))
	swap := map[string]string{"f": "/etc/shadow", "d": "/etc"}
	before := func(rel string) {
		target, ok := swap[rel]
		if !ok {
			return
		}
		p := filepath.Join(src, rel)
		testutil.Must(t, os.RemoveAll(p))
		testutil.Must(t, os.Symlink(target, p))
	}
	dst := t.TempDir()
	st, err := Copy(context.Background(), src, dst, Options{Limits: Limits{Depth: 8, Entries: 100, Bytes: 1 << 20}, before: before})
	testutil.Must(t, err)
	for rel, target := range swap {
		if got, err := os.Readlink(filepath.Join(dst, rel)); err != nil || got != target {
			t.Errorf("%s: copy is %q %v, want a symlink to %s", rel, got, err, target)
		}
	}
	if st.Files != 0 || st.Dirs != 0 || st.Symlinks != 2 {
		t.Fatalf("stats %+v: want 2 symlinks and nothing read", st)
	}
}
