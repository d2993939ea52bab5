package subresource_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/slimctl/subresource"
)

// direct serves h over TLS on loopback and returns a client of it that sends a bearer token,
// which h finds in the request.
func direct(t *testing.T, h http.HandlerFunc) *subresource.Client {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no credentials", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return newClient(t, &rest.Config{Host: srv.URL, BearerToken: "tok", TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
}

// serveStream upgrades with the plain protocol and hands the connection to f.
func serveStream(f func(*websocket.Conn)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{Subprotocols: []string{subresources.PlainProtocol}}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		f(ws)
	}
}

func dialConsole(t *testing.T, c *subresource.Client) io.ReadWriteCloser {
	t.Helper()
	s, err := c.Dial(context.Background(), subresources.VMIs, "ns", "x", subresources.Console)
	testutil.Must(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestStreamEnds(t *testing.T) {
	t.Run("a normal close is EOF", func(t *testing.T) {
		s := dialConsole(t, direct(t, serveStream(func(ws *websocket.Conn) {
			_ = ws.WriteMessage(websocket.BinaryMessage, []byte("bye"))
			_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			_, _, _ = ws.ReadMessage()
		})))
		b, err := io.ReadAll(s)
		if err != nil || string(b) != "bye" {
			t.Errorf("read %q, %v", b, err)
		}
	})
	t.Run("a server error is an error", func(t *testing.T) {
		s := dialConsole(t, direct(t, serveStream(func(ws *websocket.Conn) {
			_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "VMI x is not running"))
			_, _, _ = ws.ReadMessage()
		})))
		_, err := io.ReadAll(s)
		if err == nil || !strings.Contains(err.Error(), "VMI x is not running") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("a text message is refused", func(t *testing.T) {
		s := dialConsole(t, direct(t, serveStream(func(ws *websocket.Conn) {
			_ = ws.WriteMessage(websocket.TextMessage, []byte("\x1b]0;title\x07"))
			_, _, _ = ws.ReadMessage()
		})))
		b, err := io.ReadAll(s)
		if err == nil || len(b) != 0 || !strings.Contains(err.Error(), "binary messages only") {
			t.Errorf("read %q, %v", b, err)
		}
	})
}

// TestDialRefusesOtherProtocols: a stream in a framing slimctl does not speak is refused.
func TestDialRefusesOtherProtocols(t *testing.T) {
	c := direct(t, func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, http.Header{"Sec-Websocket-Protocol": {"base64.channel.k8s.io"}})
		if err == nil {
			_, _, _ = ws.ReadMessage()
			_ = ws.Close()
		}
	})
	_, err := c.Dial(context.Background(), subresources.VMIs, "ns", "x", subresources.VNC)
	if err == nil || !strings.Contains(err.Error(), `the server chose the websocket protocol "base64.channel.k8s.io"`) {
		t.Errorf("got %v", err)
	}
}

// TestHostileAnswers: what reaches the user's terminal from a refusal has no control
// characters, and a guest agent's answer is bounded.
func TestHostileAnswers(t *testing.T) {
	c := direct(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/"+subresources.GuestOSInfo) {
			_, _ = w.Write([]byte(`{"x":"` + strings.Repeat("a", 2<<20) + `"}`))
			return
		}
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>\x1b[2J\x1b]0;pwned\x07 upstream gone</html>"))
	})
	ctx := context.Background()
	_, err := c.Get(ctx, subresources.VMIs, "ns", "x", subresources.GuestOSInfo)
	if err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("a 2 MiB answer: got %v", err)
	}
	for name, err := range map[string]error{
		"put":  c.Put(ctx, subresources.VMIs, "ns", "x", subresources.Pause),
		"dial": func() error { _, err := c.Dial(ctx, subresources.VMIs, "ns", "x", subresources.VNC); return err }(),
	} {
		var se *subresource.Error
		if !errors.As(err, &se) || se.ServerStatus.Code != http.StatusBadGateway {
			t.Errorf("%s: got %v, want the 502", name, err)
			continue
		}
		if strings.ContainsAny(err.Error(), "\x1b\x07") || !strings.Contains(err.Error(), "upstream gone") {
			t.Errorf("%s: %q", name, err)
		}
	}
}
