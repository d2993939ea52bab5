package diskcopy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/slimvirt/slimvirt/internal/atomicfile"
)

// The copier runs in a container next to the launcher's, not before it: it renames each copy
// into place when it is whole, or, when it cannot copy, writes why into its failed file and
// exits. The launcher waits for one of the two (Await).

// FailedFile is where the copier of the file name in dir (the disk: "", a kernelBoot file:
// its name) says why it failed.
func FailedFile(dir, name string) string {
	if name == "" {
		return filepath.Join(dir, ".copy-failed")
	}
	return filepath.Join(dir, ".copy-failed-"+name)
}

// ReportFailure writes err into the failed file of the copy of name into dir.
func ReportFailure(dir, name string, err error) error {
	if mkErr := os.MkdirAll(dir, 0o755); mkErr != nil {
		return fmt.Errorf("create %s: %w", dir, mkErr)
	}
	return atomicfile.WriteFile(FailedFile(dir, name), []byte(err.Error()), 0o644)
}

// ErrCopyFailed wraps what the copier reported.
var ErrCopyFailed = errors.New("the copy out of the image failed")

// awaitPoll is how often Await looks; a stat of two names is all it costs.
const awaitPoll = 20 * time.Millisecond

// Await waits until one of names exists in dir as a regular file and returns its path, or
// until the copier reports a failure (failedName, as in FailedFile) and returns it, or until
// ctx ends. waiting is called once if the copy is not there at the first look.
func Await(ctx context.Context, dir, failedName string, names []string, waiting func()) (string, error) {
	failed := FailedFile(dir, failedName)
	tick := time.NewTicker(awaitPoll)
	defer tick.Stop()
	for first := true; ; first = false {
		for _, n := range names {
			p := filepath.Join(dir, n)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p, nil
			}
		}
		if msg, err := os.ReadFile(failed); err == nil {
			return "", fmt.Errorf("%w: %s", ErrCopyFailed, strings.TrimSpace(string(msg)))
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("read %s: %w", failed, err)
		}
		if first && waiting != nil {
			waiting()
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for the copy into %s: %w", dir, ctx.Err())
		case <-tick.C:
		}
	}
}
