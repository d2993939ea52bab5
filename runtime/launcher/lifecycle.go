package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/runtime/console"
	"github.com/slimvirt/slimvirt/runtime/control"
	"github.com/slimvirt/slimvirt/runtime/diskresize"
	"github.com/slimvirt/slimvirt/runtime/domain"
)

// defaultGracePeriod is the guest's time to power off after the ACPI power button.
const defaultGracePeriod = 30 * time.Second

func (l *Launcher) gracePeriod() time.Duration {
	if g := l.vmi.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return defaultGracePeriod
}

// plan is the domain to run: its XML and the NICs its interfaces use.
type plan struct {
	xml  string
	nics []NIC
	// disks are the ones whose growth the guest is told of while it runs.
	disks []diskresize.Disk
}

// watch is what ends or changes the domain besides the launcher: its lifecycle events and the
// loss of libvirtd.
type watch struct {
	events chan libvirt.DomainEventLifecycle
	lost   chan string
	// died reports a libvirt daemon that exited.
	died    <-chan string
	unwatch func()
}

// services are what runs beside the guest: the serial console, the guest agent's watch, the
// control socket and the network's services.
type services struct {
	consoleDone  chan struct{}
	netFailed    chan error
	unwatchAgent func()
}

// runDomain starts the domain and follows it until it stops.
func (l *Launcher) runDomain(ctx context.Context, hv hypervisor, died <-chan string, p plan, sigs <-chan os.Signal) error {
	w := &watch{events: make(chan libvirt.DomainEventLifecycle, 64), lost: make(chan string, 1), died: died}
	unwatch, err := hv.Watch(w.events, w.lost)
	if err != nil {
		return setupFailed("watch domain events: %v", err)
	}
	defer unwatch()
	// A pod deleted while the launcher was still setting up has no guest to shut down.
	select {
	case s := <-sigs:
		return &Exit{launcherpod.ExitGuestShutdown, "received " + s.String() + " before the guest started"}
	default:
	}
	dom, err := l.startDomain(hv, p.xml)
	if err != nil {
		return err
	}
	defer dom.Free()
	runCtx, stopServices := context.WithCancel(ctx)
	defer stopServices()
	svc, err := l.startServices(ctx, runCtx, dom, p.nics)
	if err != nil {
		_ = dom.Destroy()
		return err
	}
	defer svc.unwatchAgent()
	// The watch takes each disk's size as the guest's before the guest runs.
	go func() {
		if err := diskresize.Watch(runCtx, dom, p.disks, diskresize.Options{Log: l.log, OnResize: l.diskGrew}); err != nil {
			l.log.Warn("disks will not grow online", "err", err)
		}
	}()
	if err := dom.Resume(); err != nil {
		_ = dom.Destroy()
		return setupFailed("resume the domain: %v", err)
	}
	if err := l.status.running(p.xml); err != nil {
		l.log.Warn("report the disks' device names", "err", err)
	}
	l.log.Info("domain running", "domain", domain.Name(l.vmi))
	return l.follow(dom, w, svc, sigs, stopServices)
}

// startDomain starts the domain paused, so that the console is attached before the guest
// prints anything.
func (l *Launcher) startDomain(hv hypervisor, xml string) (guestDomain, error) {
	step := time.Now()
	dom, err := hv.StartPaused(xml)
	if err != nil {
		return nil, setupFailed("start the domain: %v", err)
	}
	l.log.Info("QEMU started", "took", time.Since(step).Round(time.Millisecond))
	l.mu.Lock()
	l.dom = dom
	l.mu.Unlock()
	return dom, nil
}

// startServices starts what runs beside the guest until runCtx ends; ctx bounds the console's
// connection to QEMU.
func (l *Launcher) startServices(ctx, runCtx context.Context, dom guestDomain, nics []NIC) (*services, error) {
	c := &l.cfg
	svc := &services{consoleDone: make(chan struct{}), netFailed: make(chan error, 1), unwatchAgent: func() {}}
	if err := l.startConsole(ctx, runCtx, svc.consoleDone); err != nil {
		return nil, err
	}
	if c.GuestAgentSocket != "" {
		unwatch, err := l.watchAgent(runCtx, dom)
		if err != nil {
			return nil, setupFailed("%v", err)
		}
		svc.unwatchAgent = unwatch
	}
	ln, err := control.Listen(c.ControlSocket)
	if err != nil {
		svc.unwatchAgent()
		return nil, setupFailed("%v", err)
	}
	go control.Serve(runCtx, ln, l.handle)
	if l.network != nil && len(nics) > 0 {
		go l.serveNetwork(runCtx, svc.netFailed)
	}
	return svc, nil
}

// startConsole copies the serial console to the log, stdout and console clients, unless the
// VMI has no serial console; done is closed when the copy ends.
func (l *Launcher) startConsole(ctx, runCtx context.Context, done chan struct{}) error {
	c := &l.cfg
	if dev := l.vmi.Spec.Domain.Devices; dev.AutoattachSerialConsole != nil && !*dev.AutoattachSerialConsole {
		close(done)
		return nil
	}
	mux := &console.Mux{QEMUSocket: c.SerialSocket, ClientSocket: c.ConsoleSocket, LogFile: c.ConsoleLog, Lines: c.Stdout, Log: l.log}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := mux.Connect(cctx)
	cancel()
	if err != nil {
		return setupFailed("%v", err)
	}
	go func() {
		defer close(done)
		if err := mux.Serve(runCtx); err != nil {
			l.log.Error("serial console", "err", err)
		}
	}()
	return nil
}

// serveNetwork runs the network's services and records the guest's lease.
func (l *Launcher) serveNetwork(ctx context.Context, failed chan<- error) {
	err := l.network.Serve(ctx, func(ip net.IP) {
		l.log.Info("guest took a DHCP lease", "ip", ip)
		_ = l.status.update(func(s *launcherpod.Status) { s.GuestIP = ip.String() })
	})
	if err != nil && ctx.Err() == nil {
		failed <- err
	}
}

// follow runs the domain's life: it shuts the guest down on a signal or a control-socket
// request, destroys it when the grace period is over, and ends when it stops or the launcher
// cannot follow it any more.
func (l *Launcher) follow(dom guestDomain, w *watch, svc *services, sigs <-chan os.Signal, stopServices func()) error {
	var grace <-chan time.Time
	for {
		select {
		case ev := <-w.events:
			if exit := l.onEvent(ev); exit != nil {
				stopServicesAfterConsole(svc.consoleDone, stopServices)
				return exit
			}
		case s := <-sigs:
			if grace == nil {
				grace = l.shutdown(dom, "received "+s.String())
			}
		case <-l.shutdownReq:
			if grace == nil {
				grace = l.shutdown(dom, "shutdown requested on the control socket")
			}
		case <-grace:
			if err := l.destroyAfterGrace(dom); err != nil {
				return err
			}
			grace = nil
		case why := <-w.lost:
			return &Exit{launcherpod.ExitGuestCrashed, why}
		case why := <-w.died:
			_ = dom.Destroy()
			return &Exit{launcherpod.ExitGuestCrashed, why}
		case err := <-svc.netFailed:
			_ = dom.Destroy()
			return &Exit{launcherpod.ExitGuestCrashed, fmt.Sprintf("pod network service failed: %v", err)}
		}
	}
}

// shutdown presses the guest's power button (a paused guest is resumed first, or it could not
// react) and returns when its grace period is over: at once when there is none or the button
// cannot be pressed.
func (l *Launcher) shutdown(dom guestDomain, why string) <-chan time.Time {
	grace := l.gracePeriod()
	l.log.Info("shutting the guest down", "why", why, "grace", grace)
	l.mu.Lock()
	l.shuttingDown = true
	l.mu.Unlock()
	_ = l.status.phase(launcherpod.PhaseShuttingDown, why)
	over := l.after(grace)
	if st, _, err := dom.State(); err == nil && st == libvirt.DOMAIN_PAUSED {
		_ = dom.Resume()
	}
	if grace > 0 {
		if err := dom.PowerButton(); err != nil {
			l.log.Error("ACPI power button", "err", err)
			over = l.after(0)
		}
	}
	return over
}

// destroyAfterGrace destroys a guest that did not power off within its grace period; its
// stopped event then ends the launcher.
func (l *Launcher) destroyAfterGrace(dom guestDomain) error {
	l.mu.Lock()
	l.destroyed = fmt.Sprintf("the guest did not power off within the grace period of %s and was destroyed", l.gracePeriod())
	l.mu.Unlock()
	l.log.Info("grace period over, destroying the domain")
	if err := dom.Destroy(); err != nil {
		return &Exit{launcherpod.ExitGuestCrashed, fmt.Sprintf("destroy the domain: %v", err)}
	}
	return nil
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
		if state, reason, err := dom.State(); err == nil {
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
			_ = l.status.phase(launcherpod.PhasePaused, "paused on a disk I/O error")
		case paused:
			_ = l.status.phase(launcherpod.PhasePaused, "")
		case shuttingDown:
			_ = l.status.phase(launcherpod.PhaseShuttingDown, "")
		default:
			_ = l.status.phase(launcherpod.PhaseRunning, "")
		}
	case libvirt.DOMAIN_EVENT_SHUTDOWN:
		_ = l.status.phase(launcherpod.PhaseShuttingDown, "the guest is powering off")
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
	b, err := os.ReadFile(l.cfg.Libvirt.QEMULog(domain.Name(l.vmi), l.session))
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
	if strings.HasPrefix(cmd, control.Freeze+" ") {
		return "", l.freeze(dom, strings.TrimPrefix(cmd, control.Freeze+" "))
	}
	switch cmd {
	case control.Unfreeze:
		return "", l.unfreeze(dom)
	case control.Pause:
		return "", dom.Suspend()
	case control.Unpause:
		return "", dom.Resume()
	case control.Reboot:
		return "", dom.Reboot()
	case control.Reset:
		return "", dom.Reset()
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
