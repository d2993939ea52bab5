package accel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

func TestChoose(t *testing.T) {
	dir := t.TempDir()
	noVirt := filepath.Join(dir, "novirt")
	testutil.Must(t, os.WriteFile(noVirt, []byte("processor\t: 0\nflags\t\t: fpu vme sse sse2 hypervisor\n"), 0o644))
	vmx := filepath.Join(dir, "vmx")
	testutil.Must(t, os.WriteFile(vmx, []byte("processor\t: 0\nflags\t\t: fpu vme vmx sse\n"), 0o644))
	tests := []struct {
		name      string
		kvm       string
		cpuinfo   string
		allow     bool
		want      string
		wantErr   error
		kvmReason string
	}{
		{"no vmx/svm, emulation allowed", "/dev/kvm", noVirt, true, "tcg", nil, "no vmx or svm"},
		{"no vmx/svm, emulation not allowed", "/dev/kvm", noVirt, false, "", ErrNoAccelerator, "no vmx or svm"},
		{"vmx but no device", filepath.Join(dir, "nokvm"), vmx, true, "tcg", nil, "open"},
		{"vmx but no device, emulation not allowed", filepath.Join(dir, "nokvm"), vmx, false, "", ErrNoAccelerator, "open"},
		{"not a KVM device", "/dev/null", vmx, true, "tcg", nil, "KVM_GET_API_VERSION"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, kvmErr, err := Choose(tc.kvm, tc.cpuinfo, tc.allow)
			if got != tc.want || !errors.Is(err, tc.wantErr) {
				t.Fatalf("Choose = %q, %v; want %q, %v", got, err, tc.want, tc.wantErr)
			}
			if kvmErr == nil || !strings.Contains(kvmErr.Error(), tc.kvmReason) {
				t.Errorf("KVM reason %v, want %q", kvmErr, tc.kvmReason)
			}
			if err != nil && !strings.Contains(err.Error(), "no KVM and emulation not allowed") {
				t.Errorf("error %q", err)
			}
		})
	}
}

// On this host /dev/kvm opens and even creates VMs, but the CPU has no VT-x/AMD-V: the probe
// must refuse it. Where the CPU has them, the probe must accept a working /dev/kvm.
func TestProbeThisHost(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip("no /proc/cpuinfo")
	}
	hasVirt := strings.Contains(string(b), " vmx") || strings.Contains(string(b), " svm")
	err = ProbeKVM("/dev/kvm", "/proc/cpuinfo")
	if !hasVirt && err == nil {
		t.Fatal("KVM accepted on a CPU without vmx/svm")
	}
	t.Logf("vmx/svm=%v probe=%v", hasVirt, err)
}
