// Package control is the launcher's control socket protocol: a client connects to the unix
// socket, writes one command line and reads one reply line, then the connection closes.
//
//	pause | unpause | reboot | reset | shutdown | status | stats | guestinfo | freeze SECONDS | unfreeze
//
// Replies are "ok", "ok <JSON>" (status: the launcherpod.Status; stats: the
// launcherpod.DomainStats; guestinfo: the launcherpod.GuestInfo) or "error <message>".
package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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
	// Freeze freezes the guest's filesystems through its agent; "freeze SECONDS" (see
	// FreezeCommand) thaws them by itself after that many seconds.
	Freeze   = "freeze"
	Unfreeze = "unfreeze" // thaw them
)

// FreezeCommand is the freeze command with its unfreeze timeout in whole seconds (at least 1).
func FreezeCommand(unfreezeTimeout time.Duration) string {
	return fmt.Sprintf("%s %d", Freeze, max(int64(unfreezeTimeout/time.Second), 1))
}

// Handler runs one command and returns the reply payload (may be empty).
type Handler func(ctx context.Context, cmd string) (string, error)

// Serve answers commands on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, h Handler) {
	go func() {
		<-ctx.Done()
		_ = ln.Close()
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
		_ = ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// MaxReply bounds a reply line. The largest the launcher sends (stats, guestinfo) is a few KiB;
// the socket lives in a directory the launcher pod can write, so whoever answers on it may
// send anything, and the node agent reads the reply as root.
const MaxReply = 1 << 20

// DefaultTimeout bounds a call whose context has no deadline.
const DefaultTimeout = 30 * time.Second

// ErrReplyTooLarge is returned when the reply line is longer than MaxReply.
var ErrReplyTooLarge = errors.New("reply larger than the bound")

// Call sends one command and returns the reply payload. It gives up when ctx ends, after
// DefaultTimeout when ctx has no deadline, and when the reply exceeds MaxReply bytes.
func Call(ctx context.Context, path, cmd string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", path, err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	// A cancelled ctx (not only its deadline) ends a read or write in progress.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintln(c, cmd); err != nil {
		return "", fmt.Errorf("send %s: %w", cmd, errors.Join(err, ctxErr(ctx, dl, err)))
	}
	line, err := readLine(c, MaxReply)
	if err != nil {
		return "", fmt.Errorf("read reply to %s: %w", cmd, errors.Join(err, ctxErr(ctx, dl, err)))
	}
	return ParseReply(line)
}

// ctxErr is why the call ended early: ctx's error, or its deadline when the connection's copy
// of that deadline fired first (the socket's timer can run ahead of the context's).
func ctxErr(ctx context.Context, dl time.Time, ioErr error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if errors.Is(ioErr, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// readLine reads up to and without the first newline, and never more than max bytes before it.
func readLine(r io.Reader, max int) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, int64(max)+1)).ReadString('\n')
	switch {
	case err == nil:
		return strings.TrimSuffix(line, "\n"), nil
	case errors.Is(err, io.EOF) && len(line) > max:
		return "", fmt.Errorf("%w of %d bytes", ErrReplyTooLarge, max)
	}
	return "", err
}

// ParseReply turns a reply line into the payload or the launcher's error.
func ParseReply(line string) (string, error) {
	line = strings.TrimSpace(line)
	switch {
	case line == "ok":
		return "", nil
	case strings.HasPrefix(line, "ok "):
		return line[3:], nil
	case strings.HasPrefix(line, "error "):
		return "", errors.New(line[6:])
	}
	if len(line) > 80 {
		line = line[:80] + "..."
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
