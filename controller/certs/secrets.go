package certs

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// Keys of the Secrets.
const (
	keyCert = corev1.TLSCertKey       // tls.crt
	keyKey  = corev1.TLSPrivateKeyKey // tls.key
	keyCA   = "ca.crt"
)

// attempts bounds the read-modify-write rounds lost to another replica in one check.
const attempts = 3

// ensureCA returns the CA in the CA Secret, creating or replacing it when it is missing,
// unreadable or due for renewal. Of replicas racing to create or replace it, one wins and the
// others read its CA.
func (m *Manager) ensureCA(ctx context.Context, now time.Time) (*keyPair, error) {
	secrets := m.cfg.Client.CoreV1().Secrets(m.cfg.Namespace)
	for range attempts {
		s, err := secrets.Get(ctx, subresources.CASecret, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			s = nil // client-go returns an empty object with the error
		case err != nil:
			return nil, fmt.Errorf("get secret %s: %w", subresources.CASecret, err)
		}
		if s != nil {
			kp, err := parseKeyPair(s.Data[keyCert], s.Data[keyKey])
			if err == nil {
				err = validCA(kp, now)
			}
			if err == nil {
				return kp, nil
			}
			m.log.Warn("replacing the CA", "secret", subresources.CASecret, "reason", err.Error())
		}
		ca, err := newCA(now)
		if err != nil {
			return nil, fmt.Errorf("make CA: %w", err)
		}
		data := map[string][]byte{keyCert: ca.certPEM, keyKey: ca.keyPEM}
		lost, err := m.writeSecret(ctx, s, subresources.CASecret, data)
		if err != nil {
			return nil, err
		}
		if lost {
			continue
		}
		m.log.Info("made a new CA", "secret", subresources.CASecret, "serial", ca.cert.SerialNumber.Text(16))
		return ca, nil
	}
	return nil, fmt.Errorf("write secret %s: lost %d races to other writers", subresources.CASecret, attempts)
}

// ensureNodeSecret makes sure the node agents' Secret holds a serving certificate of ca that
// is not due for renewal, with ca as ca.crt; it writes the Secret only if not.
func (m *Manager) ensureNodeSecret(ctx context.Context, ca *keyPair, now time.Time) error {
	secrets := m.cfg.Client.CoreV1().Secrets(m.cfg.Namespace)
	for range attempts {
		s, err := secrets.Get(ctx, subresources.NodeAccessSecret, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			s = nil // client-go returns an empty object with the error
		case err != nil:
			return fmt.Errorf("get secret %s: %w", subresources.NodeAccessSecret, err)
		}
		if s != nil && nodeSecretCurrent(s, ca, now) {
			return nil
		}
		leaf, err := issue(ca, nodeServingSpec, now, m.cfg.LeafValidity)
		if err != nil {
			return fmt.Errorf("issue node agent serving certificate: %w", err)
		}
		data := map[string][]byte{keyCert: leaf.certPEM, keyKey: leaf.keyPEM, keyCA: ca.certPEM}
		lost, err := m.writeSecret(ctx, s, subresources.NodeAccessSecret, data)
		if err != nil {
			return err
		}
		if lost {
			continue
		}
		m.log.Info("issued the node agents' serving certificate", "secret", subresources.NodeAccessSecret,
			"serial", leaf.cert.SerialNumber.Text(16), "notAfter", leaf.cert.NotAfter)
		return nil
	}
	return fmt.Errorf("write secret %s: lost %d races to other writers", subresources.NodeAccessSecret, attempts)
}

func nodeSecretCurrent(s *corev1.Secret, ca *keyPair, now time.Time) bool {
	if !bytes.Equal(s.Data[keyCA], ca.certPEM) {
		return false
	}
	kp, err := parseKeyPair(s.Data[keyCert], s.Data[keyKey])
	return err == nil && validLeaf(kp.cert, ca.cert, nodeServingSpec, now)
}

// writeSecret creates the Secret name with data if old is nil, or else updates old (keeping its
// other keys). lost is true if another writer got there first: the caller reads again.
func (m *Manager) writeSecret(ctx context.Context, old *corev1.Secret, name string, data map[string][]byte) (lost bool, err error) {
	secrets := m.cfg.Client.CoreV1().Secrets(m.cfg.Namespace)
	if old == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "slimvirt-controller"},
				OwnerReferences: m.cfg.Owners},
			Type: corev1.SecretTypeTLS,
			Data: data,
		}
		_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			m.log.Info("another writer created the secret first", "secret", name)
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("create secret %s: %w", name, err)
		}
		return false, nil
	}
	s := old.DeepCopy()
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	maps.Copy(s.Data, data)
	// The update carries old's resourceVersion, so it fails if anyone wrote in between.
	_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		m.log.Info("another writer changed the secret first", "secret", name)
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("update secret %s: %w", name, err)
	}
	return false, nil
}
