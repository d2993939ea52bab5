package subresources

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	api "github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// uploadToken issues a token for uploading into a DataVolume that waits for an upload.
func (s *Server) uploadToken(w http.ResponseWriter, r *http.Request, t target) {
	ctx := r.Context()
	log := s.requestLog(ctx, t)
	dv := &v1.DataVolume{}
	if err := s.get(ctx, t, dv); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := uploadable(dv); err != nil {
		log.Info("refused", "reason", err.Error())
		s.writeError(w, r, err)
		return
	}
	token, expires, err := s.cfg.Tokens.Issue(ctx, dv.Namespace, dv.Name, dv.UID)
	if err != nil {
		log.Error("issue upload token", "error", err)
		s.writeError(w, r, apierrors.NewInternalError(fmt.Errorf("issue upload token for DataVolume %s", t)))
		return
	}
	log.Info("issued upload token", "uid", dv.UID, "expires", expires)
	body, err := json.Marshal(api.UploadTokenResponse{Token: token, Expires: expires.UTC().Format(time.RFC3339)})
	if err != nil {
		s.writeError(w, r, apierrors.NewInternalError(fmt.Errorf("encode upload token: %w", err)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body) // a client that went away gets nothing either way
}

// uploadable says why a DataVolume takes no upload, as the Status error to answer with.
func uploadable(dv *v1.DataVolume) error {
	gr := v1.GroupVersion.WithResource(api.DataVolumes).GroupResource()
	switch {
	case dv.Spec.Source.Upload == nil:
		return apierrors.NewBadRequest(fmt.Sprintf("DataVolume %s/%s has no upload source", dv.Namespace, dv.Name))
	case dv.DeletionTimestamp != nil:
		return apierrors.NewConflict(gr, dv.Name, errors.New("the DataVolume is being deleted"))
	case dv.Status.Phase == v1.DataVolumeSucceeded:
		return apierrors.NewConflict(gr, dv.Name, errors.New("the DataVolume is already filled (phase Succeeded)"))
	}
	return nil
}

// notImplemented is a 501 Status.
func notImplemented(message string) metav1.Status {
	return metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusNotImplemented,
		Message: message,
	}
}
