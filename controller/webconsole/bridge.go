package webconsole

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/slimctl/subresource"
)

// dialTimeout bounds opening a stream through the kube-apiserver.
const dialTimeout = time.Minute

// bridge serves /vmis/NS/NAME/ws/{vnc,console}: it opens the VMI's stream through the
// kube-apiserver with the user's token, then upgrades the browser's request and copies bytes
// both ways until either side ends or the server stops. A stream the kube-apiserver refuses
// is answered with an accepted websocket that closes at once with code 4000+HTTP status and
// the refusal in words as the reason: a browser's script sees nothing of a failed handshake.
func (s *Server) bridge(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := vmiOf(w, r)
	if !ok {
		return
	}
	kind := map[string]string{"vnc": subresources.VNC, "console": subresources.Console}[r.PathValue("kind")]
	// A browser's script learns nothing of a failed handshake: the log says why.
	refuse := func(code int, msg string) {
		s.cfg.Log.Info("stream refused before the websocket", "namespace", ns, "vmi", name, "stream", kind,
			"remote", r.RemoteAddr, "code", code, "err", msg)
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="slimvirt"`)
		}
		writeError(w, code, msg)
	}
	switch {
	case kind == "":
		refuse(http.StatusNotFound, "not found")
		return
	case !strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		refuse(http.StatusBadRequest, "a websocket is required")
		return
	case r.Header.Get("Origin") == "":
		refuse(http.StatusForbidden, "websocket without Origin")
		return
	}
	token, err := tokenOf(r)
	if err != nil {
		refuse(http.StatusUnauthorized, err.Error())
		return
	}
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		refuse(http.StatusServiceUnavailable, "too many connections")
		return
	}
	log := s.cfg.Log.With("namespace", ns, "vmi", name, "stream", kind, "remote", r.RemoteAddr)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stream, dialErr := s.dial(ctx, token, ns, name, kind)
	// Our Origin check ran already; the library's own (Origin host equals Host) stays on as a
	// second lock. Only "binary" (or KubeVirt's name for it) is ever chosen: never the token.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{subresources.BinaryProtocol, subresources.PlainProtocol},
	})
	if err != nil {
		log.Warn("websocket upgrade failed", "err", err)
		if stream != nil {
			_ = stream.Close()
		}
		return
	}
	defer func() { _ = c.CloseNow() }()
	if dialErr != nil {
		code, msg := refusal(dialErr)
		log.Info("stream refused", "code", code, "err", dialErr)
		_ = c.Close(websocket.StatusCode(4000+code), closeReason(kind+": "+reasonOf(dialErr, msg)))
		return
	}
	log.Info("stream opened")
	err, other := pipe(ctx, c, stream)
	log.Debug("other direction ended", "err", other)
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Info("stream closed", "err", err)
		return
	}
	log.Info("stream closed")
}

// dial opens the stream with the user's token only.
func (s *Server) dial(ctx context.Context, token, ns, name, kind string) (io.ReadWriteCloser, error) {
	client, err := subresource.New(s.userConfig(token))
	if err != nil {
		return nil, fmt.Errorf("make subresource client: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	stream, err := client.Dial(dctx, subresources.VMIs, ns, name, kind)
	if err != nil {
		return nil, fmt.Errorf("open %s stream: %w", kind, err)
	}
	return stream, nil
}

// pipe copies both ways until one direction ends, then ends the other. It returns the end of
// the first direction, and of the other.
func pipe(ctx context.Context, c *websocket.Conn, stream io.ReadWriteCloser) (first, other error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = stream.Close() })
	defer stop()
	defer stream.Close()
	conn := websocket.NetConn(ctx, c, websocket.MessageBinary)
	errc := make(chan error, 2)
	go func() { _, err := io.Copy(stream, conn); errc <- err }()
	go func() { _, err := io.Copy(conn, stream); errc <- err }()
	first = <-errc
	_ = c.Close(websocket.StatusNormalClosure, "")
	cancel()
	return first, <-errc
}

// reasonOf is a refusal in words: the subresource client's plain account of it without the
// VMI's name (the page shows that), or msg.
func reasonOf(err error, msg string) string {
	var se *subresource.Error
	if errors.As(err, &se) {
		full := se.Error()
		if _, after, ok := strings.Cut(full, se.Namespace+"/"+se.Name+": "); ok {
			return after
		}
		return full
	}
	return msg
}

// closeReason keeps a close reason within the 123 bytes a close frame allows, whole runes only.
func closeReason(s string) string {
	for len(s) > 120 {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}
