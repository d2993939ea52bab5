package command

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestServeVNCOneStreamPerConnection: each viewer connection gets a stream of its own, bytes
// flow both ways, and the end of ctx closes the port.
func TestServeVNCOneStreamPerConnection(t *testing.T) {
	var dials atomic.Int32
	dial := func() (io.ReadWriteCloser, error) {
		n := dials.Add(1)
		ours, theirs := net.Pipe()
		go func() { // a server that greets with its stream's number, then echoes
			defer theirs.Close()
			if _, err := fmt.Fprintf(theirs, "RFB %d\n", n); err != nil {
				return
			}
			_, _ = io.Copy(theirs, theirs)
		}()
		return ours, nil
	}
	stdout, w := io.Pipe()
	e := &env{stdout: w, stderr: io.Discard}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.serveVNC(ctx, "x", "127.0.0.1:0", dial, false) }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	var addr string
	if _, err := fmt.Sscanf(line, "VNC for x on %s", &addr); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	for i := 1; i <= 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		greeting, err := r.ReadString('\n')
		if err != nil || greeting != fmt.Sprintf("RFB %d\n", i) {
			t.Fatalf("connection %d: greeting %q, %v", i, greeting, err)
		}
		_, _ = c.Write([]byte("ping\n"))
		if got, err := r.ReadString('\n'); err != nil || got != "ping\n" {
			t.Fatalf("connection %d: echo %q, %v", i, got, err)
		}
		_ = c.Close()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serveVNC did not end with ctx")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the port is still open")
	}
}

// TestServeVNCReportsRefusalAtOnce: a refused first stream is the command's error, and no
// port is opened.
func TestServeVNCReportsRefusalAtOnce(t *testing.T) {
	refused := errors.New(`vnc VMI ns/x: forbidden: User "bob" cannot get resource "virtualmachineinstances/vnc"`)
	var out strings.Builder
	e := &env{stdout: &out, stderr: io.Discard}
	err := e.serveVNC(context.Background(), "x", "127.0.0.1:0", func() (io.ReadWriteCloser, error) { return nil, refused }, false)
	if !errors.Is(err, refused) {
		t.Fatalf("got %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q", out.String())
	}
}
