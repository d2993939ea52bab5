// Package vmifile reads the VMI a launcher runs from its pod: the file the kubelet writes from
// the pod's launcherpod.AnnotationVMI (a downward API volume), checked against the digest the
// controller put in the pod's environment, which, unlike an annotation, nobody can change
// once the pod exists.
package vmifile

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// Read reads at most launcherpod.MaxVMISize bytes of path and returns them when their
// SHA-256 is wantSHA256 (hex). A larger file, a file of another digest, or one that is not
// a regular file is refused.
func Read(path, wantSHA256 string) ([]byte, error) {
	want, err := hex.DecodeString(wantSHA256)
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("%s is not a SHA-256 in hex: %q", launcherpod.EnvVMISHA256, wantSHA256)
	}
	// The kubelet's downward API files are links into its own timestamped directory, in a
	// volume the pod cannot write: following them is following the kubelet.
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open the VMI file %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat the VMI file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("the VMI file %s is not a regular file (%s)", path, st.Mode().Type())
	}
	raw, err := io.ReadAll(io.LimitReader(f, launcherpod.MaxVMISize+1))
	if err != nil {
		return nil, fmt.Errorf("read the VMI file %s: %w", path, err)
	}
	if len(raw) > launcherpod.MaxVMISize {
		return nil, fmt.Errorf("the VMI file %s is larger than %d bytes", path, launcherpod.MaxVMISize)
	}
	if len(raw) == 0 {
		return nil, errors.New("the VMI file " + path + " is empty: the pod has no " + launcherpod.AnnotationVMI + " annotation")
	}
	got := sha256.Sum256(raw)
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return nil, fmt.Errorf("the VMI file %s does not match %s: the pod's %s annotation was changed after the pod was made", path, launcherpod.EnvVMISHA256, launcherpod.AnnotationVMI)
	}
	return raw, nil
}
