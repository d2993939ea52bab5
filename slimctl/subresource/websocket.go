package subresource

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// handshakeTimeout bounds the websocket's opening handshake.
const handshakeTimeout = 45 * time.Second

// Dial opens the websocket of a console or VNC subresource, for example
// Dial(ctx, subresources.VMIs, ns, name, subresources.VNC), offering subresources.PlainProtocol.
// The stream's bytes travel as binary websocket messages; Read reports io.EOF when the server
// closes the stream normally. ctx bounds the opening only: Close ends the stream.
func (c *Client) Dial(ctx context.Context, resource, namespace, name, sub string) (io.ReadWriteCloser, error) {
	fail := func(err error) error {
		return fmt.Errorf("%s %s %s/%s: %w", sub, kindOf(resource), namespace, name, err)
	}
	u, _, err := rest.DefaultServerUrlFor(c.config)
	if err != nil {
		return nil, fail(fmt.Errorf("parse the server's URL: %w", err))
	}
	u.Path = path.Join("/", u.Path, subresources.APIPath(resource, namespace, name, sub))
	tcfg, err := c.config.TransportConfig()
	if err != nil {
		return nil, fail(fmt.Errorf("load credentials: %w", err))
	}
	tlsConfig, err := transport.TLSConfigFor(tcfg)
	if err != nil {
		return nil, fail(fmt.Errorf("load TLS settings: %w", err))
	}
	proxy := c.config.Proxy
	if proxy == nil {
		proxy = utilnet.NewProxierWithNoProxyCIDR(http.ProxyFromEnvironment)
	}
	up := &upgrader{tls: tlsConfig, proxy: proxy}
	// The wrappers add the credentials (bearer token, exec plugin) as for any request.
	rt, err := transport.HTTPWrappersForConfig(tcfg, up)
	if err != nil {
		return nil, fail(fmt.Errorf("load credentials: %w", err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fail(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, fail(err)
	}
	defer resp.Body.Close()
	if up.conn == nil {
		return nil, &Error{Subresource: sub, Resource: resource, Namespace: namespace, Name: name, ServerStatus: statusOf(resp)}
	}
	if p := up.conn.Subprotocol(); p != "" && p != subresources.PlainProtocol {
		_ = up.conn.Close() // refused: nothing was sent on it
		return nil, fail(fmt.Errorf("the server chose the websocket protocol %q; slimctl speaks %q", p, subresources.PlainProtocol))
	}
	return &conn{ws: up.conn}, nil
}

// upgrader is the innermost round tripper of Dial: it performs the websocket handshake and
// keeps the connection. An answer other than 101 is returned as a response, so the caller
// reads the server's status from it.
type upgrader struct {
	tls   *tls.Config
	proxy func(*http.Request) (*url.URL, error)
	conn  *websocket.Conn
}

func (u *upgrader) RoundTrip(req *http.Request) (*http.Response, error) {
	d := websocket.Dialer{
		Proxy:            u.proxy,
		TLSClientConfig:  u.tls,
		Subprotocols:     []string{subresources.PlainProtocol},
		HandshakeTimeout: handshakeTimeout,
	}
	target := *req.URL
	switch target.Scheme {
	case "https":
		target.Scheme = "wss"
	case "http":
		target.Scheme = "ws"
	default:
		return nil, fmt.Errorf("unknown URL scheme %q", target.Scheme)
	}
	ws, resp, err := d.DialContext(req.Context(), target.String(), req.Header)
	if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
		return resp, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open websocket: %w", err)
	}
	u.conn = ws
	return resp, nil
}

// conn carries a byte stream in binary websocket messages.
type conn struct {
	ws      *websocket.Conn
	r       io.Reader // the message being read
	readErr error     // sticky: gorilla must not be read again after a failure
	wmu     sync.Mutex
	once    sync.Once
}

func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for c.readErr == nil {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			switch {
			case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway):
				c.readErr = io.EOF
			case err != nil:
				c.readErr = fmt.Errorf("read websocket: %w", err)
			case typ != websocket.BinaryMessage:
				c.readErr = fmt.Errorf("read websocket: a text message; %s carries binary messages only", subresources.PlainProtocol)
			default:
				c.r = r
			}
			continue
		}
		n, err := c.r.Read(p)
		switch {
		case errors.Is(err, io.EOF):
			c.r, err = nil, nil
		case err != nil:
			c.readErr = fmt.Errorf("read websocket: %w", err)
			err = c.readErr
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, c.readErr
}

func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, fmt.Errorf("write websocket: %w", err)
	}
	return len(p), nil
}

// Close says goodbye to the server (briefly: a dead peer must not hold it up) and closes the
// connection; a Read blocked in another goroutine returns.
func (c *conn) Close() error {
	var err error
	c.once.Do(func() {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)) // best effort: the peer may be gone
		err = c.ws.Close()
	})
	return err
}
