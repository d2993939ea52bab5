package certs

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

func TestDueForRenewal(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: start, NotAfter: start.Add(30 * 24 * time.Hour)}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{
		{-time.Minute, true}, // the clock went back: peers may refuse it
		{0, false},
		{19 * 24 * time.Hour, false},
		{20*24*time.Hour - time.Second, false},
		{20 * 24 * time.Hour, true},
		{31 * 24 * time.Hour, true},
	} {
		if got := dueForRenewal(cert, start.Add(tc.at)); got != tc.want {
			t.Errorf("at %s: due %v, want %v", tc.at, got, tc.want)
		}
	}
}

func TestParseKeyPairRefusesWhatItDoesNotUnderstand(t *testing.T) {
	now := time.Now()
	ca, err := newCA(now)
	testutil.Must(t, err)
	other, err := issue(ca, clientSpec, now, time.Hour)
	testutil.Must(t, err)
	for _, tc := range []struct {
		name      string
		cert, key []byte
		want      string
	}{
		{"good", ca.certPEM, ca.keyPEM, ""},
		{"empty", nil, nil, "exactly one PEM CERTIFICATE"},
		{"two certificates", append(append([]byte{}, ca.certPEM...), other.certPEM...), ca.keyPEM, "exactly one PEM CERTIFICATE"},
		{"key of another certificate", ca.certPEM, other.keyPEM, "does not match"},
		{"key is a certificate", ca.certPEM, ca.certPEM, "unknown PEM block"},
		{"garbage certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), ca.keyPEM, "parse certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseKeyPair(tc.cert, tc.key)
			if tc.want == "" {
				testutil.Must(t, err)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestValidCARefusesALeaf(t *testing.T) {
	now := time.Now()
	ca, err := newCA(now)
	testutil.Must(t, err)
	testutil.Must(t, validCA(ca, now))
	leaf, err := issue(ca, clientSpec, now, time.Hour)
	testutil.Must(t, err)
	if err := validCA(leaf, now); err == nil {
		t.Fatal("a leaf passes as CA")
	}
	if err := validCA(ca, now.Add(7*365*24*time.Hour)); err == nil {
		t.Fatal("a CA seven years old is not due for renewal")
	}
}

func TestLeafNeverOutlivesItsCA(t *testing.T) {
	now := time.Now()
	ca, err := newCA(now)
	testutil.Must(t, err)
	leaf, err := issue(ca, clientSpec, ca.cert.NotAfter.Add(-time.Hour), 30*24*time.Hour)
	testutil.Must(t, err)
	if !leaf.cert.NotAfter.Equal(ca.cert.NotAfter) {
		t.Fatalf("leaf ends %s, CA %s", leaf.cert.NotAfter, ca.cert.NotAfter)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	ok := Config{Client: kube, Aggregator: agg, Namespace: "ns"}
	m, err := New(ok)
	testutil.Must(t, err)
	if m.cfg.LeafValidity != DefaultLeafValidity || m.cfg.CheckEvery != DefaultCheckEvery || m.NeedLeaderElection() {
		t.Fatalf("defaults: %+v, leader election %v", m.cfg, m.NeedLeaderElection())
	}
	if _, err := m.NodeClientTLS(); err == nil {
		t.Fatal("NodeClientTLS before the first check")
	}
	if c, k := m.ServingCert().CurrentCertKeyContent(); c != nil || k != nil {
		t.Fatal("serving certificate before the first check")
	}
	for name, mutate := range map[string]func(*Config){
		"no client":             func(c *Config) { c.Client = nil },
		"no aggregator":         func(c *Config) { c.Aggregator = nil },
		"no namespace":          func(c *Config) { c.Namespace = "" },
		"negative validity":     func(c *Config) { c.LeafValidity = -time.Hour },
		"checks too rare":       func(c *Config) { c.LeafValidity = 3 * time.Hour; c.CheckEvery = time.Hour },
		"validity beyond CA's":  func(c *Config) { c.LeafValidity = 5 * 365 * 24 * time.Hour },
		"negative check period": func(c *Config) { c.CheckEvery = -time.Second },
	} {
		c := ok
		mutate(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
