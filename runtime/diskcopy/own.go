package diskcopy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Own gives each path that exists to uid:gid (the path itself, not what is below it): a
// hostDisk's directory, so the non-root launcher can create its image there, and the image when
// it exists, so QEMU can open it. A missing path is skipped; a symlink is refused, so a link in
// a node directory cannot hand another file to the launcher.
func Own(uid, gid int, paths ...string) ([]string, error) {
	var owned []string
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return owned, fmt.Errorf("stat %s: %w", p, err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return owned, fmt.Errorf("%s is a symlink: refusing to change its owner", p)
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return owned, fmt.Errorf("give %s to %d:%d: %w", p, uid, gid, err)
		}
		owned = append(owned, p)
	}
	return owned, nil
}
