package launcherpod

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// MaxStatusSize bounds a status file. The launcher writes a few hundred bytes; the file sits in
// a directory the pod can write (anyone who may exec into the pod), and the node agent reads it
// as root, so a larger one is refused without being read.
const MaxStatusSize = 64 << 10

// ErrNotRegular is returned for a status file that is a FIFO, a device, a socket, a directory
// or a symbolic link: reading any of them could block, read a node's device or leave the pod's
// directory.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is returned for a status file larger than MaxStatusSize.
var ErrTooLarge = errors.New("larger than the status file bound")

var phases = []string{PhaseStarting, PhaseRunning, PhasePaused, PhaseShuttingDown, PhaseShutdown, PhaseCrashed}

// ReadStatus reads a launcher's status file at path: the file itself, never what a symbolic
// link there points to, and only when it is a regular file of at most MaxStatusSize bytes.
func ReadStatus(path string) (Status, error) {
	// O_NONBLOCK: a FIFO put in the file's place must not hang the open.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return Status{}, fmt.Errorf("open %s: %w (a symbolic link)", path, ErrNotRegular)
		}
		return Status{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	return ReadStatusFile(f)
}

// ReadStatusFile reads the status from f, an open status file, as ReadStatus does: f must be
// a regular file of at most MaxStatusSize bytes. Only that many bytes are ever read.
func ReadStatusFile(f *os.File) (Status, error) {
	fi, err := f.Stat()
	if err != nil {
		return Status{}, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	if !fi.Mode().IsRegular() {
		return Status{}, fmt.Errorf("read %s: %w (%s)", f.Name(), ErrNotRegular, fi.Mode().Type())
	}
	if fi.Size() > MaxStatusSize {
		return Status{}, fmt.Errorf("read %s: %d bytes: %w of %d bytes", f.Name(), fi.Size(), ErrTooLarge, MaxStatusSize)
	}
	// The file may grow after the stat: read one byte past the bound to see it.
	b, err := io.ReadAll(io.LimitReader(f, MaxStatusSize+1))
	if err != nil {
		return Status{}, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	st, err := ParseStatus(b)
	if err != nil {
		return Status{}, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return st, nil
}

// ParseStatus parses a status file's content: one JSON object of at most MaxStatusSize bytes
// with a known phase, and a valid guest MAC and IP when they are set. Fields it does not know
// are ignored, so that a launcher newer than the node agent (during an upgrade) is still read;
// no value outside Status reaches its reader.
func ParseStatus(b []byte) (Status, error) {
	if len(b) > MaxStatusSize {
		return Status{}, fmt.Errorf("parse status: %d bytes: %w of %d bytes", len(b), ErrTooLarge, MaxStatusSize)
	}
	var st Status
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&st); err != nil {
		return Status{}, fmt.Errorf("parse status: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Status{}, errors.New("parse status: data after the JSON object")
	}
	if err := st.validate(); err != nil {
		return Status{}, fmt.Errorf("parse status: %w", err)
	}
	return st, nil
}

func (st Status) validate() error {
	if !slices.Contains(phases, st.Phase) {
		return fmt.Errorf("phase %q is not one of %v", st.Phase, phases)
	}
	if st.Accelerator != "" && st.Accelerator != "kvm" && st.Accelerator != "tcg" {
		return fmt.Errorf("accelerator %q is neither kvm nor tcg", st.Accelerator)
	}
	if st.GuestMAC != "" {
		if mac, err := net.ParseMAC(st.GuestMAC); err != nil || len(mac) != 6 {
			return fmt.Errorf("guestMAC %q is not a MAC address", st.GuestMAC)
		}
	}
	if st.GuestIP != "" {
		if ip, err := netip.ParseAddr(st.GuestIP); err != nil || ip.Zone() != "" {
			return fmt.Errorf("guestIP %q is not an IP address", st.GuestIP)
		}
	}
	if err := validDiskSizes(st.DiskSizes); err != nil {
		return err
	}
	return validDiskTargets(st.DiskTargets)
}

// validDiskTargets checks Status.DiskTargets: the names become list keys in the VMI's status
// and the targets strings there.
func validDiskTargets(targets map[string]string) error {
	if len(targets) > MaxDiskSizes {
		return fmt.Errorf("diskTargets has %d disks, more than %d", len(targets), MaxDiskSizes)
	}
	for name, target := range targets {
		if !IsDNSLabel(name) {
			return fmt.Errorf("diskTargets: volume name %.70q is not a DNS label", name)
		}
		if !isDiskTarget(target) {
			return fmt.Errorf("diskTargets: volume %s: target %.20q is not vd, sd or hd and 1 to 3 letters", name, target)
		}
	}
	return nil
}

func isDiskTarget(s string) bool {
	if len(s) < 3 || len(s) > 5 || (s[:2] != "vd" && s[:2] != "sd" && s[:2] != "hd") {
		return false
	}
	for _, c := range s[2:] {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// validDiskSizes checks Status.DiskSizes against its bounds. The names become list keys in the
// VMI's status and the sizes numbers there, so a file that breaks one bound is refused whole.
func validDiskSizes(sizes map[string]int64) error {
	if len(sizes) > MaxDiskSizes {
		return fmt.Errorf("diskSizes has %d disks, more than %d", len(sizes), MaxDiskSizes)
	}
	for name, size := range sizes {
		if !IsDNSLabel(name) {
			return fmt.Errorf("diskSizes: volume name %.70q is not a DNS label", name)
		}
		if size <= 0 || size > MaxDiskSize {
			return fmt.Errorf("diskSizes: volume %s: size %d is not between 1 and %d", name, size, int64(MaxDiskSize))
		}
	}
	return nil
}

// IsDNSLabel says whether s is an RFC 1123 label, what Kubernetes allows as a VMI's volume and
// interface names: 1 to 63 lower-case letters, digits and dashes, starting and ending with a
// letter or digit. Hand-written: a regexp compiled at start-up costs every CNI plugin run a
// millisecond or two.
func IsDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'; !ok {
			return false
		}
	}
	return true
}
