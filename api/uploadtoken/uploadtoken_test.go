package uploadtoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// signRaw signs any payload, to make tokens Sign refuses to make.
func signRaw(key ed25519.PrivateKey, payload string) string {
	first := b64.EncodeToString([]byte(payload))
	return first + "." + b64.EncodeToString(ed25519.Sign(key, []byte(first)))
}

func TestVerify(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	good := Claims{Namespace: "vms", DataVolume: "disk", UID: "uid-1", IssuedAt: now, Expires: now.Add(5 * time.Minute)}
	sign := func(k ed25519.PrivateKey, c Claims) string {
		tok, err := Sign(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	valid := sign(key, good)
	first, sig, _ := strings.Cut(valid, ".")
	// Tampered: the claims name another DataVolume, the signature is the original one.
	evil := good
	evil.DataVolume = "other"
	evil.Audience = Audience
	evilJSON, _ := json.Marshal(evil)
	tampered := b64.EncodeToString(evilJSON) + "." + sig
	withAud := func(aud string) string {
		c := good
		c.Audience = aud
		j, _ := json.Marshal(c)
		return signRaw(key, string(j))
	}

	tests := []struct {
		name    string
		token   string
		now     time.Time
		ns, dv  string
		wantErr error // nil: valid
		wantMsg string
	}{
		{"valid", valid, now, "vms", "disk", nil, ""},
		{"valid at expiry within the clock skew", valid, now.Add(5*time.Minute + 29*time.Second), "vms", "disk", nil, ""},
		{"issued slightly in the future (skew)", valid, now.Add(-20 * time.Second), "vms", "disk", nil, ""},
		{"expired", valid, now.Add(5*time.Minute + 31*time.Second), "vms", "disk", ErrExpired, "expired at 2026-05-01T12:05:00Z"},
		{"issued in the future", valid, now.Add(-time.Minute), "vms", "disk", ErrInvalid, "in the future"},
		{"other DataVolume", valid, now, "vms", "other", ErrOtherDataVolume, "for DataVolume vms/disk, not vms/other"},
		{"other namespace", valid, now, "prod", "disk", ErrOtherDataVolume, "for DataVolume vms/disk, not prod/disk"},
		{"tampered claims", tampered, now, "vms", "other", ErrInvalid, "signature does not match"},
		{"tampered signature", first + "." + b64.EncodeToString(make([]byte, 64)), now, "vms", "disk", ErrInvalid, "signature does not match"},
		{"signed by another key", sign(otherKey, good), now, "vms", "disk", ErrInvalid, "signature does not match"},
		{"garbage", "garbage", now, "vms", "disk", ErrInvalid, "claims.signature"},
		{"empty", "", now, "vms", "disk", ErrInvalid, "claims.signature"},
		{"three parts", valid + ".x", now, "vms", "disk", ErrInvalid, "claims.signature"},
		{"short signature", first + ".AAAA", now, "vms", "disk", ErrInvalid, "not 64 bytes"},
		{"signature not base64url", first + ".+/+/", now, "vms", "disk", ErrInvalid, "not 64 bytes"},
		{"oversize", strings.Repeat("a", MaxLen) + "." + sig, now, "vms", "disk", ErrInvalid, "more than 4096"},
		{"other audience", withAud("kubernetes"), now, "vms", "disk", ErrInvalid, `audience is "kubernetes"`},
		{"no audience", withAud(""), now, "vms", "disk", ErrInvalid, "audience"},
		{"signed non-JSON", signRaw(key, "not json"), now, "vms", "disk", ErrInvalid, "not the expected JSON"},
		{"unknown claim", signRaw(key, `{"ns":"vms","dv":"disk","uid":"u","aud":"slimvirt-upload","iat":"2026-05-01T12:00:00Z","exp":"2026-05-01T12:05:00Z","admin":true}`), now, "vms", "disk", ErrInvalid, "not the expected JSON"},
		{"trailing JSON", signRaw(key, `{"ns":"vms","dv":"disk","uid":"u","aud":"slimvirt-upload","iat":"2026-05-01T12:00:00Z","exp":"2026-05-01T12:05:00Z"}{}`), now, "vms", "disk", ErrInvalid, "not the expected JSON"},
		{"no UID", signRaw(key, `{"ns":"vms","dv":"disk","aud":"slimvirt-upload","iat":"2026-05-01T12:00:00Z","exp":"2026-05-01T12:05:00Z"}`), now, "vms", "disk", ErrInvalid, "must all be set"},
		{"no expiry", signRaw(key, `{"ns":"vms","dv":"disk","uid":"u","aud":"slimvirt-upload","iat":"2026-05-01T12:00:00Z"}`), now, "vms", "disk", ErrInvalid, "expiry times must be set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Verify(pub, tt.token, tt.now, tt.ns, tt.dv)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.Namespace != "vms" || c.DataVolume != "disk" || c.UID != "uid-1" || !c.Expires.Equal(good.Expires) {
					t.Fatalf("claims %+v", c)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Verify = %v, want %v saying %q", err, tt.wantErr, tt.wantMsg)
			}
			if c != (Claims{}) {
				t.Fatalf("claims %+v returned with an error", c)
			}
		})
	}
}

func TestVerifyBadKey(t *testing.T) {
	if _, err := Verify(ed25519.PublicKey("short"), "a.b", time.Now(), "vms", "disk"); err == nil || !strings.Contains(err.Error(), "public key is 5 bytes") {
		t.Fatalf("Verify with a 5-byte key: %v", err)
	}
}

func TestSignRefuses(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	good := Claims{Namespace: "vms", DataVolume: "disk", UID: "u", IssuedAt: now, Expires: now.Add(time.Minute)}
	tests := []struct {
		name string
		key  ed25519.PrivateKey
		edit func(*Claims)
		want string
	}{
		{"short key", key[:10], func(*Claims) {}, "private key is 10 bytes"},
		{"no namespace", key, func(c *Claims) { c.Namespace = "" }, "must all be set"},
		{"no UID", key, func(c *Claims) { c.UID = "" }, "must all be set"},
		{"other audience", key, func(c *Claims) { c.Audience = "kubernetes" }, "audience"},
		{"expires before issued", key, func(c *Claims) { c.Expires = now.Add(-time.Second) }, "not after it was issued"},
		{"no issue time", key, func(c *Claims) { c.IssuedAt = time.Time{} }, "must be set"},
		{"too long", key, func(c *Claims) { c.DataVolume = strings.Repeat("d", MaxLen) }, "more than 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			if tok, err := Sign(tt.key, c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Sign = %q, %v; want an error saying %q", tok, err, tt.want)
			}
		})
	}
}

func TestKeysRoundTrip(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	keyPEM, err := MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(keyPEM), "-----BEGIN PRIVATE KEY-----") || !strings.HasPrefix(string(pubPEM), "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("PEM types: %s %s", keyPEM, pubPEM)
	}
	k2, err := ParsePrivateKey(keyPEM)
	if err != nil || !k2.Equal(key) {
		t.Fatalf("private key round trip: %v", err)
	}
	p2, err := ParsePublicKey(pubPEM)
	if err != nil || !p2.Equal(pub) {
		t.Fatalf("public key round trip: %v", err)
	}
	bad := []struct {
		name string
		data []byte
		want string
	}{
		{"not PEM", []byte("hello"), "no PEM block"},
		{"private key as public", keyPEM, "a PEM PRIVATE KEY where a PUBLIC KEY"},
		{"oversize", []byte(strings.Repeat("x", 5000)), "more than 4096"},
		{"corrupt DER", []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), "parse upload token public key"},
	}
	for _, tt := range bad {
		if _, err := ParsePublicKey(tt.data); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ParsePublicKey = %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := ParsePrivateKey(pubPEM); err == nil {
		t.Error("a public key parsed as a private key")
	}
}

func FuzzVerify(f *testing.F) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	tok, _ := Sign(key, Claims{Namespace: "vms", DataVolume: "disk", UID: "u", IssuedAt: now, Expires: now.Add(time.Minute)})
	f.Add(tok)
	f.Add("a.b")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Verify(pub, s, now, "vms", "disk")
		if err == nil && s != tok {
			t.Fatalf("a token other than the signed one verified: %q %+v", s, c)
		}
	})
}
