// Package uploadtoken signs and verifies upload tokens: the controller's aggregated API issues
// one for a single DataVolume (namespace, name and UID) for a few minutes, and the upload
// endpoint takes nothing else, so a user's Kubernetes credentials never leave for a node.
//
// A token is base64url(JSON claims) "." base64url(Ed25519 signature over the first part), both
// without padding. The signature is checked before a byte of the claims is parsed.
package uploadtoken

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

const (
	// Audience names the upload endpoint; a token with another audience is refused.
	Audience = "slimvirt-upload"
	// MaxLen bounds a token; a longer one is refused before any work is done on it.
	MaxLen = 4096
	// ClockSkew is how far the endpoint's clock may be off the issuer's.
	ClockSkew = 30 * time.Second
)

// Verify's failures, told apart with errors.Is. ErrInvalid and ErrExpired mean the caller is not
// authenticated (HTTP 401); ErrOtherDataVolume means a good token for something else (403).
var (
	ErrInvalid         = errors.New("invalid upload token")
	ErrExpired         = errors.New("expired upload token")
	ErrOtherDataVolume = errors.New("upload token of another DataVolume")
)

// Claims are what a token says.
type Claims struct {
	Namespace  string `json:"ns"`
	DataVolume string `json:"dv"`
	// UID is the DataVolume's: a DataVolume deleted and made again under the same name does
	// not take the old one's tokens.
	UID      types.UID `json:"uid"`
	IssuedAt time.Time `json:"iat"`
	Expires  time.Time `json:"exp"`
	Audience string    `json:"aud"`
}

var b64 = base64.RawURLEncoding.Strict()

// Sign makes the token of c; an empty Audience is set to Audience.
func Sign(key ed25519.PrivateKey, c Claims) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("sign upload token: the private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	if c.Audience == "" {
		c.Audience = Audience
	}
	if err := c.complete(); err != nil {
		return "", fmt.Errorf("sign upload token: %w", err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode upload token claims: %w", err)
	}
	first := b64.EncodeToString(payload)
	tok := first + "." + b64.EncodeToString(ed25519.Sign(key, []byte(first)))
	if len(tok) > MaxLen {
		return "", fmt.Errorf("sign upload token: %d bytes, more than %d", len(tok), MaxLen)
	}
	return tok, nil
}

// complete says what a well-formed token lacks.
func (c *Claims) complete() error {
	switch {
	case c.Audience != Audience:
		return fmt.Errorf("audience is %q, not %q", c.Audience, Audience)
	case c.Namespace == "" || c.DataVolume == "" || c.UID == "":
		return fmt.Errorf("namespace %q, DataVolume %q and UID %q must all be set", c.Namespace, c.DataVolume, c.UID)
	case c.IssuedAt.IsZero() || c.Expires.IsZero():
		return errors.New("issue and expiry times must be set")
	case !c.Expires.After(c.IssuedAt):
		return fmt.Errorf("expires at %s, not after it was issued at %s", c.Expires.Format(time.RFC3339), c.IssuedAt.Format(time.RFC3339))
	}
	return nil
}

// Verify checks token with the issuer's public key at time now, for uploads into the
// DataVolume namespace/dataVolume, and returns its claims. The caller still compares
// Claims.UID with the DataVolume's UID.
func Verify(pub ed25519.PublicKey, token string, now time.Time, namespace, dataVolume string) (Claims, error) {
	var c Claims
	if len(pub) != ed25519.PublicKeySize {
		return c, fmt.Errorf("verify upload token: the public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	if len(token) > MaxLen {
		return c, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(token), MaxLen)
	}
	first, sigPart, ok := strings.Cut(token, ".")
	if !ok || first == "" || sigPart == "" || strings.Contains(sigPart, ".") {
		return c, fmt.Errorf("%w: not of the form claims.signature", ErrInvalid)
	}
	sig, err := b64.DecodeString(sigPart)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return c, fmt.Errorf("%w: the signature is not %d bytes of base64url", ErrInvalid, ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, []byte(first), sig) {
		return c, fmt.Errorf("%w: the signature does not match the upload token key", ErrInvalid)
	}
	payload, err := b64.DecodeString(first)
	if err != nil {
		return c, fmt.Errorf("%w: the claims are not base64url", ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || dec.More() {
		return Claims{}, fmt.Errorf("%w: the claims are not the expected JSON", ErrInvalid)
	}
	if err := c.complete(); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if now.After(c.Expires.Add(ClockSkew)) {
		return Claims{}, fmt.Errorf("%w: it expired at %s, it is now %s", ErrExpired, c.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if c.IssuedAt.After(now.Add(ClockSkew)) {
		return Claims{}, fmt.Errorf("%w: issued at %s, in the future (it is now %s)", ErrInvalid, c.IssuedAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if c.Namespace != namespace || c.DataVolume != dataVolume {
		return Claims{}, fmt.Errorf("%w: it is for DataVolume %s/%s, not %s/%s", ErrOtherDataVolume, c.Namespace, c.DataVolume, namespace, dataVolume)
	}
	return c, nil
}
