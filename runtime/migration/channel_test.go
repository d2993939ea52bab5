package migration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// localEnd is a unix socket on the target standing in for libvirtd or QEMU: it answers each
// line with its name and the line, and counts who reached it.
type localEnd struct {
	name     string
	accepted atomic.Int32
}

func serveLocal(t *testing.T, path, name string) *localEnd {
	t.Helper()
	ln, err := net.Listen("unix", path)
	testutil.Must(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	e := &localEnd{name: name}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			go func() {
				defer c.Close()
				s := bufio.NewScanner(c)
				for s.Scan() {
					if _, err := io.WriteString(c, name+": "+s.Text()+"\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return e
}

// channel is a target and a source joined over loopback, with the target's local ends.
type channel struct {
	src, dst   *Identity
	target     *Target
	source     *Source
	srcSockets Sockets
	ends       map[Stream]*localEnd
}

func newChannel(t *testing.T, maxConns int) *channel {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	src, err := NewIdentity("source", time.Hour)
	testutil.Must(t, err)
	dst, err := NewIdentity("target", time.Hour)
	testutil.Must(t, err)
	// Short paths: a unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "mig")
	testutil.Must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	dstSockets := Sockets{Dir: filepath.Join(dir, "t")}
	testutil.Must(t, os.MkdirAll(dstSockets.Dir, 0o700))
	c := &channel{src: src, dst: dst, srcSockets: Sockets{Dir: filepath.Join(dir, "s")}, ends: map[Stream]*localEnd{
		StreamLibvirt: serveLocal(t, filepath.Join(dir, "t", "libvirt-sock"), "libvirtd"),
		StreamMemory:  serveLocal(t, dstSockets.Memory(), "qemu"),
		StreamDisks:   serveLocal(t, dstSockets.Disks(), "nbd"),
	}}
	ln, err := Listen(ctx, "127.0.0.1:0")
	testutil.Must(t, err)
	c.target, err = NewTarget(TargetConfig{Identity: dst, SourcePin: src.Pin(), Listener: ln,
		LibvirtSocket: filepath.Join(dir, "t", "libvirt-sock"), Sockets: dstSockets, MaxConns: maxConns,
		HandshakeTimeout: time.Second})
	testutil.Must(t, err)
	go func() { _ = c.target.Serve(ctx) }()
	c.source, err = ListenSource(SourceConfig{Identity: src, TargetPin: dst.Pin(), TargetAddr: c.target.Addr().String(), Sockets: c.srcSockets})
	testutil.Must(t, err)
	go func() { _ = c.source.Serve(ctx) }()
	return c
}

func (c *channel) srcPath(s Stream) string {
	return map[Stream]string{StreamLibvirt: c.srcSockets.Libvirt(), StreamMemory: c.srcSockets.Memory(), StreamDisks: c.srcSockets.Disks()}[s]
}

func (c *channel) reached() int32 {
	var n int32
	for _, e := range c.ends {
		n += e.accepted.Load()
	}
	return n
}

// ask sends a line through the source's socket of stream and returns the answer.
func ask(t *testing.T, path, line string) string {
	t.Helper()
	conn, err := net.Dial("unix", path)
	testutil.Must(t, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, line+"\n")
	testutil.Must(t, err)
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read the answer through %s: %v", path, err)
	}
	return strings.TrimSpace(got)
}

// Each of the source's sockets reaches its own end on the target, both ways, and a half-close
// still lets the answer through.
func TestChannelStreams(t *testing.T) {
	c := newChannel(t, 0)
	for stream, want := range map[Stream]string{StreamLibvirt: "libvirtd: hello", StreamMemory: "qemu: hello", StreamDisks: "nbd: hello"} {
		if got := ask(t, c.srcPath(stream), "hello"); got != want {
			t.Errorf("%s: got %q, want %q", stream, got, want)
		}
	}
	conn, err := net.Dial("unix", c.srcPath(StreamMemory))
	testutil.Must(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "last\n")
	testutil.Must(t, err)
	testutil.Must(t, conn.(*net.UnixConn).CloseWrite())
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(conn)
	testutil.Must(t, err)
	if string(b) != "qemu: last\n" {
		t.Errorf("after a half-close: %q", b)
	}
}

// Whoever lacks the source's key, or pins another target, reaches nothing on the target.
func TestChannelRefusesStrangers(t *testing.T) {
	c := newChannel(t, 0)
	addr := c.target.Addr().String()
	stranger, err := NewIdentity("stranger", time.Hour)
	testutil.Must(t, err)
	clientConf := func(id *Identity, protos ...string) *tls.Config {
		conf := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: protos, ServerName: serverName}
		if id != nil {
			conf.Certificates = []tls.Certificate{id.cert}
		}
		return conf
	}
	attempts := map[string]func() error{
		"plain bytes": func() error {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer conn.Close()
			_, _ = io.WriteString(conn, "GET / HTTP/1.0\r\n\r\n")
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.ReadAll(conn)
			return err
		},
		"no client certificate": func() error { return tlsAttempt(addr, clientConf(nil, StreamLibvirt.alpn())) },
		"another key":           func() error { return tlsAttempt(addr, clientConf(stranger, StreamLibvirt.alpn())) },
		"the target's own key":  func() error { return tlsAttempt(addr, clientConf(c.dst, StreamLibvirt.alpn())) },
		"the source's key, an unknown stream": func() error {
			return tlsAttempt(addr, clientConf(c.src, "slimvirt-migration-shell/1"))
		},
		"the source's key, no stream": func() error { return tlsAttempt(addr, clientConf(c.src)) },
		"TLS 1.2": func() error {
			conf := clientConf(c.src, StreamLibvirt.alpn())
			conf.MinVersion, conf.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			return tlsAttempt(addr, conf)
		},
		"silence": func() error {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer conn.Close()
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.ReadAll(conn)
			return err
		},
	}
	for name, attempt := range attempts {
		t.Run(name, func(t *testing.T) {
			_ = attempt()
			if n := c.reached(); n != 0 {
				t.Fatalf("%d connections reached the target's local sockets", n)
			}
		})
	}
	// A source that pins another target does not talk to this one.
	wrong, err := ListenSource(SourceConfig{Identity: c.src, TargetPin: stranger.Pin(), TargetAddr: addr, Sockets: Sockets{Dir: c.srcSockets.Dir + "w"}})
	testutil.Must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = wrong.Serve(ctx) }()
	conn, err := net.Dial("unix", Sockets{Dir: c.srcSockets.Dir + "w"}.Libvirt())
	testutil.Must(t, err)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(conn); err != nil || len(b) != 0 {
		t.Errorf("the wrongly pinned source answered %q, %v; want it closed", b, err)
	}
	_ = conn.Close()
	if n := c.reached(); n != 0 {
		t.Fatalf("%d connections reached the target's local sockets", n)
	}
	// And the real source still gets through.
	if got := ask(t, c.srcPath(StreamLibvirt), "after"); got != "libvirtd: after" {
		t.Errorf("after the strangers: %q", got)
	}
}

// tlsAttempt handshakes and then tries to use the connection: with TLS 1.3 a refused client
// certificate shows only on the first read.
func tlsAttempt(addr string, conf *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "hello\n"); err != nil {
		return err
	}
	_, err = io.ReadAll(conn)
	return err
}

// The target serves at most MaxConns connections at once; the others are closed at once.
func TestChannelBoundsConnections(t *testing.T) {
	c := newChannel(t, 2)
	var open []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", c.target.Addr().String())
		testutil.Must(t, err)
		open = append(open, conn)
	}
	defer func() {
		for _, conn := range open {
			_ = conn.Close()
		}
	}()
	testutil.WaitFor(t, 5*time.Second, "two connections held", func() bool {
		c.target.conns.mu.Lock()
		defer c.target.conns.mu.Unlock()
		return len(c.target.conns.open) == 2
	})
	extra, err := net.Dial("tcp", c.target.Addr().String())
	testutil.Must(t, err)
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("a third connection: %v, want it closed (EOF)", err)
	}
}

func TestValidatePin(t *testing.T) {
	id, err := NewIdentity("x", time.Minute)
	testutil.Must(t, err)
	for pin, ok := range map[string]bool{
		id.Pin():                      true,
		"":                            false,
		strings.ToUpper(id.Pin()):     false,
		id.Pin()[:62]:                 false,
		id.Pin() + "00":               false,
		"zz" + id.Pin()[2:]:           false,
		"sha256:" + id.Pin()[7:]:      false,
		strings.Repeat("0", 64) + " ": false,
	} {
		if err := ValidatePin(pin); (err == nil) != ok {
			t.Errorf("ValidatePin(%q) = %v", pin, err)
		}
	}
}

// Only the pinned certificate is accepted, alone, and only while it is valid.
func TestVerifyPeer(t *testing.T) {
	id, err := NewIdentity("x", time.Hour)
	testutil.Must(t, err)
	other, err := NewIdentity("y", time.Hour)
	testutil.Must(t, err)
	now := time.Now()
	for _, tc := range []struct {
		name  string
		certs []*x509.Certificate
		at    time.Time
		ok    bool
	}{
		{"pinned", []*x509.Certificate{id.leaf}, now, true},
		{"another", []*x509.Certificate{other.leaf}, now, false},
		{"none", nil, now, false},
		{"pinned and another", []*x509.Certificate{id.leaf, other.leaf}, now, false},
		{"expired", []*x509.Certificate{id.leaf}, now.Add(2 * time.Hour), false},
		{"not yet valid", []*x509.Certificate{id.leaf}, now.Add(-time.Hour), false},
	} {
		err := verifyPeer(id.Pin(), func() time.Time { return tc.at })(tls.ConnectionState{PeerCertificates: tc.certs})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
