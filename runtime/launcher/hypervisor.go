package launcher

import (
	"fmt"

	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/runtime/diskresize"
)

// hypervisor is libvirt as the launcher's lifecycle uses it: libvirtConn is the real one; the
// lifecycle's unit tests use a fake.
type hypervisor interface {
	// Watch sends the lifecycle events of the domains to events, never blocking, and why the
	// connection to libvirtd ended to lost. unwatch stops the events.
	Watch(events chan<- libvirt.DomainEventLifecycle, lost chan<- string) (unwatch func(), err error)
	// StartPaused creates the domain from its XML, paused, destroyed with the connection.
	StartPaused(xml string) (guestDomain, error)
}

// guestDomain is the running domain.
type guestDomain interface {
	Resume() error
	Suspend() error
	// PowerButton presses the ACPI power button.
	PowerButton() error
	// Reboot asks the guest to reboot (ACPI); Reset resets it at once.
	Reboot() error
	Reset() error
	Destroy() error
	// State is the domain's state and the reason of it.
	State() (libvirt.DomainState, int, error)
	// WatchAgent sends whether the guest agent is connected on each change.
	WatchAgent(connected chan<- bool) (unwatch func(), err error)
	// GuestInfo asks the guest agent.
	GuestInfo(types libvirt.DomainGuestInfoTypes) (*libvirt.DomainGuestInfo, error)
	// Stats are the domain's statistics under the VMI's device names.
	Stats() (launcherpod.DomainStats, error)
	// FSFreeze and FSThaw freeze and thaw the guest's filesystems through its agent.
	FSFreeze() error
	FSThaw() error
	// Resize gives the guest size bytes of the disk whose source is path (diskresize.Domain).
	Resize(path string, size int64) error
	Free()
}

// libvirtConn is the hypervisor of a connection to libvirtd.
type libvirtConn struct{ conn *libvirt.Connect }

func (c libvirtConn) Watch(events chan<- libvirt.DomainEventLifecycle, lost chan<- string) (func(), error) {
	cb, err := c.conn.DomainEventLifecycleRegister(nil, func(_ *libvirt.Connect, _ *libvirt.Domain, ev *libvirt.DomainEventLifecycle) {
		select {
		case events <- *ev:
		default: // never block libvirt's event loop; the state is re-read on STOPPED anyway
		}
	})
	if err != nil {
		return nil, err
	}
	_ = c.conn.RegisterCloseCallback(func(_ *libvirt.Connect, reason libvirt.ConnectCloseReason) {
		select {
		case lost <- fmt.Sprintf("lost the connection to libvirtd (reason %d)", reason):
		default:
		}
	})
	return func() { _ = c.conn.DomainEventDeregister(cb) }, nil
}

func (c libvirtConn) StartPaused(xml string) (guestDomain, error) {
	// Autodestroyed so that QEMU never outlives the launcher's connection.
	dom, err := c.conn.DomainCreateXML(xml, libvirt.DOMAIN_START_PAUSED|libvirt.DOMAIN_START_AUTODESTROY)
	if err != nil {
		return nil, err
	}
	return &libvirtDomain{conn: c.conn, dom: dom}, nil
}

// libvirtDomain is a domain of libvirtd.
type libvirtDomain struct {
	conn *libvirt.Connect
	dom  *libvirt.Domain
}

func (d *libvirtDomain) Resume() error  { return d.dom.Resume() }
func (d *libvirtDomain) Suspend() error { return d.dom.Suspend() }
func (d *libvirtDomain) PowerButton() error {
	return d.dom.ShutdownFlags(libvirt.DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
}
func (d *libvirtDomain) Reboot() error  { return d.dom.Reboot(libvirt.DOMAIN_REBOOT_ACPI_POWER_BTN) }
func (d *libvirtDomain) Reset() error   { return d.dom.Reset(0) }
func (d *libvirtDomain) Destroy() error { return d.dom.Destroy() }
func (d *libvirtDomain) Free()          { _ = d.dom.Free() }

func (d *libvirtDomain) State() (libvirt.DomainState, int, error) { return d.dom.GetState() }

func (d *libvirtDomain) WatchAgent(connected chan<- bool) (func(), error) {
	id, err := d.conn.DomainEventAgentLifecycleRegister(d.dom, func(_ *libvirt.Connect, _ *libvirt.Domain, ev *libvirt.DomainEventAgentLifecycle) {
		select {
		case connected <- ev.State == libvirt.CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	return func() { _ = d.conn.DomainEventDeregister(id) }, nil
}

func (d *libvirtDomain) GuestInfo(types libvirt.DomainGuestInfoTypes) (*libvirt.DomainGuestInfo, error) {
	return d.dom.GetGuestInfo(types, 0)
}

func (d *libvirtDomain) Stats() (launcherpod.DomainStats, error) { return domainStats(d.dom) }

func (d *libvirtDomain) FSFreeze() error { return d.dom.FSFreeze(nil, 0) }
func (d *libvirtDomain) FSThaw() error   { return d.dom.FSThaw(nil, 0) }

func (d *libvirtDomain) Resize(path string, size int64) error {
	return diskresize.LibvirtDomain{Dom: d.dom}.Resize(path, size)
}
