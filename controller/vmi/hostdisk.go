package vmi

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// DefaultHostDiskDir is the one node directory hostDisk images may lie under when the cluster's
// owner lists none: a directory of the node agent's state directory that nothing else writes.
const DefaultHostDiskDir = "/var/lib/slimvirt/hostdisks"

// maxHostDiskPath bounds a hostDisk path: PATH_MAX, what the node could open anyway.
const maxHostDiskPath = 4096

// hostDiskPlace is where a hostDisk's image lies on the node: under the allowed directory
// Dirs[Index], at Rel below it.
type hostDiskPlace struct {
	Index int
	Dir   string
	Rel   string
}

// CheckHostDiskDirs validates the directories the cluster's owner allows hostDisks under:
// absolute, clean, and not the node's root.
func CheckHostDiskDirs(dirs []string) error {
	for _, d := range dirs {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/" || strings.ContainsRune(d, 0) {
			return fmt.Errorf("host disk directory %q must be an absolute, clean path other than /", d)
		}
	}
	return nil
}

// placeHostDisk finds the allowed directory a hostDisk's path lies under. The controller cannot
// see the node's links, so it only checks the path as written: absolute, already clean (no
// "..", "." or doubled slashes, so what it names is what it reads as) and strictly below one
// of dirs. The hostdisk-owner container checks the same on the node without following links.
func placeHostDisk(p string, dirs []string) (hostDiskPlace, error) {
	allowed := strings.Join(dirs, ", ")
	if len(dirs) == 0 {
		allowed = "none"
	}
	switch {
	case len(p) > maxHostDiskPath:
		return hostDiskPlace{}, fmt.Errorf("hostDisk path is %d bytes long, more than %d", len(p), maxHostDiskPath)
	case strings.ContainsRune(p, 0):
		return hostDiskPlace{}, errors.New("hostDisk path holds a NUL byte")
	case !filepath.IsAbs(p) || filepath.Clean(p) != p:
		return hostDiskPlace{}, fmt.Errorf("hostDisk path %q must be absolute and clean (no \"..\", \".\" or \"//\"); allowed directories: %s", p, allowed)
	}
	for i, d := range dirs {
		if rel, ok := strings.CutPrefix(p, d+"/"); ok && rel != "" {
			return hostDiskPlace{Index: i, Dir: d, Rel: rel}, nil
		}
	}
	return hostDiskPlace{}, fmt.Errorf("hostDisk path %s is not below a directory this cluster allows hostDisks in (allowed: %s; the controller's --host-disk-dirs)", p, allowed)
}
