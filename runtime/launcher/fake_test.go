package launcher

import (
	"fmt"
	"slices"
	"sync"

	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// fakeHypervisor is libvirt for the lifecycle's unit tests: its domain changes state and sends
// the lifecycle events libvirtd sends for each call.
type fakeHypervisor struct {
	dom      *fakeDomain
	startErr error
	started  bool
	lost     chan<- string
}

func newFakeHypervisor() *fakeHypervisor { return &fakeHypervisor{dom: &fakeDomain{}} }

func (h *fakeHypervisor) Watch(events chan<- libvirt.DomainEventLifecycle, lost chan<- string) (func(), error) {
	h.dom.mu.Lock()
	h.dom.events = events
	h.dom.mu.Unlock()
	h.lost = lost
	return func() {}, nil
}

func (h *fakeHypervisor) StartPaused(string) (guestDomain, error) {
	if h.startErr != nil {
		return nil, h.startErr
	}
	h.started = true
	d := h.dom
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state = libvirt.DOMAIN_PAUSED
	d.send(libvirt.DOMAIN_EVENT_STARTED, 0)
	d.send(libvirt.DOMAIN_EVENT_SUSPENDED, int(libvirt.DOMAIN_EVENT_SUSPENDED_PAUSED))
	return d, nil
}

// fakeDomain is a guest that powers off on the power button unless ignoresPowerButton.
type fakeDomain struct {
	mu                 sync.Mutex
	events             chan<- libvirt.DomainEventLifecycle
	state              libvirt.DomainState
	calls              []string
	ignoresPowerButton bool
	powerButtonErr     error
	resumeErr          error
}

// send delivers an event as libvirt's event loop does: never blocking. d.mu is held.
func (d *fakeDomain) send(ev libvirt.DomainEventType, detail int) {
	select {
	case d.events <- libvirt.DomainEventLifecycle{Event: ev, Detail: detail}:
	default:
	}
}

func (d *fakeDomain) call(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, name)
}

func (d *fakeDomain) called() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// stop ends the domain as libvirt reports it: state shut off and a STOPPED event with detail.
func (d *fakeDomain) stop(detail libvirt.DomainEventStoppedDetailType) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state = libvirt.DOMAIN_SHUTOFF
	d.send(libvirt.DOMAIN_EVENT_STOPPED, int(detail))
}

func (d *fakeDomain) Resume() error {
	d.call("resume")
	if d.resumeErr != nil {
		return d.resumeErr
	}
	return d.move(libvirt.DOMAIN_PAUSED, libvirt.DOMAIN_RUNNING, libvirt.DOMAIN_EVENT_RESUMED, int(libvirt.DOMAIN_EVENT_RESUMED_UNPAUSED))
}

func (d *fakeDomain) Suspend() error {
	d.call("suspend")
	return d.move(libvirt.DOMAIN_RUNNING, libvirt.DOMAIN_PAUSED, libvirt.DOMAIN_EVENT_SUSPENDED, int(libvirt.DOMAIN_EVENT_SUSPENDED_PAUSED))
}

// move changes the state from from to to and sends the event, as libvirtd refuses a domain
// in another state.
func (d *fakeDomain) move(from, to libvirt.DomainState, ev libvirt.DomainEventType, detail int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != from {
		return fmt.Errorf("domain is in state %d, not %d", d.state, from)
	}
	d.state = to
	d.send(ev, detail)
	return nil
}

func (d *fakeDomain) PowerButton() error {
	d.call("power button")
	d.mu.Lock()
	err, ignores, running := d.powerButtonErr, d.ignoresPowerButton, d.state == libvirt.DOMAIN_RUNNING
	d.mu.Unlock()
	if err != nil || ignores || !running {
		return err
	}
	d.mu.Lock()
	d.send(libvirt.DOMAIN_EVENT_SHUTDOWN, int(libvirt.DOMAIN_EVENT_SHUTDOWN_GUEST))
	d.mu.Unlock()
	d.stop(libvirt.DOMAIN_EVENT_STOPPED_SHUTDOWN)
	return nil
}

func (d *fakeDomain) Destroy() error {
	d.call("destroy")
	d.stop(libvirt.DOMAIN_EVENT_STOPPED_DESTROYED)
	return nil
}

func (d *fakeDomain) Reboot() error { d.call("reboot"); return nil }
func (d *fakeDomain) Reset() error  { d.call("reset"); return nil }
func (d *fakeDomain) Free()         {}

func (d *fakeDomain) State() (libvirt.DomainState, int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state, 0, nil
}

func (d *fakeDomain) WatchAgent(chan<- bool) (func(), error) { return func() {}, nil }

func (d *fakeDomain) GuestInfo(libvirt.DomainGuestInfoTypes) (*libvirt.DomainGuestInfo, error) {
	return nil, fmt.Errorf("no guest agent in the fake")
}

func (d *fakeDomain) FSFreeze() error            { d.call("fsfreeze"); return nil }
func (d *fakeDomain) FSThaw() error              { d.call("fsthaw"); return nil }
func (d *fakeDomain) Resize(string, int64) error { d.call("resize"); return nil }

func (d *fakeDomain) Stats() (launcherpod.DomainStats, error) {
	return launcherpod.DomainStats{}, fmt.Errorf("no statistics in the fake")
}
