package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

const (
	// caValidity is the CA's life; it is renewed, like the leaves, after two thirds of it.
	caValidity = 10 * 365 * 24 * time.Hour
	// backdate lets a certificate be valid on a peer whose clock is a little behind.
	backdate = 5 * time.Minute
	caName   = "slimvirt-ca"
)

// keyPair is a certificate with its key, parsed and as PEM.
type keyPair struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// leafSpec is what a leaf certificate says about its holder.
type leafSpec struct {
	commonName string
	dnsNames   []string
	usage      x509.ExtKeyUsage
}

func newCA(now time.Time) (*keyPair, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: caName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return sign(tmpl, nil)
}

// issue makes a leaf certificate signed by ca, valid for validity from now but never past the
// CA's own end.
func issue(ca *keyPair, spec leafSpec, now time.Time, validity time.Duration) (*keyPair, error) {
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: spec.commonName},
		DNSNames:              spec.dnsNames,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{spec.usage},
		BasicConstraintsValid: true,
	}
	return sign(tmpl, ca)
}

// sign makes a new P-256 key and its certificate from tmpl, signed by parent (self-signed if
// parent is nil).
func sign(tmpl *x509.Certificate, parent *keyPair) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	return &keyPair{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// parseKeyPair reads a PEM certificate (exactly one) and its PKCS#8 or SEC 1 key, and checks
// that they belong together.
func parseKeyPair(certPEM, keyPEM []byte) (*keyPair, error) {
	block, rest := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("parse certificate: want exactly one PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("parse key: no PEM block")
	}
	key, err := parseKey(kb)
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("parse key pair: the key does not match the certificate")
	}
	return &keyPair{cert: cert, key: key, certPEM: certPEM, keyPEM: keyPEM}, nil
}

func parseKey(b *pem.Block) (*ecdsa.PrivateKey, error) {
	switch b.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse key: %w", err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("parse key: %T is not an ECDSA key", k)
		}
		return ec, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("parse key: unknown PEM block %q", b.Type)
	}
}

// dueForRenewal says whether two thirds of the certificate's life have passed at now (or now
// is before its start: a clock that went back makes a certificate peers may refuse).
func dueForRenewal(cert *x509.Certificate, now time.Time) bool {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return now.Before(cert.NotBefore) || !now.Before(cert.NotBefore.Add(life*2/3))
}

// validCA says whether kp is a CA this package would have made, still in the first two thirds
// of its life.
func validCA(kp *keyPair, now time.Time) error {
	c := kp.cert
	switch {
	case !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0:
		return errors.New("not a CA certificate")
	case c.CheckSignatureFrom(c) != nil:
		return errors.New("not self-signed")
	case dueForRenewal(c, now):
		return fmt.Errorf("due for renewal (valid %s to %s)", c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// validLeaf says whether leaf is signed by ca, says what spec says, and is not yet due for
// renewal.
func validLeaf(leaf *x509.Certificate, ca *x509.Certificate, spec leafSpec, now time.Time) bool {
	if dueForRenewal(leaf, now) || leaf.Subject.CommonName != spec.commonName {
		return false
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{spec.usage}})
	if err != nil {
		return false
	}
	return slices.Equal(leaf.DNSNames, spec.dnsNames)
}
