// Package hostdisk makes a hostDisk image the launcher's on the node: the hostdisk-owner
// container (slimvirt-diskcopy own, from the launcher image) checks that the image the kubelet
// mounted is the file the VMI names below an allowed node directory, reached without links,
// grows an image created empty, and gives it, and nothing else, to the launcher's account.
package hostdisk

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Disk is one hostDisk image as the hostdisk-owner container sees it.
type Disk struct {
	// File is the image as the kubelet mounted it (a bind mount of the node file, links
	// followed).
	File string
	// Dir is the allowed node directory holding it, mounted read-only.
	Dir string
	// Rel is the image's path below Dir, as the VMI names it.
	Rel string
	// Size is what an empty image is grown to (type DiskOrCreate); 0 leaves it as it is.
	Size int64
}

// align is the unit an image created for a DiskOrCreate hostDisk is sized in.
const align = 1 << 20

// Parse reads the hostdisk-owner's arguments: four per image, FILE DIR REL SIZE.
func Parse(args []string) ([]Disk, error) {
	if len(args) == 0 || len(args)%4 != 0 {
		return nil, fmt.Errorf("want FILE DIR REL SIZE for each hostDisk, got %d arguments", len(args))
	}
	var out []Disk
	for i := 0; i < len(args); i += 4 {
		size, err := strconv.ParseInt(args[i+3], 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("hostDisk %s: size %q is not a byte count", args[i+2], args[i+3])
		}
		out = append(out, Disk{File: args[i], Dir: args[i+1], Rel: args[i+2], Size: size})
	}
	return out, nil
}

// Own checks, on the node, that the image the kubelet mounted at d.File is the regular
// file d.Rel below the allowed directory d.Dir, reached without following a link (the kubelet
// follows links when it mounts a hostPath, and the controller cannot see them), with no other
// name on the node; then it grows an empty image to d.Size and gives the image, and only the
// image, to uid:gid. Any doubt is a refusal, and the launcher does not start.
func Own(d Disk, uid, gid int) error {
	if d.Rel == "" || filepath.IsAbs(d.Rel) || filepath.Clean(d.Rel) != d.Rel || d.Rel == ".." || strings.HasPrefix(d.Rel, "../") {
		return fmt.Errorf("hostDisk %s: %q is not a path below the allowed directory", d.File, d.Rel)
	}
	dir, err := unix.Open(d.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open allowed directory %s: %w", d.Dir, err)
	}
	defer unix.Close(dir)
	below, err := unix.Openat2(dir, d.Rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("hostDisk %s: a link on the way below the allowed directory: refused: %w", d.Rel, err)
	}
	if err != nil {
		return fmt.Errorf("open hostDisk %s below the allowed directory: %w", d.Rel, err)
	}
	defer unix.Close(below)
	var want unix.Stat_t
	if err := unix.Fstat(below, &want); err != nil {
		return fmt.Errorf("stat hostDisk %s: %w", d.Rel, err)
	}
	if want.Mode&unix.S_IFMT == unix.S_IFLNK {
		return fmt.Errorf("hostDisk %s: a link on the way below the allowed directory: refused", d.Rel)
	}
	if want.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("hostDisk %s is not a regular file (mode %o): refused", d.Rel, want.Mode)
	}
	if want.Nlink != 1 {
		return fmt.Errorf("hostDisk %s has %d names on the node (hard links): refused", d.Rel, want.Nlink)
	}
	mounted, err := unix.Open(d.File, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open mounted hostDisk %s: %w", d.File, err)
	}
	defer unix.Close(mounted)
	var got unix.Stat_t
	if err := unix.Fstat(mounted, &got); err != nil {
		return fmt.Errorf("stat mounted hostDisk %s: %w", d.File, err)
	}
	if got.Dev != want.Dev || got.Ino != want.Ino {
		return fmt.Errorf("hostDisk %s: the file mounted is not the file below the allowed directory (a link was followed): refused", d.Rel)
	}
	if d.Size > 0 && got.Size == 0 {
		if err := grow(d.File, d.Size/align*align); err != nil {
			return fmt.Errorf("hostDisk %s: %w", d.Rel, err)
		}
	}
	// The descriptor, not the name: the image checked is the image given.
	if err := unix.Fchownat(mounted, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("give hostDisk %s to %d:%d: %w", d.Rel, uid, gid, err)
	}
	return nil
}

// grow sizes the image the kubelet created empty (for type DiskOrCreate), sparse.
func grow(file string, size int64) error {
	if size <= 0 {
		return fmt.Errorf("capacity below %d bytes", align)
	}
	fd, err := unix.Open(file, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s to size it: %w", file, err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, size); err != nil {
		return fmt.Errorf("size %s to %d bytes: %w", file, size, err)
	}
	return nil
}
