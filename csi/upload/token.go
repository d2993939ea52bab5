package upload

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/api/uploadtoken"
	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

const (
	// DefaultKeyMaxAge is how long the public key read from the ConfigMap is used before it is
	// read again, so a new key is picked up within it.
	DefaultKeyMaxAge = 30 * time.Second
	// keyRefetchGap: a token whose signature does not match the cached key makes the endpoint
	// read the key again (the key may just have changed), at most this often.
	keyRefetchGap = time.Second
	// keyStaleLimit is how long a key read earlier is still used while the API server cannot be
	// reached.
	keyStaleLimit = 5 * time.Minute
)

// keySource reads the upload token public key from the ConfigMap and keeps it for a while.
type keySource struct {
	cs     kubernetes.Interface
	ns     string
	maxAge time.Duration

	mu      sync.Mutex
	key     ed25519.PublicKey
	fetched time.Time
}

// get returns the key, read again when it is older than maxAge, or (refresh) older than
// keyRefetchGap.
func (k *keySource) get(ctx context.Context, refresh bool) (ed25519.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	age := time.Since(k.fetched)
	if k.key != nil && age < k.maxAge && (!refresh || age < keyRefetchGap) {
		return k.key, nil
	}
	key, err := k.read(ctx)
	if err != nil {
		if k.key != nil && age < keyStaleLimit {
			return k.key, nil
		}
		return nil, err
	}
	k.key, k.fetched = key, time.Now()
	return key, nil
}

func (k *keySource) read(ctx context.Context) (ed25519.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	name := subresources.UploadTokenPublicConfigMap
	cm, err := k.cs.CoreV1().ConfigMaps(k.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get ConfigMap %s/%s: %w", k.ns, name, err)
	}
	key, err := uploadtoken.ParsePublicKey([]byte(cm.Data[uploadtoken.PublicKeyData]))
	if err != nil {
		return nil, fmt.Errorf("read the upload token key from ConfigMap %s/%s (key %s): %w", k.ns, name, uploadtoken.PublicKeyData, err)
	}
	return key, nil
}

// refusal is why a request is not served: its HTTP status and message.
type refusal struct {
	code int
	msg  string
}

// authorize checks the request's upload token for the DataVolume ns/name and returns the token's
// claims and the DataVolume's PVC, or why it is refused.
func (s *Server) authorize(r *http.Request, ns, name string) (uploadtoken.Claims, *corev1.PersistentVolumeClaim, *refusal) {
	var c uploadtoken.Claims
	h := r.Header.Get(subresources.UploadTokenHeader)
	tok, ok := strings.CutPrefix(h, "Bearer ")
	switch {
	case h == "":
		return c, nil, &refusal{http.StatusUnauthorized, "an upload token is required (Authorization: Bearer <token>); slimctl image-upload gets one from " +
			subresources.APIPath(subresources.DataVolumes, ns, name, subresources.UploadToken)}
	case !ok:
		return c, nil, &refusal{http.StatusUnauthorized, "the Authorization header must be: Bearer <upload token>"}
	}
	c, err := s.verify(r.Context(), strings.TrimSpace(tok), ns, name)
	switch {
	case errors.Is(err, uploadtoken.ErrOtherDataVolume):
		return c, nil, &refusal{http.StatusForbidden, err.Error()}
	case errors.Is(err, uploadtoken.ErrInvalid) || errors.Is(err, uploadtoken.ErrExpired):
		return c, nil, &refusal{http.StatusUnauthorized, err.Error()}
	case err != nil:
		return c, nil, &refusal{http.StatusServiceUnavailable, "cannot check upload tokens: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	pvc, err := s.cfg.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return c, nil, &refusal{http.StatusNotFound, fmt.Sprintf("DataVolume %s/%s has no PVC (yet)", ns, name)}
	}
	if err != nil {
		return c, nil, &refusal{http.StatusServiceUnavailable, fmt.Sprintf("get PVC %s/%s: %v", ns, name, err)}
	}
	if msg := ownedBy(pvc, name, c.UID); msg != "" {
		return c, nil, &refusal{http.StatusForbidden, msg}
	}
	return c, pvc, nil
}

// verify checks the token with the published key; a signature that does not match makes the
// key be read again once, in case it has just changed.
func (s *Server) verify(ctx context.Context, tok, ns, name string) (uploadtoken.Claims, error) {
	key, err := s.keys.get(ctx, false)
	if err != nil {
		return uploadtoken.Claims{}, err
	}
	c, err := uploadtoken.Verify(key, tok, time.Now(), ns, name)
	if !errors.Is(err, uploadtoken.ErrInvalid) {
		return c, err
	}
	fresh, ferr := s.keys.get(ctx, true)
	if ferr != nil || fresh.Equal(key) {
		return c, err
	}
	return uploadtoken.Verify(fresh, tok, time.Now(), ns, name)
}

// ownedBy says why pvc is not the volume of the DataVolume name with that UID ("" when it is):
// the PVC's controller must be that very DataVolume, not an earlier one of the same name.
func ownedBy(pvc *corev1.PersistentVolumeClaim, name string, uid types.UID) string {
	o := metav1.GetControllerOf(pvc)
	if o == nil {
		return fmt.Sprintf("PVC %s/%s is not a DataVolume's", pvc.Namespace, pvc.Name)
	}
	gv, _ := schema.ParseGroupVersion(o.APIVersion)
	if gv.Group != v1alpha1.GroupVersion.Group || o.Kind != "DataVolume" || o.Name != name {
		return fmt.Sprintf("PVC %s/%s is held by %s %s, not DataVolume %s", pvc.Namespace, pvc.Name, o.Kind, o.Name, name)
	}
	if o.UID != uid {
		return fmt.Sprintf("the upload token is for an earlier DataVolume %s/%s (UID %s); this one is UID %s: get a new token",
			pvc.Namespace, name, uid, o.UID)
	}
	return ""
}
