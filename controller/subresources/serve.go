package subresources

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	"k8s.io/apiserver/pkg/endpoints/request"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// serveSubresource answers every request under /apis/GROUP/ that is not discovery. The generic
// server has authenticated and authorized it by then.
func (s *Server) serveSubresource(w http.ResponseWriter, r *http.Request) {
	info, _ := request.RequestInfoFrom(r.Context())
	t, err := resolve(info, r.Method)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t.route.handle(s, w, r, t)
}

// requestLog is the log of one request, with who asked for what.
func (s *Server) requestLog(ctx context.Context, t target) *slog.Logger {
	user := "unknown"
	var groups []string
	if u, ok := request.UserFrom(ctx); ok {
		user, groups = u.GetName(), u.GetGroups()
	}
	return s.log.With("user", user, "groups", groups, "resource", t.resource, "subresource", t.subresource,
		"namespace", t.namespace, "name", t.name)
}

// writeError answers with err as a metav1.Status (an internal error when err is no
// APIStatus), in the encoding the client asked for.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	responsewriters.ErrorNegotiated(err, s.codecs, groupVersion(), w, r)
}

// get reads the target object; the error is the Status to answer with.
func (s *Server) get(ctx context.Context, t target, obj client.Object) error {
	err := s.cfg.Client.Get(ctx, client.ObjectKey{Namespace: t.namespace, Name: t.name}, obj)
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return apierrors.NewNotFound(t.groupResource(), t.name)
	default:
		// The controller's own errors (RBAC, timeouts) are not the caller's business in detail.
		s.log.Error("read object", "resource", t.resource, "namespace", t.namespace, "name", t.name, "error", err)
		return apierrors.NewInternalError(fmt.Errorf("read %s %s", t.resource, t))
	}
}
