package launcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// errNoAgent is the guestinfo reply while no guest agent is connected.
var errNoAgent = errors.New("the guest agent is not connected")

// guestInfoTimeout bounds one question to the guest agent.
const guestInfoTimeout = 10 * time.Second

// watchAgent follows the guest agent's connection: connected, the status says so and gets
// the guest's OS from the agent; disconnected (the guest stopped it, rebooted), it no longer
// does. It returns the deregistration.
func (l *Launcher) watchAgent(ctx context.Context, dom guestDomain) (func(), error) {
	states := make(chan bool, 16)
	unwatch, err := dom.WatchAgent(states)
	if err != nil {
		return nil, fmt.Errorf("watch the guest agent: %w", err)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case up := <-states:
				l.log.Info("guest agent", "connected", up)
				_ = l.status.update(func(s *launcherpod.Status) {
					s.AgentConnected = up
					if !up {
						s.GuestOS = nil
					}
				})
				if up {
					l.recordGuestOS(dom)
				}
			}
		}
	}()
	return unwatch, nil
}

// recordGuestOS puts what the agent says of the guest's OS into the status.
func (l *Launcher) recordGuestOS(dom guestDomain) {
	info, err := guestInfo(dom, libvirt.DOMAIN_GUEST_INFO_OS)
	if err != nil {
		l.log.Warn("the guest agent did not say what the guest runs", "err", err)
		return
	}
	_ = l.status.update(func(s *launcherpod.Status) {
		if s.AgentConnected {
			s.GuestOS = info.OS
		}
	})
}

// guestInfoReply answers the guestinfo command.
func (l *Launcher) guestInfoReply(dom guestDomain) (launcherpod.GuestInfo, error) {
	if !l.status.get().AgentConnected {
		return launcherpod.GuestInfo{}, errNoAgent
	}
	return guestInfo(dom, libvirt.DOMAIN_GUEST_INFO_OS|libvirt.DOMAIN_GUEST_INFO_HOSTNAME|
		libvirt.DOMAIN_GUEST_INFO_TIMEZONE|libvirt.DOMAIN_GUEST_INFO_USERS)
}

// guestInfo asks the guest agent through libvirt.
func guestInfo(dom guestDomain, types libvirt.DomainGuestInfoTypes) (launcherpod.GuestInfo, error) {
	type result struct {
		info *libvirt.DomainGuestInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		info, err := dom.GuestInfo(types)
		done <- result{info, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(guestInfoTimeout):
		return launcherpod.GuestInfo{}, fmt.Errorf("the guest agent did not answer within %s", guestInfoTimeout)
	}
	if r.err != nil {
		return launcherpod.GuestInfo{}, fmt.Errorf("ask the guest agent: %w", r.err)
	}
	return convertGuestInfo(r.info), nil
}

// convertGuestInfo keeps what the agent reported.
func convertGuestInfo(in *libvirt.DomainGuestInfo) launcherpod.GuestInfo {
	out := launcherpod.GuestInfo{Users: []launcherpod.GuestUser{}}
	if in.HostnameSet {
		out.Hostname = in.Hostname
	}
	if os := in.OS; os != nil {
		out.OS = &launcherpod.GuestOSInfo{ID: os.ID, Name: os.Name, PrettyName: os.PrettyName, Version: os.Version,
			VersionID: os.VersionID, KernelRelease: os.KernelRelease, KernelVersion: os.KernelVersion, Machine: os.Machine}
	}
	if tz := in.TimeZone; tz != nil {
		out.Timezone, out.TimezoneOffset = tz.Name, tz.Offset
	}
	for _, u := range in.Users {
		out.Users = append(out.Users, launcherpod.GuestUser{Name: u.Name, Domain: u.Domain, LoginTime: u.LoginTime})
	}
	return out
}
