// Package accel decides whether the guest runs on KVM or under TCG emulation.
package accel

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNoAccelerator is returned when KVM cannot be used and emulation is not allowed.
var ErrNoAccelerator = errors.New("no KVM and emulation not allowed")

// ioctls and constants from linux/kvm.h.
const (
	kvmGetAPIVersion              = 0xAE00
	kvmCreateVM                   = 0xAE01
	kvmGetVCPUMmapSize            = 0xAE04
	kvmCreateVCPU                 = 0xAE41
	kvmSetUserMemoryRegion        = 0x4020AE46
	kvmRun                        = 0xAE80
	kvmAPIVersion                 = 12
	kvmExitHLT                    = 5
	exitReasonOffset              = 8 // struct kvm_run: u8, u8, u8[6], u32 exit_reason
	resetVectorPage        uint64 = 0xFFFFF000
)

type memoryRegion struct {
	Slot, Flags                              uint32
	GuestPhysAddr, MemorySize, UserspaceAddr uint64
}

// ProbeKVM says why the KVM device at path cannot run a guest, or nil when it can. Neither the
// device node nor a successful KVM_CREATE_VM proves anything: both exist on hosts whose KVM
// cannot run an ordinary guest. A CPU without VT-x/AMD-V (no vmx/svm flag in cpuinfo) has no
// hardware KVM; a paravirtual KVM there (PVM) runs firmware but not a stock kernel, so it is
// refused. Then it runs one instruction, HLT at the reset vector in real mode, as a
// firmware's first instruction would, to prove the device really runs a vCPU.
func ProbeKVM(path, cpuinfo string) error {
	if err := hardwareVirt(cpuinfo); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- runHLT(path) }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return fmt.Errorf("KVM_RUN on %s did not return in 5s", path)
	}
}

func hardwareVirt(cpuinfo string) error {
	b, err := os.ReadFile(cpuinfo)
	if err != nil {
		return fmt.Errorf("read %s: %w", cpuinfo, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if f == "vmx" || f == "svm" {
				return nil
			}
		}
		return fmt.Errorf("the CPU has no hardware virtualisation (no vmx or svm flag in %s)", cpuinfo)
	}
	return fmt.Errorf("no flags line in %s", cpuinfo)
}

func runHLT(path string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	kvm, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer kvm.Close()
	v, err := unix.IoctlRetInt(int(kvm.Fd()), kvmGetAPIVersion)
	if err != nil {
		return fmt.Errorf("KVM_GET_API_VERSION on %s: %w", path, err)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("%s speaks KVM API %d, want %d", path, v, kvmAPIVersion)
	}
	vm, err := unix.IoctlRetInt(int(kvm.Fd()), kvmCreateVM)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VM on %s: %w", path, err)
	}
	defer unix.Close(vm)

	mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("map guest memory: %w", err)
	}
	defer func() { _ = unix.Munmap(mem) }()
	mem[0xFF0] = 0xF4 // HLT at 0xFFFFFFF0, where a fresh vCPU starts
	region := memoryRegion{GuestPhysAddr: resetVectorPage, MemorySize: 4096, UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(vm), kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); errno != 0 {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", errno)
	}
	vcpu, err := unix.IoctlRetInt(vm, kvmCreateVCPU)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	defer unix.Close(vcpu)
	size, err := unix.IoctlRetInt(int(kvm.Fd()), kvmGetVCPUMmapSize)
	if err != nil {
		return fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	run, err := unix.Mmap(vcpu, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map vCPU state: %w", err)
	}
	defer func() { _ = unix.Munmap(run) }()
	if _, err := unix.IoctlRetInt(vcpu, kvmRun); err != nil {
		return fmt.Errorf("KVM_RUN: %w", err)
	}
	if reason := *(*uint32)(unsafe.Pointer(&run[exitReasonOffset])); reason != kvmExitHLT {
		return fmt.Errorf("KVM_RUN exited with reason %d, want HLT (%d): this KVM cannot run an ordinary guest", reason, kvmExitHLT)
	}
	runtime.KeepAlive(mem)
	return nil
}

// Choose returns "kvm" when KVM works, "tcg" when it does not and emulation is allowed, and
// ErrNoAccelerator (wrapping why KVM failed) otherwise. kvmErr says why KVM was not used.
func Choose(kvmPath, cpuinfo string, allowEmulation bool) (accel string, kvmErr error, err error) {
	kvmErr = ProbeKVM(kvmPath, cpuinfo)
	if kvmErr == nil {
		return "kvm", nil, nil
	}
	if allowEmulation {
		return "tcg", kvmErr, nil
	}
	return "", kvmErr, fmt.Errorf("%w: %w", ErrNoAccelerator, kvmErr)
}
