package vmiaccess

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
	"github.com/slimvirt/slimvirt/runtime/control"
)

// TestConsole: a websocket on console carries keystrokes to the guest's serial port and its
// output back, through the launcher's console multiplexer; when the guest's side ends, the
// websocket is closed, and nothing is left running.
func TestConsole(t *testing.T) {
	l := newLauncher(t, "vm1")
	guest, mux := serveConsole(t, l)
	e := start(t, l)
	before := runtime.NumGoroutine()

	c, resp, err := e.dial(t, "vm1", subresources.Console, subresources.PlainProtocol)
	if err != nil {
		t.Fatalf("dial console: %v", err)
	}
	if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != subresources.PlainProtocol {
		t.Errorf("subprotocol %q, want %s", p, subresources.PlainProtocol)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	testutil.Must(t, c.Write(ctx, websocket.MessageBinary, []byte("root\n")))
	typed := make([]byte, 5)
	testutil.Must(t, guest.SetReadDeadline(time.Now().Add(10*time.Second)))
	if _, err := io.ReadFull(guest, typed); err != nil || string(typed) != "root\n" {
		t.Fatalf("the guest got %q, %v", typed, err)
	}
	_, err = guest.Write([]byte("\x1b[1mPassword: \x00\xff"))
	testutil.Must(t, err)
	if got := readUntil(t, c, "\x00\xff"); got != "\x1b[1mPassword: \x00\xff" {
		t.Errorf("the client got %q", got)
	}

	// The guest's side ends (QEMU goes): the multiplexer closes its clients, and the endpoint
	// the websocket.
	testutil.Must(t, guest.Close())
	<-mux
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("after the guest's side ended the websocket read %v, want a normal closure", err)
	}
	noneLeft(t, before)
}

// TestClientEnds: when the websocket's client goes, the endpoint closes its connection to
// the launcher's socket, and nothing is left running.
func TestClientEnds(t *testing.T) {
	l := newLauncher(t, "vm1")
	closed := make(chan struct{})
	ln, err := net.Listen("unix", filepath.Join(shortDir(t), "vnc"))
	testutil.Must(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()
		close(closed)
	}()
	intoRunDir(t, l, ln.Addr().String(), launcherwatch.VNCSocket)
	e := start(t, l)
	before := runtime.NumGoroutine()
	c, _, err := e.dial(t, "vm1", subresources.VNC)
	if err != nil {
		t.Fatalf("dial vnc offering no subprotocol: %v", err)
	}
	testutil.Must(t, c.Close(websocket.StatusNormalClosure, ""))
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the launcher's socket was not closed within 10s of the client's going")
	}
	noneLeft(t, before)
}

// noneLeft waits for the goroutines to be back to before.
func noneLeft(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the stream:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMessageTooBig: a websocket message beyond MaxMessage ends the stream; the guest gets no
// more of it than the bound (messages are streamed, not buffered whole).
func TestMessageTooBig(t *testing.T) {
	l := newLauncher(t, "vm1")
	guest, _ := serveConsole(t, l)
	e := start(t, l)
	c, _, err := e.dial(t, "vm1", subresources.Console, subresources.BinaryProtocol)
	testutil.Must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan int64, 1)
	go func() {
		_ = guest.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := io.Copy(io.Discard, guest)
		got <- n
	}()
	_ = c.Write(ctx, websocket.MessageBinary, bytes.Repeat([]byte("x"), 2*MaxMessage))
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Errorf("after a message of %d bytes the websocket read %v, want StatusMessageTooBig", 2*MaxMessage, err)
	}
	if n := <-got; n > MaxMessage+1 {
		t.Errorf("the guest got %d bytes of the message, more than the bound", n)
	}
}

// TestTextMessage: a text message is not part of the stream: it ends it, unsent.
func TestTextMessage(t *testing.T) {
	l := newLauncher(t, "vm1")
	guest, _ := serveConsole(t, l)
	e := start(t, l)
	c, _, err := e.dial(t, "vm1", subresources.Console)
	testutil.Must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	testutil.Must(t, c.Write(ctx, websocket.MessageText, []byte("reboot\n")))
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusUnsupportedData {
		t.Errorf("after a text message the websocket read %v, want StatusUnsupportedData", err)
	}
	testutil.Must(t, guest.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
	if n, _ := io.Copy(io.Discard, guest); n > 0 {
		t.Errorf("the guest got %d bytes", n)
	}
}

// TestVNC: two websockets on vnc at once each go through RFB's handshake with QEMU's VNC
// server and get its ServerInit (shared session).
func TestVNC(t *testing.T) {
	l := newLauncher(t, "vm1")
	serveVNC(t, l)
	e := start(t, l)
	a, _, err := e.dial(t, "vm1", subresources.VNC, subresources.BinaryProtocol)
	testutil.Must(t, err)
	b, _, err := e.dial(t, "vm1", subresources.VNC, subresources.PlainProtocol, subresources.BinaryProtocol)
	testutil.Must(t, err)
	ra, rb := &rfb{t: t, c: a}, &rfb{t: t, c: b}
	ra.handshake()
	rb.handshake()
	for _, r := range []*rfb{ra, rb} {
		w, h, name := r.serverInit()
		if w != 640 || h != 480 || name != "QEMU" {
			t.Errorf("ServerInit %dx%d %q", w, h, name)
		}
	}
}

// rfb is a VNC client over a websocket.
type rfb struct {
	t   *testing.T
	c   *websocket.Conn
	buf []byte
}

func (r *rfb) read(n int) []byte {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(r.buf) < n {
		_, b, err := r.c.Read(ctx)
		if err != nil {
			r.t.Fatalf("RFB read: %v", err)
		}
		r.buf = append(r.buf, b...)
	}
	out := r.buf[:n]
	r.buf = r.buf[n:]
	return out
}

func (r *rfb) write(b []byte) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	testutil.Must(r.t, r.c.Write(ctx, websocket.MessageBinary, b))
}

// handshake: protocol version, security None, ClientInit with the shared flag.
func (r *rfb) handshake() {
	r.t.Helper()
	if v := string(r.read(12)); v != "RFB 003.008\n" {
		r.t.Fatalf("ProtocolVersion %q", v)
	}
	r.write([]byte("RFB 003.008\n"))
	types := r.read(int(r.read(1)[0]))
	if !bytes.Contains(types, []byte{1}) {
		r.t.Fatalf("security types %v lack None", types)
	}
	r.write([]byte{1})
	if res := r.read(4); !bytes.Equal(res, []byte{0, 0, 0, 0}) {
		r.t.Fatalf("SecurityResult %v", res)
	}
	r.write([]byte{1})
}

func (r *rfb) serverInit() (w, h int, name string) {
	r.t.Helper()
	head := r.read(24)
	n := binary.BigEndian.Uint32(head[20:])
	return int(binary.BigEndian.Uint16(head)), int(binary.BigEndian.Uint16(head[2:])), string(r.read(int(n)))
}

// TestActions: the power actions reach the launcher's control socket and its answers come
// back; guestosinfo answers the guest agent's JSON; wrong methods, unknown VMIs and unknown
// subresources are refused with a Status.
func TestActions(t *testing.T) {
	l := newLauncher(t, "vm1")
	rec := &recorder{}
	controlSocket(t, l, func(_ context.Context, cmd string) (string, error) {
		rec.add(cmd)
		switch cmd {
		case control.GuestInfo:
			return `{"hostname":"vm1","os":{"name":"Fedora Linux"}}`, nil
		case control.Unpause:
			return "", errors.New("domain is not paused")
		}
		return "", nil
	})
	e := start(t, l)
	for _, tc := range []struct {
		method, vmi, action string
		code                int
		says                string
	}{
		{http.MethodPut, "vm1", subresources.Pause, http.StatusOK, ""},
		{http.MethodPut, "vm1", subresources.SoftReboot, http.StatusOK, ""},
		{http.MethodPut, "vm1", subresources.Unpause, http.StatusInternalServerError, "domain is not paused"},
		{http.MethodGet, "vm1", subresources.GuestOSInfo, http.StatusOK, `{"hostname":"vm1","os":{"name":"Fedora Linux"}}`},
		{http.MethodGet, "vm1", subresources.Pause, http.StatusMethodNotAllowed, "pause takes PUT, not GET"},
		{http.MethodPost, "vm1", subresources.Console, http.StatusMethodNotAllowed, "console takes GET"},
		{http.MethodPut, "vm2", subresources.Pause, http.StatusNotFound, "virtualmachineinstance tenant/vm2 is not running on node node-1"},
		{http.MethodPut, "vm1", "destroy", http.StatusNotFound, `no subresource "destroy" of virtualmachineinstances`},
	} {
		t.Run(tc.method+" "+tc.vmi+" "+tc.action, func(t *testing.T) {
			code, body := e.do(t, tc.method, tc.vmi, tc.action)
			says := body
			if code != http.StatusOK {
				s := status(t, body)
				if s.Code != int32(code) || s.Status != "Failure" {
					t.Errorf("Status %+v", s)
				}
				says = s.Message
			}
			if code != tc.code || !strings.Contains(says, tc.says) {
				t.Fatalf("%d %q, want %d saying %q", code, body, tc.code, tc.says)
			}
		})
	}
	if got := rec.got(); got != "pause,reboot,unpause,guestinfo" {
		t.Errorf("the control socket got %s", got)
	}
}

// TestHostileRunDir: whatever a pod plants in the place of the console or VNC socket - a link
// to a socket of the node, a FIFO, a regular file - is refused before the websocket is
// accepted, and the node socket the link points to is never connected to.
func TestHostileRunDir(t *testing.T) {
	nodeSock := filepath.Join(shortDir(t), "node.sock")
	ln, err := net.Listen("unix", nodeSock)
	testutil.Must(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			_ = c.Close()
		}
	}()
	plants := map[string]func(path string) error{
		"symlink to a node socket": func(p string) error { return os.Symlink(nodeSock, p) },
		"relative symlink":         func(p string) error { return os.Symlink("../../../../../../../../../.."+nodeSock, p) },
		"fifo":                     func(p string) error { return syscall.Mkfifo(p, 0o666) },
		"regular file":             func(p string) error { return os.WriteFile(p, []byte("RFB 003.008\n"), 0o644) },
	}
	for name, plant := range plants {
		for _, sub := range []string{subresources.Console, subresources.VNC} {
			t.Run(name+" as "+sub, func(t *testing.T) {
				l := newLauncher(t, "vm1")
				file := map[string]string{subresources.Console: launcherwatch.ConsoleSocket, subresources.VNC: launcherwatch.VNCSocket}[sub]
				testutil.Must(t, plant(filepath.Join(l.RunDir, file)))
				e := start(t, l)
				c, resp, err := e.dial(t, "vm1", sub, subresources.PlainProtocol)
				if err == nil {
					t.Fatal("the websocket was accepted")
				}
				_ = c
				if resp == nil || resp.StatusCode != http.StatusBadGateway {
					t.Fatalf("response %v, %v; want 502", resp, err)
				}
			})
		}
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the node's socket got %d connections", n)
	}
}

// TestNoSocketYet: a VMI whose launcher has not made its sockets yet is 503.
func TestNoSocketYet(t *testing.T) {
	e := start(t, newLauncher(t, "vm1"))
	_, resp, err := e.dial(t, "vm1", subresources.VNC)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial: %v, %v; want 503", resp, err)
	}
	if code, body := e.do(t, http.MethodPut, "vm1", subresources.Pause); code != http.StatusServiceUnavailable {
		t.Fatalf("pause: %d %s; want 503", code, body)
	}
}

// TestUnknownProtocol: a client that offers only subprotocols the endpoint does not speak is
// refused.
func TestUnknownProtocol(t *testing.T) {
	l := newLauncher(t, "vm1")
	serveVNC(t, l)
	e := start(t, l)
	_, resp, err := e.dial(t, "vm1", subresources.VNC, "base64.channel.k8s.io")
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("dial: %v, %v; want 400", resp, err)
	}
}
