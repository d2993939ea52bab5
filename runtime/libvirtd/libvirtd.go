// Package libvirtd runs a pod's own libvirtd (and, when asked, virtlogd) as supervised children,
// configured for a container, seeds its cache of QEMU's capabilities from the node, and connects
// to it. The launcher runs one per VMI; the node seed runs one to probe QEMU for the node.
package libvirtd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/runtime/capsseed"
)

// Config is where libvirt's files go and which binaries run.
type Config struct {
	// RunDir holds the sockets (it must end in /libvirt: libvirt's session sockets are
	// $XDG_RUNTIME_DIR/libvirt) and, in session mode, all of libvirt's files.
	RunDir string
	// ConfDir is where the system daemon reads its configuration.
	ConfDir string
	// PasswdFile and GroupFile get libvirt's QEMU account when they lack it.
	PasswdFile, GroupFile string
	Libvirtd              string
	// DriverDir holds libvirt's driver modules; only the QEMU driver is loaded from it. Empty
	// lets libvirtd load all of them.
	DriverDir string
	// Virtlogd is the virtlogd binary; empty runs without it: QEMU's own stderr log is then
	// written by libvirtd directly (stdio_handler "file") and the serial console log is the
	// launcher's, so virtlogd would only cost memory.
	Virtlogd  string
	QEMUUser  string
	QEMUGroup string
	// CapsSeedDir holds QEMU capabilities probed once for the node (package capsseed); empty
	// or missing lets libvirtd probe QEMU itself.
	CapsSeedDir string
	// HostUUID is the host UUID this libvirtd reports; empty keeps the machine's. libvirt
	// refuses to migrate a domain between two daemons of the same UUID ("the same host"), which
	// two launcher pods on one node are not: a pod that may migrate gets its own.
	HostUUID string
}

// Session says whether libvirt runs in its unprivileged mode: it does when this process is not root.
func Session() bool { return os.Geteuid() != 0 }

// Runner starts and waits for the daemons; the launcher's reaper, which as PID 1 reaps all children.
type Runner interface {
	Start(cmd *exec.Cmd) error
	Wait(cmd *exec.Cmd) error
}

// SetupError is a failure to set libvirt up (its configuration, the event loop), as opposed
// to a daemon that failed to run.
type SetupError struct{ Err error }

func (e *SetupError) Error() string { return e.Err.Error() }
func (e *SetupError) Unwrap() error { return e.Err }

// Daemons are the running libvirtd and virtlogd and the connection to libvirtd.
type Daemons struct {
	// Conn is the connection to libvirtd.
	Conn *libvirt.Connect

	cfg      Config
	session  bool
	reaper   Runner
	log      *slog.Logger
	children []*daemon
	diedOnce sync.Once
	died     chan string
}

// Start writes the configuration, seeds the capabilities cache, starts virtlogd and libvirtd
// and connects. Stop ends them.
func Start(ctx context.Context, cfg Config, reaper Runner, log *slog.Logger) (*Daemons, error) {
	d := &Daemons{cfg: cfg, session: Session(), reaper: reaper, log: log}
	begin := time.Now()
	if err := d.writeConfig(); err != nil {
		return nil, &SetupError{err}
	}
	seeded := d.seedCaps()
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := d.startChildren(startCtx); err != nil {
		d.stopChildren()
		return nil, err
	}
	if err := d.runEventLoop(); err != nil {
		d.stopChildren()
		return nil, err
	}
	if err := d.connect(startCtx); err != nil {
		d.stopChildren()
		return nil, err
	}
	// libvirtd learns what QEMU supports on first need: asking now does it while the volumes
	// and the network are prepared, not when the domain is defined.
	if _, err := d.Conn.GetCapabilities(); err != nil {
		d.log.Warn("read libvirt's capabilities", "err", err)
	}
	d.reportSeed(seeded, time.Since(begin))
	return d, nil
}

// Stop closes the connection and stops the daemons in reverse order.
func (d *Daemons) Stop() {
	if d.Conn != nil {
		_, _ = d.Conn.Close()
	}
	d.stopChildren()
}

// Died reports a daemon that exited.
func (d *Daemons) Died() <-chan string {
	d.diedOnce.Do(func() {
		d.died = make(chan string, len(d.children))
		for _, c := range d.children {
			go func() {
				err := <-c.done
				c.done <- err
				d.died <- fmt.Sprintf("%s exited: %v", c.name, err)
			}()
		}
	})
	return d.died
}

func (d *Daemons) stopChildren() {
	for i := len(d.children) - 1; i >= 0; i-- {
		// The daemons are asked to stop: how they end is no news.
		_ = d.children[i].stop(5 * time.Second)
	}
}

// startChildren starts virtlogd when configured, then libvirtd, each once its socket is there.
func (d *Daemons) startChildren(ctx context.Context) error {
	if d.cfg.Virtlogd != "" {
		if err := d.startChild(ctx, "virtlogd", d.cfg.Virtlogd, "virtlogd-sock"); err != nil {
			return err
		}
	}
	return d.startChild(ctx, "libvirtd", d.cfg.Libvirtd, "libvirt-sock")
}

func (d *Daemons) startChild(ctx context.Context, name, binary, socket string) error {
	c, err := d.startDaemon(name, binary, "--config", filepath.Join(d.confDir(), name+".conf"))
	if err != nil {
		return err
	}
	d.children = append(d.children, c)
	return waitSocket(ctx, c, filepath.Join(d.cfg.RunDir, socket))
}

// runEventLoop runs libvirt's default event loop, which delivers the domain events, for the
// rest of the process.
func (d *Daemons) runEventLoop() error {
	if err := libvirt.EventRegisterDefaultImpl(); err != nil {
		return &SetupError{fmt.Errorf("register libvirt event loop: %w", err)}
	}
	go func() {
		for {
			if err := libvirt.EventRunDefaultImpl(); err != nil {
				d.log.Error("libvirt event loop", "err", err)
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	return nil
}

// connect connects to libvirtd, which may take a moment to accept after its socket appears.
func (d *Daemons) connect(ctx context.Context) error {
	sock := filepath.Join(d.cfg.RunDir, "libvirt-sock")
	uri := "qemu:///system?socket=" + sock
	if d.session {
		uri = "qemu:///session?socket=" + sock
	}
	for {
		conn, err := libvirt.NewConnect(uri)
		if err == nil {
			d.Conn = conn
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect to libvirtd: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// CapsCacheDir is where this libvirtd keeps its QEMU capabilities.
func (d *Daemons) CapsCacheDir() string {
	if d.session {
		return capsseed.SessionCacheDir(filepath.Join(d.cfg.RunDir, "cache"))
	}
	return capsseed.SystemCacheDir
}

// QEMULog is the file where libvirtd writes the QEMU log of the domain called name.
func (c Config) QEMULog(name string, session bool) string {
	if session {
		return filepath.Join(c.RunDir, "cache", "libvirt", "qemu", "log", name+".log")
	}
	return filepath.Join("/var/log/libvirt/qemu", name+".log")
}

// seedCaps puts the node's probed QEMU capabilities where libvirtd will look for them.
func (d *Daemons) seedCaps() []capsseed.Seeded {
	if d.cfg.CapsSeedDir == "" {
		return nil
	}
	seeded, err := capsseed.Install(d.cfg.CapsSeedDir, d.CapsCacheDir())
	if err != nil {
		d.log.Warn("the node's QEMU capabilities cannot be used; libvirtd probes QEMU itself", "err", err)
	}
	return seeded
}

// reportSeed says whether libvirtd used the seeded capabilities or probed QEMU again.
func (d *Daemons) reportSeed(seeded []capsseed.Seeded, took time.Duration) {
	if len(seeded) == 0 {
		d.log.Info("libvirt ready; QEMU probed (no capabilities seeded on this node)", "took", took.Round(time.Millisecond))
		return
	}
	for _, s := range seeded {
		if !s.Kept() {
			d.log.Info("libvirt ready; QEMU probed again: the node's capabilities did not match this QEMU and libvirt", "took", took.Round(time.Millisecond), "seed", filepath.Base(s.Path))
			return
		}
	}
	d.log.Info("libvirt ready; QEMU capabilities from the node's seed", "took", took.Round(time.Millisecond))
}
