// Package launcher runs one VMI as one libvirt domain: it is PID 1 of the launcher pod's
// compute container. It prepares the volumes, starts libvirtd (package libvirtd) as a
// supervised child, defines and starts the domain, copies the serial console to stdout, serves
// the control socket, writes the status file, and on SIGTERM shuts the guest down (ACPI power
// button, destroy after the grace period). Its exit code says how the guest ended.
package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/diskresize"
	"github.com/slimvirt/slimvirt/runtime/libvirtd"
	"github.com/slimvirt/slimvirt/runtime/reaper"
	"github.com/slimvirt/slimvirt/runtime/volumes"
)

// Config is everything the launcher needs besides its VMI.
type Config struct {
	AllowEmulation bool
	// Network is the guest's NIC binding; nil uses the one the CNI plugin made in the pod
	// (package podnic) when the VMI wants the pod network.
	Network Network

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
	// Libvirt is how the pod's libvirtd runs.
	Libvirt libvirtd.Config
	QEMUImg string
	// Diskcopy is the containerDisk copier in the launcher image, which seed-node installs.
	Diskcopy string

	// Stdout receives the guest's console lines.
	Stdout io.Writer
	Log    *slog.Logger
}

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
		KernelBootDir:    launcherpod.KernelBootDir,
		Layout:           volumes.DefaultLayout(),
		TerminationLog:   "/dev/termination-log",
		KVMDevice:        "/dev/kvm",
		CPUInfo:          "/proc/cpuinfo",
		Libvirt: libvirtd.Config{
			RunDir:     launcherpod.LibvirtRunDir,
			ConfDir:    "/etc/libvirt",
			PasswdFile: "/etc/passwd",
			GroupFile:  "/etc/group",
			Libvirtd:   "/usr/sbin/libvirtd",
			DriverDir:  "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver",
			Virtlogd:   "",
			QEMUUser:   "root",
			QEMUGroup:  "root",
			// Probed once per node: package nodeseed.
			CapsSeedDir: launcherpod.CapsSeedDir,
		},
		QEMUImg:  "/usr/bin/qemu-img",
		Diskcopy: launcherpod.DiskcopyInImage,
		Stdout:   os.Stdout,
	}
}

// Launcher runs one VMI.
type Launcher struct {
	cfg    Config
	vmi    *v1.VirtualMachineInstance
	log    *slog.Logger
	reaper *reaper.Reaper
	status *statusWriter
	// after is the clock of the grace period.
	after func(time.Duration) <-chan time.Time
	// network is the guest's NIC binding, chosen when the network is prepared.
	network Network

	mu           sync.Mutex
	shuttingDown bool
	destroyed    string // why the launcher destroyed the domain, if it did
	dom          guestDomain
	// session is libvirt's unprivileged mode, used when the launcher is not root.
	session     bool
	shutdownReq chan struct{}
	// thaw thaws the guest when its unfreeze timeout passes; nil while not frozen.
	thaw *time.Timer
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

// New validates cfg and makes the launcher of vmi (see ReadVMI).
func New(cfg Config, vmi *v1.VirtualMachineInstance) (*Launcher, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if filepath.Base(cfg.Libvirt.RunDir) != "libvirt" {
		return nil, fmt.Errorf("the libvirt run directory %s must end in /libvirt (libvirt's session sockets are $XDG_RUNTIME_DIR/libvirt)", cfg.Libvirt.RunDir)
	}
	if vmi == nil || vmi.Name == "" {
		return nil, errors.New("the VMI has no name")
	}
	return &Launcher{
		cfg:     cfg,
		vmi:     vmi,
		log:     cfg.Log.With("vmi", vmi.Namespace+"/"+vmi.Name),
		reaper:  reaper.New(),
		session: libvirtd.Session(),
		status:  &statusWriter{path: cfg.StatusFile},
		after:   time.After,
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

	ex := exitOf(l.run(ctx, sigs))
	if ex.Code != launcherpod.ExitGuestShutdown {
		_ = l.status.phase(launcherpod.PhaseCrashed, ex.Reason)
		l.log.Error("launcher failed", "code", ex.Code, "reason", ex.Reason)
	} else {
		_ = l.status.phase(launcherpod.PhaseShutdown, ex.Reason)
		l.log.Info("guest ended", "reason", ex.Reason)
	}
	if ex.Reason != "" && l.cfg.TerminationLog != "" {
		_ = os.WriteFile(l.cfg.TerminationLog, []byte(oneLine(ex.Reason)), 0o644)
	}
	return ex.Code
}

// exitOf is the exit of run's outcome: an error that is no Exit is a crash.
func exitOf(err error) *Exit {
	var ex *Exit
	if err != nil && !errors.As(err, &ex) {
		ex = &Exit{launcherpod.ExitGuestCrashed, err.Error()}
	}
	if ex == nil {
		ex = &Exit{Code: launcherpod.ExitGuestShutdown}
	}
	return ex
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 1024 {
		s = s[:1024]
	}
	return s
}

// run sets the VM up and runs its domain: the steps are in setup.go, the domain's life in
// lifecycle.go.
func (l *Launcher) run(ctx context.Context, sigs <-chan os.Signal) error {
	if err := l.makeDirs(); err != nil {
		return err
	}
	acc, err := l.chooseAccelerator()
	if err != nil {
		return err
	}
	// libvirtd starts while the volumes and the network are prepared: its start (loading the
	// QEMU driver, probing QEMU's capabilities) is the longest step and needs neither.
	lv := l.startLibvirt(ctx)
	defer lv.release()
	disks, err := l.prepareVolumes(ctx)
	if err != nil {
		return err
	}
	nics, err := l.prepareNetwork(ctx)
	if err != nil {
		return err
	}
	xml, err := l.domainXML(ctx, acc, disks, nics)
	if err != nil {
		return err
	}
	d, err := lv.wait()
	if err != nil {
		return err
	}
	defer d.Stop()
	return l.runDomain(ctx, libvirtConn{d.Conn}, d.Died(), plan{xml: xml, nics: nics, disks: diskresize.Disks(l.vmi, disks)}, sigs)
}
