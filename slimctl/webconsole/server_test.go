package webconsole_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/slimctl/webconsole"
)

// echoSocket serves a unix socket that echoes, prefixed with kind so the test sees which
// stream the server dialled; it stands for the aggregated API's streams.
func echoSocket(t *testing.T) webconsole.Dialer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "echo.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return func(ctx context.Context, kind string) (io.ReadWriteCloser, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, err
		}
		_, err = io.WriteString(c, kind+":")
		return c, err
	}
}

func startServer(t *testing.T, dial webconsole.Dialer) (pageURL string, u *url.URL) {
	t.Helper()
	s, err := webconsole.New(webconsole.Config{Namespace: "ns1", VMI: "vm<1>", Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pageURL, err = s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := s.Wait(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	if u, err = url.Parse(pageURL); err != nil {
		t.Fatal(err)
	}
	return pageURL, u
}

func get(t *testing.T, rawURL string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body)
}

func TestNewRefuses(t *testing.T) {
	dial := func(context.Context, string) (io.ReadWriteCloser, error) { return nil, errors.New("no") }
	for _, cfg := range []webconsole.Config{
		{Namespace: "ns", Dial: dial},
		{Namespace: "ns", VMI: "vm"},
		{Namespace: "ns", VMI: "vm", Dial: dial, Addr: "0.0.0.0:0"},
		{Namespace: "ns", VMI: "vm", Dial: dial, Addr: "[::]:8080"},
		{Namespace: "ns", VMI: "vm", Dial: dial, Addr: "example.com:80"},
		{Namespace: "ns", VMI: "vm", Dial: dial, Addr: "127.0.0.1"},
	} {
		if _, err := webconsole.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// TestPage serves the page with the VMI's name escaped, the vendored libraries as JavaScript,
// and no directory listings.
func TestPage(t *testing.T) {
	page, u := startServer(t, echoSocket(t))
	if !regexpSecret(u.Path) {
		t.Fatalf("page path %q does not carry a 128-bit hex secret", u.Path)
	}
	code, body := get(t, page, nil)
	if code != http.StatusOK || !strings.Contains(body, `content="vm&lt;1&gt;"`) || strings.Contains(body, "vm<1>") {
		t.Fatalf("page: %d %q", code, body)
	}
	for path, want := range map[string]string{
		"app.js":                    "import RFB",
		"vendor/novnc/core/rfb.js":  "export default class RFB",
		"vendor/xterm/lib/xterm.js": "Terminal",
		"vendor/novnc/vendor/pako/lib/zlib/inflate.js": "inflate",
	} {
		resp, err := http.Get(page + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	for _, path := range []string{"vendor/", "vendor/novnc/core/", "index.html", "nothing.js"} {
		if code, _ := get(t, page+path, nil); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
}

func regexpSecret(path string) bool {
	s := strings.Trim(path, "/")
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// TestRefused: an attacker who knows the port but not the secret, a page on another origin that
// knows the secret, and a DNS name rebound to 127.0.0.1 are all turned away.
func TestRefused(t *testing.T) {
	page, u := startServer(t, echoSocket(t))
	root := "http://" + u.Host
	tests := []struct {
		name   string
		url    string
		header map[string]string
		want   int
	}{
		{"no secret", root + "/", nil, http.StatusForbidden},
		{"no secret, a file", root + "/app.js", nil, http.StatusForbidden},
		{"wrong secret", root + "/0123456789abcdef0123456789abcdef/", nil, http.StatusForbidden},
		{"secret prefix", root + u.Path[:len(u.Path)-2] + "/", nil, http.StatusForbidden},
		{"rebound host", page, map[string]string{"Host": "attacker.example:" + u.Port()}, http.StatusForbidden},
		{"localhost host", page, map[string]string{"Host": "localhost:" + u.Port()}, http.StatusForbidden},
		{"foreign origin", page + "app.js", map[string]string{"Origin": "http://attacker.example"}, http.StatusForbidden},
		{"websocket without secret", root + "/ws/vnc", map[string]string{"Origin": root}, http.StatusForbidden},
		{"page", page, nil, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, _ := get(t, tt.url, tt.header); code != tt.want {
				t.Fatalf("GET %s: %d, want %d", tt.name, code, tt.want)
			}
		})
	}
	wsURL := "ws://" + u.Host + u.Path + "ws/console"
	for name, origin := range map[string]string{
		"foreign origin": "http://attacker.example",
		"other port":     "http://127.0.0.1:1",
		"null origin":    "null",
		"no origin":      "",
	} {
		t.Run("websocket "+name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h := http.Header{}
			if origin != "" {
				h.Set("Origin", origin)
			}
			c, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: h})
			if err == nil {
				_ = c.CloseNow()
				t.Fatal("websocket accepted")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("websocket: %v, want 403", err)
			}
		})
	}
}

// TestBridge carries bytes both ways between a websocket and the stream the Dialer opened.
func TestBridge(t *testing.T) {
	_, u := startServer(t, echoSocket(t))
	for path, kind := range map[string]string{"ws/console": subresources.Console, "ws/vnc": subresources.VNC} {
		t.Run(kind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, "ws://"+u.Host+u.Path+path, &websocket.DialOptions{
				Subprotocols: []string{subresources.BinaryProtocol},
				HTTPHeader:   http.Header{"Origin": {"http://" + u.Host}},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.CloseNow() }()
			if c.Subprotocol() != subresources.BinaryProtocol {
				t.Errorf("subprotocol %q", c.Subprotocol())
			}
			nc := websocket.NetConn(ctx, c, websocket.MessageBinary)
			if _, err := nc.Write([]byte("hello\x00\xff")); err != nil {
				t.Fatal(err)
			}
			want := kind + ":hello\x00\xff"
			got := make([]byte, len(want))
			if _, err := io.ReadFull(nc, got); err != nil || string(got) != want {
				t.Fatalf("read %q, %v; want %q", got, err, want)
			}
		})
	}
}

// TestStreamEnds closes the websocket when the VMI's stream ends.
func TestStreamEnds(t *testing.T) {
	dial := func(context.Context, string) (io.ReadWriteCloser, error) {
		a, b := net.Pipe()
		go func() { _, _ = b.Write([]byte("bye")); _ = b.Close() }()
		return a, nil
	}
	_, u := startServer(t, dial)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+u.Host+u.Path+"ws/console",
		&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://" + u.Host}}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.CloseNow() }()
	if _, b, err := c.Read(ctx); err != nil || string(b) != "bye" {
		t.Fatalf("read %q, %v", b, err)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after the stream ended: %v, want a normal close", err)
	}
}
