package vmiaccess

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/coder/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
)

// MaxMessage bounds a websocket message from the client: keystrokes and RFB messages are
// small, and a client must not make the agent buffer without bound.
const MaxMessage = 1 << 20

// protocols are the websocket subprotocols served; a client may also offer none.
var protocols = []string{subresources.PlainProtocol, subresources.BinaryProtocol}

// stream connects a websocket to the launcher's socket name: binary messages carry the
// stream's bytes both ways, and when either side ends both are closed.
func stream(name string) func(*handler, http.ResponseWriter, *http.Request, launcherwatch.Launcher) {
	return func(h *handler, w http.ResponseWriter, r *http.Request, l launcherwatch.Launcher) {
		if !offersKnownProtocol(r) {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest,
				"websocket subprotocols offered: "+strings.Join(r.Header.Values("Sec-WebSocket-Protocol"), ", ")+
					"; served: "+strings.Join(protocols, ", ")+" or none")
			return
		}
		// Connected before the upgrade, so that a launcher not there is an HTTP error.
		sock, err := l.Dial(r.Context(), name)
		if err != nil {
			h.launcherError(w, l, name, err)
			return
		}
		defer sock.Close()
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols: protocols,
			// The client is the aggregated server (mutual TLS), which passes on the user's
			// Origin; the user's browser can never reach this endpoint itself.
			InsecureSkipVerify: true,
			CompressionMode:    websocket.CompressionDisabled,
		})
		if err != nil {
			h.log.Info("websocket upgrade failed", "vmi", l.Pod.Namespace+"/"+l.VMI, "err", err)
			return // Accept has answered
		}
		vmi := l.Pod.Namespace + "/" + l.VMI
		h.log.Info("VMI stream opened", "vmi", vmi, "socket", name)
		err = bridge(ws, sock, r)
		h.log.Info("VMI stream closed", "vmi", vmi, "socket", name, "err", err)
	}
}

// bridge copies between ws and sock until either ends or the request's context does (the
// server stopping), then closes both and returns once both copies have.
func bridge(ws *websocket.Conn, sock net.Conn, r *http.Request) error {
	ctx := r.Context()
	conn := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	// After NetConn, which lifts the limit.
	ws.SetReadLimit(MaxMessage)
	// The first copy to end says why; the other ends on the closed connections.
	first := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := io.Copy(sock, conn)
		first <- err
	})
	wg.Go(func() {
		_, err := io.Copy(conn, sock)
		first <- err
	})
	err := <-first
	_ = sock.Close()
	_ = conn.Close()
	wg.Wait()
	var ce websocket.CloseError
	if errors.As(err, &ce) && (ce.Code == websocket.StatusNormalClosure || ce.Code == websocket.StatusGoingAway) {
		return nil
	}
	return err
}

// offersKnownProtocol says whether the client offers one of protocols, or none at all.
func offersKnownProtocol(r *http.Request) bool {
	offered := false
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			offered = true
			for _, s := range protocols {
				if strings.EqualFold(p, s) {
					return true
				}
			}
		}
	}
	return !offered
}
