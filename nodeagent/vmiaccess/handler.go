package vmiaccess

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
	"github.com/slimvirt/slimvirt/runtime/control"
)

// callTimeout bounds a control command: a reboot or pause answers at once, the guest agent
// within seconds.
const callTimeout = 30 * time.Second

// handler routes subresources.NodePath(namespace, vmi, action) to the VMI's launcher.
type handler struct {
	launchers Launchers
	node      string
	log       *slog.Logger
}

// Handler is the endpoint's HTTP handler. It trusts that the TLS layer has verified the
// client and checks again that it is the aggregated server.
func Handler(l Launchers, node string, log *slog.Logger) http.Handler {
	h := &handler{launchers: l, node: node, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc(subresources.NodePath("{namespace}", "{name}", "{action}"), h.serve)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("no such path %q", r.URL.Path))
	})
	return mux
}

// action is what one subresource does: its method and its work on the launcher.
type action struct {
	method string
	serve  func(h *handler, w http.ResponseWriter, r *http.Request, l launcherwatch.Launcher)
}

var actions = map[string]action{
	subresources.Console:     {http.MethodGet, stream(launcherwatch.ConsoleSocket)},
	subresources.VNC:         {http.MethodGet, stream(launcherwatch.VNCSocket)},
	subresources.Pause:       {http.MethodPut, power(control.Pause)},
	subresources.Unpause:     {http.MethodPut, power(control.Unpause)},
	subresources.SoftReboot:  {http.MethodPut, power(control.Reboot)},
	subresources.GuestOSInfo: {http.MethodGet, (*handler).guestOSInfo},
	subresources.Freeze:      {http.MethodPut, (*handler).freeze},
	subresources.Unfreeze:    {http.MethodPut, power(control.Unfreeze)},
}

// maxFreezeBody bounds a freeze request's body (FreezeOptions, a few bytes).
const maxFreezeBody = 4 << 10

// freeze freezes the guest's filesystems for at most the request's unfreeze timeout
// (subresources.DefaultUnfreezeTimeout when none, refused above MaxUnfreezeTimeout).
func (h *handler) freeze(w http.ResponseWriter, r *http.Request, l launcherwatch.Launcher) {
	var opts subresources.FreezeOptions
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFreezeBody))
	if err == nil && len(bytes.TrimSpace(body)) > 0 {
		err = json.Unmarshal(body, &opts)
	}
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "freeze: the body is not freeze options: "+err.Error())
		return
	}
	timeout := subresources.DefaultUnfreezeTimeout
	if opts.UnfreezeTimeout != nil && opts.UnfreezeTimeout.Duration != 0 {
		timeout = opts.UnfreezeTimeout.Duration
	}
	if timeout < time.Second || timeout > subresources.MaxUnfreezeTimeout {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest,
			fmt.Sprintf("freeze: unfreezeTimeout %s is not between 1s and %s", timeout, subresources.MaxUnfreezeTimeout))
		return
	}
	power(control.FreezeCommand(timeout))(h, w, r, l)
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request) {
	if r.TLS != nil && !isAPIClient(*r.TLS) {
		writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, "only "+subresources.APIClientName+" may use this endpoint")
		return
	}
	ns, name, sub := r.PathValue("namespace"), r.PathValue("name"), r.PathValue("action")
	a, ok := actions[sub]
	if !ok {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("no subresource %q of virtualmachineinstances", sub))
		return
	}
	if r.Method != a.method {
		w.Header().Set("Allow", a.method)
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, fmt.Sprintf("%s takes %s, not %s", sub, a.method, r.Method))
		return
	}
	l, ok := h.find(ns, name)
	if !ok {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("virtualmachineinstance %s/%s is not running on node %s", ns, name, h.node))
		return
	}
	a.serve(h, w, r, l)
}

// find is the launcher of VMI namespace/name on this node; of a VMI's pods, one being deleted
// only when there is no other.
func (h *handler) find(namespace, name string) (launcherwatch.Launcher, bool) {
	var found launcherwatch.Launcher
	ok := false
	for _, l := range h.launchers.List() {
		if l.Pod.Namespace != namespace || l.VMI != name {
			continue
		}
		if !ok || (found.Pod.DeletionTimestamp != nil && l.Pod.DeletionTimestamp == nil) {
			found, ok = l, true
		}
	}
	return found, ok
}

// power sends cmd to the launcher's control socket.
func power(cmd string) func(*handler, http.ResponseWriter, *http.Request, launcherwatch.Launcher) {
	return func(h *handler, w http.ResponseWriter, r *http.Request, l launcherwatch.Launcher) {
		ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
		defer cancel()
		if _, err := l.Call(ctx, cmd); err != nil {
			h.launcherError(w, l, cmd, err)
			return
		}
		h.log.Info("VMI access", "vmi", l.Pod.Namespace+"/"+l.VMI, "command", cmd)
		w.WriteHeader(http.StatusOK)
	}
}

// guestOSInfo answers the guest agent's information (launcherpod.GuestInfo) as JSON.
func (h *handler) guestOSInfo(w http.ResponseWriter, r *http.Request, l launcherwatch.Launcher) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	out, err := l.Call(ctx, control.GuestInfo)
	if err != nil {
		h.launcherError(w, l, control.GuestInfo, err)
		return
	}
	// The reply comes from a socket the pod can replace: pass on only JSON (bounded by
	// control.MaxReply).
	if !json.Valid([]byte(out)) {
		h.launcherError(w, l, control.GuestInfo, errors.New("the launcher's answer is not JSON"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(out))
}

// maxMessage bounds the part of a launcher's error passed on: the pod may write anything.
const maxMessage = 1024

// launcherError answers a failure to reach the launcher or the launcher's refusal.
func (h *handler) launcherError(w http.ResponseWriter, l launcherwatch.Launcher, what string, err error) {
	vmi := l.Pod.Namespace + "/" + l.VMI
	h.log.Warn("VMI access failed", "vmi", vmi, "pod", l.Pod.Name, "request", what, "err", err)
	msg := err.Error()
	if len(msg) > maxMessage {
		msg = msg[:maxMessage] + "..."
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			fmt.Sprintf("virtualmachineinstance %s: %s is not available yet", vmi, what))
	case errors.Is(err, launcherwatch.ErrNotOwnFile):
		writeStatus(w, http.StatusBadGateway, metav1.StatusReasonInternalError,
			fmt.Sprintf("virtualmachineinstance %s: refused to use %s: the pod put something else in the launcher's place", vmi, what))
	case errors.Is(err, context.DeadlineExceeded):
		writeStatus(w, http.StatusGatewayTimeout, metav1.StatusReasonTimeout,
			fmt.Sprintf("virtualmachineinstance %s: %s: no answer in time", vmi, what))
	default:
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError,
			fmt.Sprintf("virtualmachineinstance %s: %s: %s", vmi, what, msg))
	}
}

// writeStatus answers a failure as the Kubernetes API does, with a metav1.Status, which the
// aggregated server passes on as it is.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	b, _ := json.Marshal(metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: reason, Code: int32(code),
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
