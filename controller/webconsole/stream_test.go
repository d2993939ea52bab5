package webconsole_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/controller/webconsole"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

var apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// standIn plays slimvirt's aggregated server behind the kube-apiserver: discovery and an echoing
// console websocket that greets with the user the kube-apiserver says it proxies for.
type standIn struct {
	mu    sync.Mutex
	users []string
}

func (f *standIn) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.users...)
}

func (f *standIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	gv := "/apis/" + subresources.Group + "/" + subresources.Version
	switch {
	case r.URL.Path == gv:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
			GroupVersion: subresources.Group + "/" + subresources.Version})
	case strings.HasSuffix(r.URL.Path, "/"+subresources.Console) || strings.HasSuffix(r.URL.Path, "/"+subresources.VNC):
		user := r.Header.Get("X-Remote-User")
		f.mu.Lock()
		f.users = append(f.users, user)
		f.mu.Unlock()
		up := gorilla.Upgrader{Subprotocols: []string{subresources.PlainProtocol}}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		if ws.WriteMessage(gorilla.BinaryMessage, []byte("hello "+user+"\n")) != nil {
			return
		}
		for {
			typ, b, err := ws.ReadMessage()
			if err != nil || ws.WriteMessage(typ, b) != nil {
				return
			}
		}
	default:
		http.NotFound(w, r)
	}
}

// registerStandIn registers subresources.slimvirt.io with the aggregator, pointing through an
// ExternalName Service at a stand-in TLS server on loopback, and waits until it answers.
func registerStandIn(t *testing.T) *standIn {
	t.Helper()
	ctx := context.Background()
	f := &standIn{}
	srv := httptest.NewUnstartedServer(f)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	testutil.Must(t, env.Namespace(ctx, "slimvirt"))
	_, err := env.Clientset.CoreV1().Services("slimvirt").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: subresources.ServiceName},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "127.0.0.1"},
	}, metav1.CreateOptions{})
	testutil.Must(t, err)
	dyn, err := dynamic.NewForConfig(env.Config)
	testutil.Must(t, err)
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": subresources.APIServiceName},
		"spec": map[string]any{
			"group": subresources.Group, "version": subresources.Version,
			"groupPriorityMinimum": int64(1000), "versionPriority": int64(15),
			"insecureSkipTLSVerify": true,
			"service":               map[string]any{"namespace": "slimvirt", "name": subresources.ServiceName, "port": int64(port)},
		},
	}}
	_, err = dyn.Resource(apiServices).Create(ctx, obj, metav1.CreateOptions{})
	testutil.Must(t, err)
	t.Cleanup(func() {
		err := dyn.Resource(apiServices).Delete(ctx, subresources.APIServiceName, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
		_ = env.Clientset.CoreV1().Services("slimvirt").Delete(ctx, subresources.ServiceName, metav1.DeleteOptions{})
	})
	testutil.WaitFor(t, time.Minute, "aggregated API available", func() bool {
		err := env.Clientset.Discovery().RESTClient().Get().AbsPath("/apis/" + subresources.Group + "/" + subresources.Version).Do(ctx).Error()
		return err == nil
	})
	return f
}

// tokenProtocol is the subprotocol a browser offers to carry a token.
func tokenProtocol(tok string) string {
	return webconsole.TokenProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(tok))
}

// dialWS opens a console server's websocket as a browser on the page's own origin does.
func dialWS(ctx context.Context, base, path string, protocols []string, header http.Header) (*websocket.Conn, *http.Response, error) {
	if header == nil {
		header = http.Header{}
	}
	if header.Get("Origin") == "" {
		header.Set("Origin", base)
	}
	return websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+path, &websocket.DialOptions{
		Subprotocols: protocols, HTTPHeader: header})
}

// TestConsoleStream: bytes flow from the browser's websocket through the console server and
// the kube-apiserver to the aggregated server (a stand-in) and back, as the user whose token
// the browser offered; the token subprotocol is never chosen. A user without the console
// subresource gets a websocket that closes with 4403 and "forbidden"; a foreign Origin and a
// missing token are refused before any upgrade; tokens stay out of the log.
func TestConsoleStream(t *testing.T) {
	base, logs := startConsole(t)
	f := registerStandIn(t)
	alice, viewer := token(t, "ns-ws", "alice"), token(t, "ns-ws", "viewer")
	grant(t, "ns-ws", "alice", subresources.Group, []string{"virtualmachineinstances/console", "virtualmachineinstances/vnc"}, []string{"get"})
	grant(t, "ns-ws", "viewer", "slimvirt.io", []string{"virtualmachineinstances"}, []string{"get", "list"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("subprotocol token", func(t *testing.T) {
		c, resp, err := dialWS(ctx, base, "/vmis/ns-ws/vm1/ws/console", []string{"binary", tokenProtocol(alice)}, nil)
		testutil.Must(t, err)
		defer func() { _ = c.CloseNow() }()
		if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != "binary" {
			t.Errorf("server chose protocol %q, want binary", p)
		}
		echo(ctx, t, c, "system:serviceaccount:ns-ws:alice")
	})
	t.Run("proxy header", func(t *testing.T) {
		c, _, err := dialWS(ctx, base, "/vmis/ns-ws/vm1/ws/vnc", []string{"binary"}, http.Header{"Authorization": {"Bearer " + alice}})
		testutil.Must(t, err)
		defer func() { _ = c.CloseNow() }()
		echo(ctx, t, c, "system:serviceaccount:ns-ws:alice")
	})
	t.Run("forbidden", func(t *testing.T) {
		c, _, err := dialWS(ctx, base, "/vmis/ns-ws/vm1/ws/console", []string{"binary", tokenProtocol(viewer)}, nil)
		testutil.Must(t, err)
		defer func() { _ = c.CloseNow() }()
		_, _, err = c.Read(ctx)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4403 || !strings.HasPrefix(ce.Reason, "console: forbidden: ") {
			t.Fatalf("viewer: got %v, want close 4403 with console: forbidden", err)
		}
		t.Log("viewer reads:", ce.Reason)
	})
	refusedBeforeUpgrade(ctx, t, base, alice)
	if got := f.seen(); len(got) != 2 || got[0] != "system:serviceaccount:ns-ws:alice" || got[1] != got[0] {
		t.Errorf("the aggregated server saw users %q, want alice twice", got)
	}
	noTokens(t, logs.String(), alice, viewer)
}

// echo reads the stand-in's greeting and sends a quarter MiB, in odd pieces, that must come back.
func echo(ctx context.Context, t *testing.T, c *websocket.Conn, user string) {
	t.Helper()
	conn := websocket.NetConn(ctx, c, websocket.MessageBinary)
	greeting := "hello " + user + "\n"
	got := make([]byte, len(greeting))
	_, err := readFull(conn, got)
	testutil.Must(t, err)
	if string(got) != greeting {
		t.Fatalf("greeting %q, want %q", got, greeting)
	}
	payload := make([]byte, 256<<10)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() {
		for b := payload; len(b) > 0; b = b[min(len(b), 3001):] {
			if _, err := conn.Write(b[:min(len(b), 3001)]); err != nil {
				return
			}
		}
	}()
	back := make([]byte, len(payload))
	_, err = readFull(conn, back)
	testutil.Must(t, err)
	if !bytes.Equal(back, payload) {
		t.Error("the echo differs from what was sent")
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// refusedBeforeUpgrade: requests the server answers with an HTTP status, not a websocket.
func refusedBeforeUpgrade(ctx context.Context, t *testing.T, base, tok string) {
	for _, tc := range []struct {
		name, path string
		protocols  []string
		header     http.Header
		want       int
	}{
		{"foreign origin", "/vmis/ns-ws/vm1/ws/console", []string{"binary", tokenProtocol(tok)}, http.Header{"Origin": {"http://evil.example"}}, http.StatusForbidden},
		{"origin on another port", "/vmis/ns-ws/vm1/ws/console", []string{"binary", tokenProtocol(tok)}, http.Header{"Origin": {"http://127.0.0.1:1"}}, http.StatusForbidden},
		{"no token", "/vmis/ns-ws/vm1/ws/console", []string{"binary"}, nil, http.StatusUnauthorized},
		{"token not base64url", "/vmis/ns-ws/vm1/ws/console", []string{"binary", webconsole.TokenProtocolPrefix + "a+b/c="}, nil, http.StatusUnauthorized},
		{"oversized token", "/vmis/ns-ws/vm1/ws/console", []string{"binary", tokenProtocol(strings.Repeat("a", webconsole.MaxTokenBytes+1))}, nil, http.StatusUnauthorized},
		{"bad namespace", "/vmis/NS/vm1/ws/console", []string{"binary", tokenProtocol(tok)}, nil, http.StatusBadRequest},
		{"bad name", "/vmis/ns-ws/vm_1/ws/console", []string{"binary", tokenProtocol(tok)}, nil, http.StatusBadRequest},
		{"unknown stream", "/vmis/ns-ws/vm1/ws/ssh", []string{"binary", tokenProtocol(tok)}, nil, http.StatusNotFound},
	} {
		c, resp, err := dialWS(ctx, base, tc.path, tc.protocols, tc.header)
		if err == nil {
			_ = c.CloseNow()
			t.Errorf("%s: the websocket opened", tc.name)
			continue
		}
		if resp == nil || resp.StatusCode != tc.want {
			t.Errorf("%s: got %v (%v), want HTTP %d", tc.name, resp, err, tc.want)
		}
	}
}
