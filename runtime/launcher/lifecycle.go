package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/runtime/console"
	"github.com/slimvirt/slimvirt/runtime/control"
	"github.com/slimvirt/slimvirt/runtime/domain"
)

// DefaultGracePeriod is the guest's time to power off after the ACPI power button.
const DefaultGracePeriod = 30 * time.Second

func (l *Launcher) gracePeriod() time.Duration {
	if g := l.vmi.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return DefaultGracePeriod
}

// runDomain starts the domain and follows it until it stops.
func (l *Launcher) runDomain(ctx context.Context, conn *libvirt.Connect, xml string, nics []NIC, sigs <-chan os.Signal) error {
	c := &l.cfg
	events := make(chan libvirt.DomainEventLifecycle, 64)
	cb, err := conn.DomainEventLifecycleRegister(nil, func(_ *libvirt.Connect, _ *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
		select {
		case events <- *ev:
		default: // never block libvirt's event loop; the state is re-read on STOPPED anyway
		}
	})
	if err != nil {
		return setupFailed("watch domain events: %v", err)
	}
	defer func() { _ = conn.DomainEventDeregister(cb) }()
	lost := make(chan string, 1)
	_ = conn.RegisterCloseCallback(func(_ *libvirt.Connect, reason libvirt.ConnectCloseReason) {
		select {
		case lost <- fmt.Sprintf("lost the connection to libvirtd (reason %d)", reason):
		default:
		}
	})
	died := make(chan string, len(l.daemons))
	for _, d := range l.daemons {
		go func() {
			err := <-d.done
			d.done <- err
			died <- fmt.Sprintf("%s exited: %v", d.name, err)
		}()
	}

	// A pod deleted while the launcher was still setting up has no guest to shut down.
	select {
	case s := <-sigs:
		return &Exit{launcherpod.ExitGuestShutdown, "received " + s.String() + " before the guest started"}
	default:
	}
	// Started paused so that the console is attached before the guest prints anything, and
	// autodestroyed so that QEMU never outlives the launcher's connection.
	step := time.Now()
	dom, err := conn.DomainCreateXML(xml, libvirt.DOMAIN_START_PAUSED|libvirt.DOMAIN_START_AUTODESTROY)
	if err != nil {
		return setupFailed("start the domain: %v", err)
	}
	l.log.Info("QEMU started", "took", time.Since(step).Round(time.Millisecond))
	defer dom.Free()
	l.mu.Lock()
	l.dom = dom
	l.mu.Unlock()

	runCtx, stopServices := context.WithCancel(ctx)
	defer stopServices()
	consoleDone := make(chan struct{})
	if dev := l.vmi.Spec.Domain.Devices; dev.AutoattachSerialConsole == nil || *dev.AutoattachSerialConsole {
		mux := &console.Mux{QEMUSocket: c.SerialSocket, ClientSocket: c.ConsoleSocket, LogFile: c.ConsoleLog, Lines: c.Stdout, Log: l.log}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := mux.Connect(cctx)
		cancel()
		if err != nil {
			_ = dom.Destroy()
			return setupFailed("%v", err)
		}
		go func() {
			defer close(consoleDone)
			if err := mux.Serve(runCtx); err != nil {
				l.log.Error("serial console", "err", err)
			}
		}()
	} else {
		close(consoleDone)
	}
	if c.GuestAgentSocket != "" {
		unwatch, err := l.watchAgent(runCtx, conn, dom)
		if err != nil {
			_ = dom.Destroy()
			return setupFailed("%v", err)
		}
		defer unwatch()
	}
	ln, err := control.Listen(c.ControlSocket)
	if err != nil {
		_ = dom.Destroy()
		return setupFailed("%v", err)
	}
	go control.Serve(runCtx, ln, l.handle)
	netFailed := make(chan error, 1)
	if c.Network != nil && len(nics) > 0 {
		go func() {
			err := c.Network.Serve(runCtx, func(ip net.IP) {
				l.log.Info("guest took a DHCP lease", "ip", ip)
				_ = l.status.update(func(s *launcherpod.Status) { s.GuestIP = ip.String() })
			})
			if err != nil && runCtx.Err() == nil {
				netFailed <- err
			}
		}()
	}
	if err := dom.Resume(); err != nil {
		_ = dom.Destroy()
		return setupFailed("resume the domain: %v", err)
	}
	_ = l.status.phase(PhaseRunning, "")
	l.log.Info("domain running", "domain", domain.Name(l.vmi))

	var grace <-chan time.Time
	shutdown := func(why string) {
		if grace != nil {
			return
		}
		l.log.Info("shutting the guest down", "why", why, "grace", l.gracePeriod())
		l.mu.Lock()
		l.shuttingDown = true
		l.mu.Unlock()
		_ = l.status.phase(PhaseShuttingDown, why)
		grace = time.After(l.gracePeriod())
		if st, _, err := dom.GetState(); err == nil && st == libvirt.DOMAIN_PAUSED {
			_ = dom.Resume()
		}
		if l.gracePeriod() > 0 {
			if err := dom.ShutdownFlags(libvirt.DOMAIN_SHUTDOWN_ACPI_POWER_BTN); err != nil {
				l.log.Error("ACPI power button", "err", err)
				grace = time.After(0)
			}
		}
	}
	for {
		select {
		case ev := <-events:
			if exit := l.onEvent(ev); exit != nil {
				stopServicesAfterConsole(consoleDone, stopServices)
				return exit
			}
		case s := <-sigs:
			shutdown("received " + s.String())
		case <-l.shutdownReq:
			shutdown("shutdown requested on the control socket")
		case <-grace:
			l.mu.Lock()
			l.destroyed = fmt.Sprintf("the guest did not power off within the grace period of %s and was destroyed", l.gracePeriod())
			l.mu.Unlock()
			l.log.Info("grace period over, destroying the domain")
			if err := dom.Destroy(); err != nil {
				return &Exit{launcherpod.ExitGuestCrashed, fmt.Sprintf("destroy the domain: %v", err)}
			}
			grace = nil
		case why := <-lost:
			return &Exit{launcherpod.ExitGuestCrashed, why}
		case why := <-died:
			_ = dom.Destroy()
			return &Exit{launcherpod.ExitGuestCrashed, why}
		case err := <-netFailed:
			_ = dom.Destroy()
			return &Exit{launcherpod.ExitGuestCrashed, fmt.Sprintf("pod network service failed: %v", err)}
		}
	}
}

// stopServicesAfterConsole lets the console copy the guest's last lines before the services stop.
func stopServicesAfterConsole(consoleDone <-chan struct{}, stop func()) {
	select {
	case <-consoleDone:
	case <-time.After(3 * time.Second):
	}
	stop()
}

// pausedNow says whether the domain is paused, and on a disk I/O error. Events come in bursts
// (starting QEMU gives started, suspended and resumed at once), so the domain's state when
// the event is handled is asked first, lest a running guest is reported paused for a moment;
// the event says it when the domain cannot be asked.
func (l *Launcher) pausedNow(ev libvirt.DomainEventLifecycle) (paused, ioError bool) {
	l.mu.Lock()
	dom := l.dom
	l.mu.Unlock()
	if dom != nil {
		if state, reason, err := dom.GetState(); err == nil {
			return state == libvirt.DOMAIN_PAUSED, state == libvirt.DOMAIN_PAUSED && libvirt.DomainPausedReason(reason) == libvirt.DOMAIN_PAUSED_IOERROR
		}
	}
	return ev.Event == libvirt.DOMAIN_EVENT_SUSPENDED,
		ev.Event == libvirt.DOMAIN_EVENT_SUSPENDED && libvirt.DomainEventSuspendedDetailType(ev.Detail) == libvirt.DOMAIN_EVENT_SUSPENDED_IOERROR
}

// onEvent updates the status from a lifecycle event and returns the exit once the domain stopped.
func (l *Launcher) onEvent(ev libvirt.DomainEventLifecycle) *Exit {
	l.mu.Lock()
	shuttingDown, destroyed := l.shuttingDown, l.destroyed
	l.mu.Unlock()
	l.log.Info("domain event", "event", ev.String())
	switch ev.Event {
	case libvirt.DOMAIN_EVENT_STARTED, libvirt.DOMAIN_EVENT_RESUMED, libvirt.DOMAIN_EVENT_SUSPENDED:
		paused, ioError := l.pausedNow(ev)
		switch {
		case paused && ioError:
			_ = l.status.phase(PhasePaused, "paused on a disk I/O error")
		case paused:
			_ = l.status.phase(PhasePaused, "")
		case shuttingDown:
			_ = l.status.phase(PhaseShuttingDown, "")
		default:
			_ = l.status.phase(PhaseRunning, "")
		}
	case libvirt.DOMAIN_EVENT_SHUTDOWN:
		_ = l.status.phase(PhaseShuttingDown, "the guest is powering off")
	case libvirt.DOMAIN_EVENT_STOPPED:
		switch libvirt.DomainEventStoppedDetailType(ev.Detail) {
		case libvirt.DOMAIN_EVENT_STOPPED_SHUTDOWN:
			return &Exit{launcherpod.ExitGuestShutdown, "the guest powered off"}
		case libvirt.DOMAIN_EVENT_STOPPED_DESTROYED:
			if destroyed != "" {
				return &Exit{launcherpod.ExitGuestShutdown, destroyed}
			}
			return &Exit{launcherpod.ExitGuestCrashed, "the domain was destroyed outside the launcher"}
		case libvirt.DOMAIN_EVENT_STOPPED_CRASHED:
			return &Exit{launcherpod.ExitGuestCrashed, "the guest crashed"}
		default:
			return &Exit{launcherpod.ExitGuestCrashed, "QEMU stopped unexpectedly: " + l.qemuLogTail()}
		}
	}
	return nil
}

// qemuLogTail is the end of QEMU's own log, which says why it died.
func (l *Launcher) qemuLogTail() string {
	log := filepath.Join("/var/log/libvirt/qemu", domain.Name(l.vmi)+".log")
	if l.session {
		log = filepath.Join(l.cfg.LibvirtRunDir, "cache", "libvirt", "qemu", "log", domain.Name(l.vmi)+".log")
	}
	b, err := os.ReadFile(log)
	if err != nil {
		return "(no QEMU log)"
	}
	return qemuLogSummary(string(b))
}

// qemuLogSummary keeps what QEMU and libvirt said after the last start of QEMU, without the
// command line libvirt logs first and without timestamps: the last three lines, so a VMI's
// reason reads "qemu-system-x86_64: ...: Permission denied; shutting down, reason=failed".
func qemuLogSummary(log string) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	start := 0
	for i, l := range lines {
		if strings.HasSuffix(l, "\\") {
			start = i + 2 // the command's last line has no backslash
		}
	}
	var said []string
	for _, l := range lines[min(start, len(lines)):] {
		l = strings.TrimSpace(l)
		if ts, rest, ok := strings.Cut(l, ": "); ok && len(ts) >= 19 && ts[4] == '-' && ts[10] == ' ' {
			l = rest // "2026-11-27 17:09:53.835+0000: shutting down"
		}
		if l != "" {
			said = append(said, l)
		}
	}
	if len(said) == 0 {
		return "(QEMU said nothing)"
	}
	out := strings.Join(said[max(0, len(said)-3):], "; ")
	if len(out) > 400 {
		out = out[len(out)-400:]
	}
	return out
}

// handle runs a control-socket command.
func (l *Launcher) handle(_ context.Context, cmd string) (string, error) {
	l.mu.Lock()
	dom := l.dom
	l.mu.Unlock()
	if cmd == control.Status {
		b, err := json.Marshal(l.status.get())
		return string(b), err
	}
	if dom == nil {
		return "", errors.New("the domain is not running")
	}
	switch cmd {
	case control.Pause:
		return "", dom.Suspend()
	case control.Unpause:
		return "", dom.Resume()
	case control.Reboot:
		return "", dom.Reboot(libvirt.DOMAIN_REBOOT_ACPI_POWER_BTN)
	case control.Reset:
		return "", dom.Reset(0)
	case control.Shutdown:
		select {
		case l.shutdownReq <- struct{}{}:
		default:
		}
		return "", nil
	case control.GuestInfo:
		info, err := l.guestInfoReply(dom)
		if err != nil {
			return "", err
		}
		b, err := json.Marshal(info)
		return string(b), err
	case control.Stats:
		st, err := l.stats()
		if err != nil {
			return "", err
		}
		b, err := json.Marshal(st)
		return string(b), err
	}
	return "", fmt.Errorf("unknown command %q", cmd)
}
