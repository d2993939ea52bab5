// Package uploadtokens issues upload tokens for DataVolumes. It keeps the Ed25519 key that
// signs them in a Secret of the controller's namespace and publishes the public half in a
// ConfigMap there, for the upload endpoints; both are made on first start and reused after.
package uploadtokens

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/api/uploadtoken"
)

// DefaultTTL is how long a token is good for when New is given no TTL.
const DefaultTTL = 5 * time.Minute

// Issuer signs upload tokens.
type Issuer struct {
	key ed25519.PrivateKey
	ttl time.Duration
	now func() time.Time
}

// New loads the signing key from the Secret subresources.UploadTokenKeySecret in namespace,
// making it if there is none, and makes sure the ConfigMap subresources.UploadTokenPublicConfigMap
// holds its public half. When two controllers start at once, the first Secret created wins and
// both use it. ttl 0 means DefaultTTL.
//
// owners become the owner references of the Secret and ConfigMap New makes (the controller's
// Deployment), so that uninstalling the controller removes them.
func New(ctx context.Context, cs kubernetes.Interface, namespace string, ttl time.Duration, log logr.Logger, owners ...metav1.OwnerReference) (*Issuer, error) {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 0 {
		return nil, fmt.Errorf("upload token lifetime %s is negative", ttl)
	}
	key, err := ensureKey(ctx, cs, namespace, log, owners)
	if err != nil {
		return nil, err
	}
	if err := publish(ctx, cs, namespace, key.Public().(ed25519.PublicKey), log, owners); err != nil {
		return nil, err
	}
	return &Issuer{key: key, ttl: ttl, now: time.Now}, nil
}

// Issue signs a token for uploads into the DataVolume namespace/dataVolume with that UID.
func (i *Issuer) Issue(_ context.Context, namespace, dataVolume string, uid types.UID) (string, time.Time, error) {
	now := i.now().UTC().Truncate(time.Second)
	c := uploadtoken.Claims{Namespace: namespace, DataVolume: dataVolume, UID: uid, IssuedAt: now, Expires: now.Add(i.ttl)}
	tok, err := uploadtoken.Sign(i.key, c)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue upload token for DataVolume %s/%s: %w", namespace, dataVolume, err)
	}
	return tok, c.Expires, nil
}

// PublicKey is the key tokens verify with.
func (i *Issuer) PublicKey() ed25519.PublicKey { return i.key.Public().(ed25519.PublicKey) }

// ensureKey reads the signing key, or makes and stores one. A Secret that holds no valid key is
// an error, not replaced: replacing it would silently cut off every token in flight and hide
// whatever damaged it.
func ensureKey(ctx context.Context, cs kubernetes.Interface, ns string, log logr.Logger, owners []metav1.OwnerReference) (ed25519.PrivateKey, error) {
	secrets := cs.CoreV1().Secrets(ns)
	s, err := secrets.Get(ctx, subresources.UploadTokenKeySecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, key, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, fmt.Errorf("make upload token key: %w", gerr)
		}
		pemKey, merr := uploadtoken.MarshalPrivateKey(key)
		if merr != nil {
			return nil, merr
		}
		s, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: subresources.UploadTokenKeySecret, Namespace: ns, OwnerReferences: owners},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{uploadtoken.PrivateKeyData: pemKey},
		}, metav1.CreateOptions{})
		if err == nil {
			log.Info("made the upload token key", "secret", ns+"/"+subresources.UploadTokenKeySecret)
		}
		if apierrors.IsAlreadyExists(err) {
			// Another controller made one first: use that.
			s, err = secrets.Get(ctx, subresources.UploadTokenKeySecret, metav1.GetOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("get or create Secret %s/%s: %w", ns, subresources.UploadTokenKeySecret, err)
	}
	key, err := uploadtoken.ParsePrivateKey(s.Data[uploadtoken.PrivateKeyData])
	if err != nil {
		return nil, fmt.Errorf("read the upload token key from Secret %s/%s (key %s): %w", ns, subresources.UploadTokenKeySecret, uploadtoken.PrivateKeyData, err)
	}
	return key, nil
}

// publish makes the ConfigMap hold pub; the Secret is the truth, so a ConfigMap holding another
// key (an older one, or tampered with) is overwritten.
func publish(ctx context.Context, cs kubernetes.Interface, ns string, pub ed25519.PublicKey, log logr.Logger, owners []metav1.OwnerReference) error {
	pubPEM, err := uploadtoken.MarshalPublicKey(pub)
	if err != nil {
		return err
	}
	cms := cs.CoreV1().ConfigMaps(ns)
	name := subresources.UploadTokenPublicConfigMap
	for attempt := 0; attempt < 5; attempt++ {
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, OwnerReferences: owners},
				Data:       map[string]string{uploadtoken.PublicKeyData: string(pubPEM)},
			}, metav1.CreateOptions{})
		case err != nil:
		case cm.Data[uploadtoken.PublicKeyData] == string(pubPEM):
			return nil
		default:
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			cm.Data[uploadtoken.PublicKeyData] = string(pubPEM)
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		}
		if err == nil {
			log.Info("published the upload token public key", "configMap", ns+"/"+name)
			return nil
		}
		if !apierrors.IsAlreadyExists(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("publish ConfigMap %s/%s: %w", ns, name, err)
		}
	}
	return errors.New("publish ConfigMap " + ns + "/" + name + ": it kept changing under us")
}
