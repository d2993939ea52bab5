package uploadtoken

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// The data keys of the Secret subresources.UploadTokenKeySecret and of the ConfigMap
// subresources.UploadTokenPublicConfigMap.
const (
	PrivateKeyData = "ed25519.key"
	PublicKeyData  = "ed25519.pub"
)

// maxPEM bounds what the parsers look at; an Ed25519 key in PEM is about 120 bytes.
const maxPEM = 4096

// MarshalPrivateKey is key as a PKCS#8 PEM block.
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode upload token key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKey is pub as a PKIX PEM block.
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode upload token public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivateKey reads a PKCS#8 PEM Ed25519 private key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	der, err := pemBlock(data, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse upload token key: %w", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the upload token key is a %T, not Ed25519", k)
	}
	return key, nil
}

// ParsePublicKey reads a PKIX PEM Ed25519 public key.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	der, err := pemBlock(data, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse upload token public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the upload token public key is a %T, not Ed25519", k)
	}
	return pub, nil
}

func pemBlock(data []byte, typ string) ([]byte, error) {
	if len(data) > maxPEM {
		return nil, fmt.Errorf("the %s PEM is %d bytes, more than %d", typ, len(data), maxPEM)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block where a " + typ + " was expected")
	}
	if b.Type != typ {
		return nil, fmt.Errorf("a PEM %s where a %s was expected", b.Type, typ)
	}
	return b.Bytes, nil
}
