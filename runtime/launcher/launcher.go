// Package launcher runs one VMI as one libvirt domain: it is PID 1 of the launcher pod's
// compute container. It prepares the volumes, starts virtlogd and libvirtd as supervised
// children, defines and starts the domain, copies the serial console to stdout, serves the
// control socket, writes the status file, and on SIGTERM shuts the guest down (ACPI power
// button, destroy after the grace period). Its exit code says how the guest ended.
package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/accel"
	"github.com/slimvirt/slimvirt/runtime/diskcopy"
	"github.com/slimvirt/slimvirt/runtime/domain"
	"github.com/slimvirt/slimvirt/runtime/reaper"
	"github.com/slimvirt/slimvirt/runtime/vmifile"
	"github.com/slimvirt/slimvirt/runtime/volumes"
)

// NIC is a tap prepared for one VMI interface.
type NIC = domain.NIC

// Network is the pod network binding as the launcher needs it. Prepare returns the NICs
// (taps made by the CNI plugin, the guest MAC and MTU) before the domain starts; Serve runs
// the guest-facing services (DHCP, ARP) while the guest lives and reports the leased IP.
type Network interface {
	Prepare(ctx context.Context) ([]NIC, error)
	Serve(ctx context.Context, onLease func(ip net.IP)) error
}

// Config is everything the launcher needs.
type Config struct {
	// VMIJSON is the VMI as JSON (env SLIMVIRT_VMI, the launcher run alone); when empty, the
	// VMI is read from VMIFile, which must have the SHA-256 VMISHA256 (package vmifile).
	VMIJSON        string
	VMIFile        string
	VMISHA256      string
	AllowEmulation bool
	// Network is the pod network binding; nil when the VMI has no interfaces.
	Network Network
	// NetworkFor, when Network is nil, makes the binding from the parsed VMI (its interfaces,
	// hostname); main wires cni/vmnet through it.
	NetworkFor func(vmi *v1.VirtualMachineInstance) (Network, error)

	RunDir        string
	StatusFile    string
	SerialSocket  string
	VNCSocket     string
	ControlSocket string
	ConsoleSocket string
	// GuestAgentSocket serves the guest agent channel; empty leaves the channel out.
	GuestAgentSocket string
	ConsoleLog       string
	KernelBootDir    string
	Layout           volumes.Layout
	TerminationLog   string

	KVMDevice, CPUInfo string
	LibvirtConfDir     string
	LibvirtRunDir      string
	// PasswdFile and GroupFile get libvirt's QEMU account when they lack it.
	PasswdFile, GroupFile string
	Libvirtd              string
	// LibvirtDriverDir holds libvirt's driver modules; only the QEMU driver is loaded from it.
	// Empty lets libvirtd load all of them.
	LibvirtDriverDir string
	// Virtlogd is the virtlogd binary; empty (the default) runs without it: QEMU's own
	// stderr log is then written by libvirtd directly (stdio_handler "file") and the serial
	// console log is the launcher's, so virtlogd would only cost memory.
	Virtlogd  string
	QEMUImg   string
	QEMUUser  string
	QEMUGroup string
	// CapsSeedDir holds QEMU capabilities probed once for the node (package capsseed); empty
	// or missing lets libvirtd probe QEMU itself.
	CapsSeedDir string
	// Diskcopy is the containerDisk copier in the launcher image, which SeedNode installs.
	Diskcopy string

	// Stdout receives the guest's console lines.
	Stdout io.Writer
	Log    *slog.Logger
}

// KernelBootDir holds the kernel ("kernel") and initrd ("initrd") of a kernelBoot VMI,
// copied there by the kernel-boot-* containers running slimvirt-diskcopy copy --as from the image.
const KernelBootDir = launcherpod.RunDir + "/kernel-boot"

// DefaultConfig is the launcher pod's configuration.
func DefaultConfig() Config {
	run := launcherpod.RunDir
	return Config{
		RunDir:           run,
		StatusFile:       launcherpod.StatusFile,
		SerialSocket:     launcherpod.SerialSocket,
		VNCSocket:        launcherpod.VNCSocket,
		ControlSocket:    launcherpod.ControlSocket,
		ConsoleSocket:    run + "/console.sock",
		GuestAgentSocket: run + "/guest-agent.sock",
		ConsoleLog:       run + "/console.log",
		KernelBootDir:    KernelBootDir,
		VMIFile:          launcherpod.VMIFile,
		Layout:           volumes.DefaultLayout(),
		TerminationLog:   "/dev/termination-log",
		KVMDevice:        "/dev/kvm",
		CPUInfo:          "/proc/cpuinfo",
		LibvirtConfDir:   "/etc/libvirt",
		LibvirtRunDir:    "/var/run/libvirt",
		PasswdFile:       "/etc/passwd",
		GroupFile:        "/etc/group",
		Libvirtd:         "/usr/sbin/libvirtd",
		LibvirtDriverDir: "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver",
		Virtlogd:         "",
		QEMUImg:          "/usr/bin/qemu-img",
		QEMUUser:         "root",
		QEMUGroup:        "root",
		CapsSeedDir:      launcherpod.CapsSeedDir,
		Diskcopy:         launcherpod.DiskcopyInImage,
		Stdout:           os.Stdout,
	}
}

// Launcher runs one VMI.
type Launcher struct {
	cfg    Config
	vmi    *v1.VirtualMachineInstance
	log    *slog.Logger
	reaper *reaper.Reaper
	status *statusWriter

	mu           sync.Mutex
	shuttingDown bool
	destroyed    string // why the launcher destroyed the domain, if it did
	dom          *libvirt.Domain
	// session is libvirt's unprivileged mode, used when the launcher is not root.
	session     bool
	daemons     []*daemon
	shutdownReq chan struct{}
}

// Exit is how the launcher ends: a code from launcherpod and a one-line reason.
type Exit struct {
	Code   int
	Reason string
}

func (e *Exit) Error() string { return fmt.Sprintf("exit %d: %s", e.Code, e.Reason) }

func setupFailed(format string, a ...any) *Exit {
	return &Exit{launcherpod.ExitSetupFailed, fmt.Sprintf(format, a...)}
}

// New validates cfg and parses the VMI.
func New(cfg Config) (*Launcher, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if filepath.Base(cfg.LibvirtRunDir) != "libvirt" {
		return nil, fmt.Errorf("LibvirtRunDir %s must end in /libvirt (libvirt's session sockets are $XDG_RUNTIME_DIR/libvirt)", cfg.LibvirtRunDir)
	}
	if cfg.VMIJSON == "" && cfg.VMISHA256 != "" {
		raw, err := vmifile.Read(cfg.VMIFile, cfg.VMISHA256)
		if err != nil {
			return nil, err
		}
		cfg.VMIJSON = string(raw)
	}
	if cfg.VMIJSON == "" {
		return nil, fmt.Errorf("no VMI: the pod sets neither %s nor %s", launcherpod.EnvVMISHA256, launcherpod.EnvVMI)
	}
	vmi := &v1.VirtualMachineInstance{}
	if err := json.Unmarshal([]byte(cfg.VMIJSON), vmi); err != nil {
		return nil, fmt.Errorf("parse %s: %w", launcherpod.EnvVMI, err)
	}
	if vmi.Name == "" {
		return nil, fmt.Errorf("the VMI in %s has no name", launcherpod.EnvVMI)
	}
	return &Launcher{
		cfg:     cfg,
		vmi:     vmi,
		log:     cfg.Log.With("vmi", vmi.Namespace+"/"+vmi.Name),
		reaper:  reaper.New(),
		session: os.Geteuid() != 0,
		status:  &statusWriter{path: cfg.StatusFile},
		// Buffered: a control-socket shutdown must not wait for the main loop.
		shutdownReq: make(chan struct{}, 1),
	}, nil
}

// Run runs the VMI until the guest ends and returns the exit code; the reason of a non-zero
// code is in the termination log.
func (l *Launcher) Run(ctx context.Context) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go l.reaper.Loop(ctx)
	// Signals are caught before anything starts, so a SIGTERM during setup is not lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	err := l.run(ctx, sigs)
	var ex *Exit
	if err != nil && !errors.As(err, &ex) {
		ex = &Exit{launcherpod.ExitGuestCrashed, err.Error()}
	}
	if ex == nil {
		ex = &Exit{Code: launcherpod.ExitGuestShutdown}
	}
	if ex.Code != launcherpod.ExitGuestShutdown {
		_ = l.status.phase(PhaseCrashed, ex.Reason)
		l.log.Error("launcher failed", "code", ex.Code, "reason", ex.Reason)
	} else {
		_ = l.status.phase(PhaseShutdown, ex.Reason)
		l.log.Info("guest ended", "reason", ex.Reason)
	}
	if ex.Reason != "" && l.cfg.TerminationLog != "" {
		_ = os.WriteFile(l.cfg.TerminationLog, []byte(oneLine(ex.Reason)), 0o644)
	}
	return ex.Code
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 1024 {
		s = s[:1024]
	}
	return s
}

func (l *Launcher) run(ctx context.Context, sigs <-chan os.Signal) error {
	c := &l.cfg
	for _, dir := range []string{c.RunDir, c.LibvirtRunDir, filepath.Dir(c.StatusFile)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return setupFailed("create %s: %v", dir, err)
		}
	}
	if err := l.status.phase(PhaseStarting, ""); err != nil {
		return setupFailed("%v", err)
	}

	acc, kvmErr, err := accel.Choose(c.KVMDevice, c.CPUInfo, c.AllowEmulation)
	if err != nil {
		return setupFailed("%v", err)
	}
	if kvmErr != nil {
		l.log.Info("KVM cannot be used, emulating with TCG", "why", kvmErr)
	}
	_ = l.status.update(func(s *launcherpod.Status) { s.Accelerator = acc })

	// libvirtd starts while the volumes and the network are prepared: its start (loading the
	// QEMU driver, probing QEMU's capabilities) is the longest step and needs neither.
	libvirtCtx, abortLibvirt := context.WithCancel(ctx)
	defer abortLibvirt()
	started := make(chan libvirtStart, 1)
	go func() {
		conn, stop, err := l.startLibvirt(libvirtCtx)
		started <- libvirtStart{conn, stop, err}
	}()
	handedOver := false
	defer func() {
		if handedOver {
			return
		}
		abortLibvirt()
		if s := <-started; s.err == nil {
			s.conn.Close()
			s.stop()
		}
	}()

	step := time.Now()
	prep := &volumes.Preparer{Layout: c.Layout, Runner: l.reaper, QEMUImg: c.QEMUImg, Log: l.log}
	disks, err := prep.Prepare(ctx, l.vmi)
	if err != nil {
		return setupFailed("%v", err)
	}
	l.log.Info("volumes ready", "disks", len(disks), "took", time.Since(step).Round(time.Millisecond))

	step = time.Now()
	nics, err := l.prepareNetwork(ctx)
	if err != nil {
		return err
	}
	l.log.Info("pod network ready", "nics", len(nics), "took", time.Since(step).Round(time.Millisecond))

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
		if opts.Kernel, opts.Initrd, err = l.awaitKernelBoot(ctx, fw.KernelBoot); err != nil {
			return setupFailed("kernelBoot: %v", err)
		}
	}
	dx, err := domain.Convert(l.vmi, opts)
	if err != nil {
		return setupFailed("convert the VMI to a domain: %v", err)
	}
	xml, err := dx.Marshal()
	if err != nil {
		return setupFailed("marshal domain XML: %v", err)
	}

	lv := <-started
	handedOver = true
	if lv.err != nil {
		return lv.err
	}
	defer lv.stop()
	defer lv.conn.Close()
	return l.runDomain(ctx, lv.conn, xml, nics, sigs)
}

// libvirtStart is the outcome of startLibvirt.
type libvirtStart struct {
	conn *libvirt.Connect
	stop func()
	err  error
}

// Hostname is the guest's hostname: spec.hostname, else the VMI's name.
func Hostname(vmi *v1.VirtualMachineInstance) string {
	if vmi.Spec.Hostname != "" {
		return vmi.Spec.Hostname
	}
	return vmi.Name
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
	if kernel, err = await("kernel"); err != nil {
		return "", "", err
	}
	if kb.Container.InitrdPath != "" {
		if initrd, err = await("initrd"); err != nil {
			return "", "", err
		}
	}
	return kernel, initrd, nil
}

func (l *Launcher) prepareNetwork(ctx context.Context) ([]NIC, error) {
	dev := l.vmi.Spec.Domain.Devices
	wantsNet := len(dev.Interfaces) > 0 || dev.AutoattachPodInterface == nil || *dev.AutoattachPodInterface
	if !wantsNet {
		return nil, nil
	}
	if l.cfg.Network == nil && l.cfg.NetworkFor != nil {
		n, err := l.cfg.NetworkFor(l.vmi)
		if err != nil {
			return nil, setupFailed("set up the pod network binding: %v", err)
		}
		l.cfg.Network = n
	}
	if l.cfg.Network == nil {
		return nil, setupFailed("the VMI has a pod network interface but the launcher has no network binding")
	}
	nics, err := l.cfg.Network.Prepare(ctx)
	if err != nil {
		return nil, setupFailed("prepare the pod network: %v", err)
	}
	specs := map[string]v1.Interface{}
	for _, i := range dev.Interfaces {
		specs[i.Name] = i
	}
	for i := range nics {
		// A binding that does not know the VMI's interface names serves them in order.
		if nics[i].Name == "" {
			nics[i].Name = "default"
			if i < len(dev.Interfaces) {
				nics[i].Name = dev.Interfaces[i].Name
			}
		}
		if s, ok := specs[nics[i].Name]; ok {
			if nics[i].Model == "" {
				nics[i].Model = s.Model
			}
			if s.MacAddress != "" {
				nics[i].MAC = strings.ReplaceAll(strings.ToLower(s.MacAddress), "-", ":")
			}
		}
	}
	if len(nics) > 0 {
		_ = l.status.update(func(s *launcherpod.Status) { s.GuestMAC = nics[0].MAC })
	}
	return nics, nil
}

// startLibvirt writes the configuration, starts virtlogd and libvirtd and connects. The
// returned stop function stops them in reverse order.
func (l *Launcher) startLibvirt(ctx context.Context) (*libvirt.Connect, func(), error) {
	c := &l.cfg
	begin := time.Now()
	if err := l.writeLibvirtConfig(); err != nil {
		return nil, nil, setupFailed("%v", err)
	}
	seeded := l.seedCaps()
	var daemons []*daemon
	stop := func() {
		for i := len(daemons) - 1; i >= 0; i-- {
			daemons[i].stop(5 * time.Second)
		}
	}
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if c.Virtlogd != "" {
		d, err := l.startDaemon("virtlogd", c.Virtlogd, "--config", filepath.Join(l.confDir(), "virtlogd.conf"))
		if err != nil {
			return nil, nil, &Exit{launcherpod.ExitGuestCrashed, err.Error()}
		}
		daemons = append(daemons, d)
		if err := waitSocket(startCtx, d, filepath.Join(c.LibvirtRunDir, "virtlogd-sock")); err != nil {
			stop()
			return nil, nil, &Exit{launcherpod.ExitGuestCrashed, err.Error()}
		}
	}
	d, err := l.startDaemon("libvirtd", c.Libvirtd, "--config", filepath.Join(l.confDir(), "libvirtd.conf"))
	if err != nil {
		stop()
		return nil, nil, &Exit{launcherpod.ExitGuestCrashed, err.Error()}
	}
	daemons = append(daemons, d)
	sock := filepath.Join(c.LibvirtRunDir, "libvirt-sock")
	if err := waitSocket(startCtx, d, sock); err != nil {
		stop()
		return nil, nil, &Exit{launcherpod.ExitGuestCrashed, err.Error()}
	}
	l.daemons = daemons
	if err := libvirt.EventRegisterDefaultImpl(); err != nil {
		stop()
		return nil, nil, setupFailed("register libvirt event loop: %v", err)
	}
	go func() {
		for {
			if err := libvirt.EventRunDefaultImpl(); err != nil {
				l.log.Error("libvirt event loop", "err", err)
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	uri := "qemu:///system?socket=" + sock
	if l.session {
		uri = "qemu:///session?socket=" + sock
	}
	var conn *libvirt.Connect
	for {
		conn, err = libvirt.NewConnect(uri)
		if err == nil {
			break
		}
		select {
		case <-startCtx.Done():
			stop()
			return nil, nil, &Exit{launcherpod.ExitGuestCrashed, fmt.Sprintf("connect to libvirtd: %v", err)}
		case <-time.After(50 * time.Millisecond):
		}
	}
	// libvirtd learns what QEMU supports on first need: asking now does it while the volumes
	// and the network are prepared, not when the domain is defined.
	if _, err := conn.GetCapabilities(); err != nil {
		l.log.Warn("read libvirt's capabilities", "err", err)
	}
	l.reportSeed(seeded, time.Since(begin))
	return conn, stop, nil
}
