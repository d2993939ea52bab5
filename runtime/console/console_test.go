package console

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A stand-in for QEMU's serial socket: the mux must copy lines to stdout and the log, hand
// output to attached clients and their input to the guest.
func TestMux(t *testing.T) {
	dir := t.TempDir()
	qemuSock := filepath.Join(dir, "serial0")
	ln, err := net.Listen("unix", qemuSock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	guest := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			guest <- c
		}
	}()
	var out lockedBuf
	m := &Mux{QEMUSocket: qemuSock, ClientSocket: filepath.Join(dir, "console.sock"), LogFile: filepath.Join(dir, "console.log"), Lines: &out}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := m.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx) }()
	g := <-guest
	_, _ = g.Write([]byte("Booting\r\nSLIMVIRT-GUEST-UP hostname=x\r\nlogin: "))

	// The prompt without a newline still reaches stdout once output pauses.
	testutil.WaitFor(t, 5*time.Second, "the console line", func() bool { return strings.Contains(out.String(), "login: \n") })
	if want := "Booting\nSLIMVIRT-GUEST-UP hostname=x\nlogin: \n"; out.String() != want {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}

	var client net.Conn
	testutil.WaitFor(t, 5*time.Second, "the client socket", func() bool { client, err = net.Dial("unix", m.ClientSocket); return err == nil })
	defer client.Close()
	time.Sleep(100 * time.Millisecond) // let the mux register the client
	_, _ = client.Write([]byte("root\n"))
	in := bufio.NewReader(g)
	_ = g.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := in.ReadString('\n'); err != nil || line != "root\n" {
		t.Fatalf("guest got %q, %v", line, err)
	}
	_, _ = g.Write([]byte("Password: "))
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := client.Read(buf)
	if err != nil || string(buf[:n]) != "Password: " {
		t.Fatalf("client got %q, %v", buf[:n], err)
	}

	_ = g.Close() // QEMU went away
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not end when QEMU closed the socket")
	}
	log, _ := os.ReadFile(m.LogFile)
	if string(log) != "Booting\r\nSLIMVIRT-GUEST-UP hostname=x\r\nlogin: Password: " {
		t.Errorf("log %q", log)
	}
	if !strings.HasSuffix(out.String(), "Password: \n") {
		t.Errorf("last partial line not flushed at the end: %q", out.String())
	}
}
