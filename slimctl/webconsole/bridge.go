package webconsole

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/coder/websocket"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// bridge upgrades the request to a websocket and copies bytes both ways between it and one
// stream of kind from the Dialer, until either side ends or the server's context does.
func (h *handler) bridge(w http.ResponseWriter, r *http.Request, kind string) {
	select {
	case h.streams <- struct{}{}:
		defer func() { <-h.streams }()
	default:
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
		return
	}
	log := h.cfg.Log.With("stream", kind, "remote", r.RemoteAddr)
	// Origin was checked against our address already; the library's own check (Origin host
	// equals Host) stays on as a second lock.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{subresources.BinaryProtocol, subresources.PlainProtocol},
	})
	if err != nil {
		log.Warn("websocket upgrade failed", "err", err)
		return
	}
	defer func() { _ = c.CloseNow() }()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stream, err := h.cfg.Dial(ctx, kind)
	if err != nil {
		log.Warn("dial VMI stream failed", "err", err)
		_ = c.Close(websocket.StatusTryAgainLater, truncate("dial "+kind+": "+err.Error()))
		return
	}
	stop := context.AfterFunc(ctx, func() { _ = stream.Close() })
	defer stop()
	defer stream.Close()
	log.Info("stream opened")
	conn := websocket.NetConn(ctx, c, websocket.MessageBinary)
	errc := make(chan error, 2)
	go func() { _, err := io.Copy(stream, conn); errc <- err }()
	go func() { _, err := io.Copy(conn, stream); errc <- err }()
	err = <-errc
	_ = c.Close(websocket.StatusNormalClosure, "")
	cancel()
	log.Debug("other direction ended", "err", <-errc)
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Info("stream closed", "err", err)
		return
	}
	log.Info("stream closed")
}

// truncate keeps a close reason within the 123 bytes a websocket close frame allows.
func truncate(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}
