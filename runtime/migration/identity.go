// Package migration moves a running libvirt domain from one launcher pod to another: a
// mutually authenticated TLS 1.3 channel between the two pods carries libvirt's RPC, QEMU's
// migration stream and the NBD stream of the disk copy, each from a unix socket on the source
// to its counterpart on the target; Migrate drives libvirt's peer-to-peer live migration over
// those sockets, copying the pod's local disks.
package migration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Identity is one side's credential for one migration: an ephemeral P-256 key, never written
// anywhere, and a self-signed certificate for it. The peer knows it only by its Pin, handed
// over out of band; there is no CA to trust or revoke.
type Identity struct {
	cert tls.Certificate
	leaf *x509.Certificate
	pin  string
}

// NewIdentity makes a fresh identity valid for lifetime.
func NewIdentity(name string, lifetime time.Duration) (*Identity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate migration key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{serverName},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create migration certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse migration certificate: %w", err)
	}
	return &Identity{
		cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		leaf: leaf,
		pin:  pinOf(der),
	}, nil
}

// Pin is what the peer must be told to accept this identity: the SHA-256 of its certificate,
// in hex. It is no secret.
func (id *Identity) Pin() string { return id.pin }

// serverName is the name both sides use in the handshake; the pin, not the name, is checked.
const serverName = "migration.slimvirt.io"

func pinOf(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ValidatePin refuses what is not a pin.
func ValidatePin(pin string) error {
	b, err := hex.DecodeString(pin)
	if err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != pin {
		return fmt.Errorf("pin %.80q is not %d lowercase hex digits", pin, 2*sha256.Size)
	}
	return nil
}

// errPeer is a peer that is not the one pinned.
var errPeer = errors.New("the peer's certificate is not the pinned one")

// verifyPeer accepts exactly one certificate, the pinned one, while it is valid.
func verifyPeer(pin string, now func() time.Time) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) != 1 {
			return fmt.Errorf("%w: %d certificates", errPeer, len(cs.PeerCertificates))
		}
		c := cs.PeerCertificates[0]
		if subtle.ConstantTimeCompare([]byte(pinOf(c.Raw)), []byte(pin)) != 1 {
			return errPeer
		}
		if t := now(); t.Before(c.NotBefore) || t.After(c.NotAfter) {
			return fmt.Errorf("the peer's certificate is not valid at %s", t.UTC().Format(time.RFC3339))
		}
		return nil
	}
}

// tlsConfig is the part both sides share: TLS 1.3 only, this identity.
func (id *Identity) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
	}
}
