package webconsole_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/slimctl/webconsole"
	"github.com/slimvirt/slimvirt/slimctl/webconsole/browsertest"
)

// guestDir is the test guest that `make guest` builds; SLIMVIRT_GUEST_DIR overrides.
func guestDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SLIMVIRT_GUEST_DIR")
	if dir == "" {
		dir = "../../_output/guest"
	}
	for _, f := range []string{"vmlinuz", "initrd.gz"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("test guest missing (run `make guest`, or set SLIMVIRT_GUEST_DIR): %v", err)
		}
	}
	return dir
}

// serialMux owns QEMU's serial socket and lets any number of clients share it: each new client
// first gets everything the guest printed so far (as a console log would), then the live bytes;
// what clients write goes to the guest.
type serialMux struct {
	qemu    net.Conn
	mu      sync.Mutex
	log     bytes.Buffer
	clients map[net.Conn]bool
}

const serialLogMax = 1 << 20

func startSerialMux(t *testing.T, qemuSock, listen string) *serialMux {
	t.Helper()
	var qemu net.Conn
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if qemu, err = net.Dial("unix", qemuSock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to QEMU's serial: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ln, err := net.Listen("unix", listen)
	if err != nil {
		t.Fatal(err)
	}
	m := &serialMux{qemu: qemu, clients: map[net.Conn]bool{}}
	t.Cleanup(func() {
		_ = ln.Close()
		_ = qemu.Close()
		m.mu.Lock()
		for c := range m.clients {
			_ = c.Close()
		}
		m.mu.Unlock()
	})
	go m.fromGuest()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.mu.Lock()
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write(m.log.Bytes())
			m.clients[c] = true
			m.mu.Unlock()
			go func() { _, _ = io.Copy(qemu, c); m.drop(c) }()
		}
	}()
	return m
}

func (m *serialMux) fromGuest() {
	buf := make([]byte, 4096)
	for {
		n, err := m.qemu.Read(buf)
		m.mu.Lock()
		if m.log.Len()+n <= serialLogMax {
			m.log.Write(buf[:n])
		}
		for c := range m.clients {
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, werr := c.Write(buf[:n]); werr != nil {
				_ = c.Close()
				delete(m.clients, c)
			}
		}
		m.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (m *serialMux) drop(c net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_ = c.Close()
	delete(m.clients, c)
}

func (m *serialMux) text() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.String()
}

// qemuGuest boots the test guest under TCG with its screen on a VNC unix socket and its serial
// console on another, shared through a serialMux. It returns a Dialer onto both, standing for
// the aggregated API's vnc and console streams, and the VNC socket's path.
func qemuGuest(t *testing.T) (webconsole.Dialer, string) {
	t.Helper()
	gdir := guestDir(t)
	dir := t.TempDir()
	vnc, serial, console := filepath.Join(dir, "vnc"), filepath.Join(dir, "serial"), filepath.Join(dir, "console")
	cmd := exec.Command("qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "256",
		"-display", "none", "-vnc", "unix:"+vnc, "-serial", "unix:"+serial+",server=on,wait=on",
		"-monitor", "none", "-nic", "none",
		"-kernel", filepath.Join(gdir, "vmlinuz"), "-initrd", filepath.Join(gdir, "initrd.gz"),
		"-append", "console=tty0 console=ttyS0 panic=-1 quiet")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Logf("qemu pid %d: %s", cmd.Process.Pid, strings.Join(cmd.Args, " "))
	mux := startSerialMux(t, serial, console)
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // our own child, by PID
		<-exited
		if t.Failed() {
			t.Logf("qemu stderr: %s\nserial console:\n%s", stderr.String(), mux.text())
		}
	})
	dial := func(ctx context.Context, kind string) (io.ReadWriteCloser, error) {
		var d net.Dialer
		switch kind {
		case subresources.VNC:
			return d.DialContext(ctx, "unix", vnc)
		case subresources.Console:
			return d.DialContext(ctx, "unix", console)
		}
		return nil, fmt.Errorf("no stream %q", kind)
	}
	return dial, vnc
}

// startBrowser starts headless Chromium; without it the test fails and says how to get it.
func startBrowser(t *testing.T) *browsertest.Browser {
	t.Helper()
	b, err := browsertest.Start(context.Background())
	if err != nil {
		t.Fatalf("%v (run `make deps`)", err)
	}
	t.Cleanup(b.Close)
	return b
}
