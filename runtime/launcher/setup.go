package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/accel"
	"github.com/slimvirt/slimvirt/runtime/diskcopy"
	"github.com/slimvirt/slimvirt/runtime/domain"
	"github.com/slimvirt/slimvirt/runtime/libvirtd"
	"github.com/slimvirt/slimvirt/runtime/volumes"
)

// makeDirs creates the launcher's directories and reports the VM starting.
func (l *Launcher) makeDirs() error {
	c := &l.cfg
	for _, dir := range []string{c.RunDir, c.Libvirt.RunDir, filepath.Dir(c.StatusFile)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return setupFailed("create %s: %v", dir, err)
		}
	}
	if err := l.status.phase(launcherpod.PhaseStarting, ""); err != nil {
		return setupFailed("%v", err)
	}
	return nil
}

// chooseAccelerator picks KVM, or TCG when KVM cannot be used and emulation is allowed.
func (l *Launcher) chooseAccelerator() (string, error) {
	acc, kvmErr, err := accel.Choose(l.cfg.KVMDevice, l.cfg.CPUInfo, l.cfg.AllowEmulation)
	if err != nil {
		return "", setupFailed("%v", err)
	}
	if kvmErr != nil {
		l.log.Info("KVM cannot be used, emulating with TCG", "why", kvmErr)
	}
	_ = l.status.update(func(s *launcherpod.Status) { s.Accelerator = acc })
	return acc, nil
}

// startingLibvirt is libvirtd being started in the background.
type startingLibvirt struct {
	abort      context.CancelFunc
	started    chan libvirtStart
	handedOver bool
}

// libvirtStart is the outcome of libvirtd.Start.
type libvirtStart struct {
	daemons *libvirtd.Daemons
	err     error
}

// startLibvirt starts libvirtd in the background; wait takes it, release stops it unless taken.
func (l *Launcher) startLibvirt(ctx context.Context) *startingLibvirt {
	ctx, abort := context.WithCancel(ctx)
	s := &startingLibvirt{abort: abort, started: make(chan libvirtStart, 1)}
	go func() {
		d, err := libvirtd.Start(ctx, l.cfg.Libvirt, l.reaper, l.log)
		s.started <- libvirtStart{d, libvirtExit(err)}
	}()
	return s
}

// wait waits for libvirtd and hands it over: the caller stops it.
func (s *startingLibvirt) wait() (*libvirtd.Daemons, error) {
	s.handedOver = true
	r := <-s.started
	return r.daemons, r.err
}

// release stops a libvirtd that was not handed over (setup failed before the domain).
func (s *startingLibvirt) release() {
	s.abort()
	if s.handedOver {
		return
	}
	if r := <-s.started; r.err == nil {
		r.daemons.Stop()
	}
}

// libvirtExit is how a failed libvirtd start ends the launcher: its configuration failing is
// a setup failure, the daemon failing is a crash.
func libvirtExit(err error) error {
	if err == nil {
		return nil
	}
	var setup *libvirtd.SetupError
	if errors.As(err, &setup) {
		return setupFailed("%v", err)
	}
	return &Exit{launcherpod.ExitGuestCrashed, err.Error()}
}

// prepareVolumes makes the disks of the VMI's volumes.
func (l *Launcher) prepareVolumes(ctx context.Context) (map[string]domain.DiskSource, error) {
	step := time.Now()
	c := &l.cfg
	prep := &volumes.Preparer{Layout: c.Layout, Runner: l.reaper, QEMUImg: c.QEMUImg, Log: l.log}
	disks, err := prep.Prepare(ctx, l.vmi)
	if err != nil {
		return nil, setupFailed("%v", err)
	}
	l.log.Info("volumes ready", "disks", len(disks), "took", time.Since(step).Round(time.Millisecond))
	return disks, nil
}

// domainXML converts the VMI to the libvirt domain with the prepared devices.
func (l *Launcher) domainXML(ctx context.Context, acc string, disks map[string]domain.DiskSource, nics []NIC) (string, error) {
	c := &l.cfg
	opts := domain.Options{
		Accelerator:      acc,
		Disks:            disks,
		NICs:             nics,
		SerialSocket:     c.SerialSocket,
		VNCSocket:        c.VNCSocket,
		GuestAgentSocket: c.GuestAgentSocket,
		Firmware:         domain.DebianFirmware(c.Layout.EmptyDiskDir),
	}
	if fw := l.vmi.Spec.Domain.Firmware; fw != nil && fw.KernelBoot != nil {
		var err error
		if opts.Kernel, opts.Initrd, err = l.awaitKernelBoot(ctx, fw.KernelBoot); err != nil {
			return "", setupFailed("kernelBoot: %v", err)
		}
	}
	dx, err := domain.Convert(l.vmi, opts)
	if err != nil {
		return "", setupFailed("convert the VMI to a domain: %v", err)
	}
	xml, err := dx.Marshal()
	if err != nil {
		return "", setupFailed("marshal domain XML: %v", err)
	}
	return xml, nil
}

// awaitKernelBoot waits for the kernel and initrd that the pod's kernel-boot-* containers
// copy out of the kernelBoot image, and returns their paths (the initrd's "" when the VMI
// names none).
func (l *Launcher) awaitKernelBoot(ctx context.Context, kb *v1.KernelBoot) (kernel, initrd string, err error) {
	if kb.Container == nil || kb.Container.KernelPath == "" {
		return "", "", errors.New("no kernelPath in the kernelBoot container")
	}
	dir := l.cfg.KernelBootDir
	await := func(name string) (string, error) {
		p, err := diskcopy.Await(ctx, dir, name, []string{name}, func() {
			l.log.Info("waiting for a file out of the kernelBoot image", "file", name)
		})
		if err != nil {
			return "", fmt.Errorf("the %s: %w", name, err)
		}
		return p, nil
	}
	if kernel, err = await(launcherpod.KernelBootKernel); err != nil {
		return "", "", err
	}
	if kb.Container.InitrdPath != "" {
		if initrd, err = await(launcherpod.KernelBootInitrd); err != nil {
			return "", "", err
		}
	}
	return kernel, initrd, nil
}
