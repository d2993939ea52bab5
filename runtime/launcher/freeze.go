package launcher

import (
	"fmt"
	"strconv"
	"time"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// freezeTimeout bounds one freeze or thaw call to the guest agent.
const freezeTimeout = 30 * time.Second

// freeze freezes the guest's filesystems through its agent and arms the thaw that follows
// after the unfreeze timeout (arg, in seconds), whoever asked: a snapshot whose controller
// stops between freeze and thaw leaves the guest frozen no longer than that.
func (l *Launcher) freeze(dom guestDomain, arg string) error {
	secs, err := strconv.Atoi(arg)
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > subresources.MaxUnfreezeTimeout {
		return fmt.Errorf("freeze: the unfreeze timeout %q is not a number of seconds from 1 to %d", arg, int(subresources.MaxUnfreezeTimeout/time.Second))
	}
	if err := agentCall(dom.FSFreeze); err != nil {
		if !l.status.get().AgentConnected {
			return fmt.Errorf("freeze the guest's filesystems: %w (%w)", errNoAgent, err)
		}
		return fmt.Errorf("freeze the guest's filesystems: %w", err)
	}
	timeout := time.Duration(secs) * time.Second
	l.mu.Lock()
	if l.thaw != nil {
		l.thaw.Stop()
	}
	l.thaw = time.AfterFunc(timeout, func() {
		l.log.Warn("thawing the guest: nobody did within the unfreeze timeout", "timeout", timeout)
		if err := l.unfreeze(dom); err != nil {
			l.log.Error("thaw the guest", "err", err)
		}
	})
	l.mu.Unlock()
	l.log.Info("froze the guest's filesystems", "unfreezeTimeout", timeout)
	return nil
}

// unfreeze thaws the guest's filesystems; thawing a guest that is not frozen is no error.
func (l *Launcher) unfreeze(dom guestDomain) error {
	l.mu.Lock()
	if l.thaw != nil {
		l.thaw.Stop()
		l.thaw = nil
	}
	l.mu.Unlock()
	if err := agentCall(dom.FSThaw); err != nil {
		return fmt.Errorf("thaw the guest's filesystems: %w", err)
	}
	l.log.Info("thawed the guest's filesystems")
	return nil
}

// agentCall runs a guest agent call, giving up after freezeTimeout (libvirt's own wait for a
// silent agent is longer than the control socket's deadline).
func agentCall(call func() error) error {
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-time.After(freezeTimeout):
		return fmt.Errorf("the guest agent did not answer within %s", freezeTimeout)
	}
}
