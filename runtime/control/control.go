// Package control is the launcher's control socket protocol: a client connects to the unix
// socket, writes one command line and reads one reply line, then the connection closes.
//
//	pause | unpause | reboot | reset | shutdown | status | stats | guestinfo
//
// Replies are "ok", "ok <JSON>" (status: the launcherpod.Status; stats: the
// launcherpod.DomainStats; guestinfo: the launcherpod.GuestInfo) or "error <message>".
package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Commands.
const (
	Pause    = "pause"    // pause the guest's vCPUs
	Unpause  = "unpause"  // resume them
	Reboot   = "reboot"   // soft reboot: ACPI power button, then the guest is started again
	Reset    = "reset"    // hard reset, like the reset button
	Shutdown = "shutdown" // ACPI power button, destroy after the grace period (like SIGTERM)
	Status   = "status"   // the current status as JSON
	Stats    = "stats"    // the running domain's CPU, memory, disk and network statistics as JSON
	// GuestInfo asks the guest agent for the guest's OS, hostname, timezone and users (JSON).
	GuestInfo = "guestinfo"
)

// Handler runs one command and returns the reply payload (may be empty).
type Handler func(ctx context.Context, cmd string) (string, error)

// Serve answers commands on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, h Handler) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go serveConn(ctx, c, h)
	}
}

func serveConn(ctx context.Context, c net.Conn, h Handler) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		return
	}
	out, err := h(ctx, strings.TrimSpace(line))
	reply := "ok"
	switch {
	case err != nil:
		reply = "error " + strings.ReplaceAll(err.Error(), "\n", " ")
	case out != "":
		reply = "ok " + out
	}
	_, _ = fmt.Fprintln(c, reply)
}

// Listen makes the control socket at path, readable and writable by its owner only.
func Listen(path string) (net.Listener, error) {
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// Call sends one command and returns the reply payload.
func Call(ctx context.Context, path, cmd string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintln(c, cmd); err != nil {
		return "", fmt.Errorf("send %s: %w", cmd, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read reply to %s: %w", cmd, err)
	}
	line = strings.TrimSpace(line)
	switch {
	case line == "ok":
		return "", nil
	case strings.HasPrefix(line, "ok "):
		return line[3:], nil
	case strings.HasPrefix(line, "error "):
		return "", errors.New(line[6:])
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
