package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/api/uploadtoken"
)

// RequestToken asks the aggregated API for an upload token of the DataVolume namespace/name:
// POST subresources.APIPath(datavolumes, namespace, name, uploadtoken) through kube, a REST
// client of the kube-apiserver made from the caller's kubeconfig (for example
// clientset.CoreV1().RESTClient()). The caller's credentials go to the kube-apiserver only.
func RequestToken(ctx context.Context, kube rest.Interface, namespace, name string) (string, time.Time, error) {
	path := subresources.APIPath(subresources.DataVolumes, namespace, name, subresources.UploadToken)
	body, err := kube.Post().AbsPath(path).SetHeader("Content-Type", "application/json").Body([]byte("{}")).DoRaw(ctx)
	switch {
	case apierrors.IsNotFound(err):
		return "", time.Time{}, fmt.Errorf("get an upload token for DataVolume %s/%s: %w (is the DataVolume there, and the aggregated API %s "+
			"registered and available? kubectl get apiservice %s)", namespace, name, err, subresources.Group, subresources.APIServiceName)
	case apierrors.IsForbidden(err):
		return "", time.Time{}, fmt.Errorf("get an upload token for DataVolume %s/%s: %w (uploading needs create on %s/%s in group %s)",
			namespace, name, err, subresources.DataVolumes, subresources.UploadToken, subresources.Group)
	case err != nil:
		return "", time.Time{}, fmt.Errorf("get an upload token for DataVolume %s/%s: %w", namespace, name, err)
	}
	var r subresources.UploadTokenResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return "", time.Time{}, fmt.Errorf("decode the upload token answer for DataVolume %s/%s: %w", namespace, name, err)
	}
	if r.Token == "" || len(r.Token) > uploadtoken.MaxLen {
		return "", time.Time{}, fmt.Errorf("the upload token answer for DataVolume %s/%s holds no usable token (%d bytes)", namespace, name, len(r.Token))
	}
	exp, err := time.Parse(time.RFC3339, r.Expires)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("the upload token answer for DataVolume %s/%s: expires %q: %w", namespace, name, r.Expires, err)
	}
	return r.Token, exp, nil
}
