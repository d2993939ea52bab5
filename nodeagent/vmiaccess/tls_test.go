package vmiaccess

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/nodeagent/vmiaccess/testpki"
)

// get sends a GET for an unknown VMI with cfg; the endpoint answers 404 to a client it serves.
func (e *endpoint) get(cfg *tls.Config) (*http.Response, error) {
	resp, err := httpClient(cfg).Get(e.url("https", "nowhere", subresources.GuestOSInfo))
	if err == nil {
		_ = resp.Body.Close()
	}
	return resp, err
}

// TestClientAuth: only a client certificate of the CA in ca.crt, for client authentication,
// with the aggregated server's name is served; everything else is refused in the handshake.
func TestClientAuth(t *testing.T) {
	e := start(t)
	other := testpki.NewCA(t, "other-ca")
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"no client certificate", testpki.ClientConfig(e.ca)},
		{"certificate of another CA", testpki.ClientConfig(e.ca, other.Client(t))},
		{"another name", testpki.ClientConfig(e.ca, e.ca.KeyPair(t, "system:admin", x509.ExtKeyUsageClientAuth))},
		{"a serving certificate with the right name", testpki.ClientConfig(e.ca, e.ca.KeyPair(t, subresources.APIClientName, x509.ExtKeyUsageServerAuth))},
		{"TLS 1.2", func() *tls.Config {
			c := testpki.ClientConfig(e.ca, e.ca.Client(t))
			c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			return c
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.get(tc.cfg)
			if err == nil {
				t.Fatalf("served: %s", resp.Status)
			}
			t.Logf("refused: %v", err)
		})
	}
	resp, err := e.get(testpki.ClientConfig(e.ca, e.ca.Client(t)))
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the aggregated server's certificate: %v %v, want 404 for an unknown VMI", resp, err)
	}
}

// TestHandlerForbidden: the handler refuses a TLS client that is not the aggregated server
// even when the TLS layer let it in.
func TestHandlerForbidden(t *testing.T) {
	srv := httptest.NewTLSServer(Handler(launchers{}, "node-1", slog.New(slog.DiscardHandler)))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + subresources.NodePath("tenant", "vm1", subresources.GuestOSInfo))
	testutil.Must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("%s, want 403", resp.Status)
	}
}

// TestRotation: new certificates written into the Secret volume (the kubelet's link swap) are
// served without a restart: the new serving certificate is presented, a client certificate of
// the new CA is served and one of the old CA no longer is.
func TestRotation(t *testing.T) {
	e := start(t)
	oldClient := e.ca.Client(t)
	newCA := testpki.NewCA(t, "slimvirt-ca-2")
	served := testpki.WriteSecret(t, e.certDir, newCA)

	resp, err := e.get(testpki.ClientConfig(newCA, newCA.Client(t)))
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("after rotation, with the new CA: %v %v, want 404", resp, err)
	}
	block, _ := pem.Decode(served)
	if got := resp.TLS.PeerCertificates[0].Raw; !bytes.Equal(got, block.Bytes) {
		t.Error("after rotation the endpoint presents another certificate than the new one")
	}
	// The old CA's client certificate, trusting both CAs to get past the server's name.
	trustBoth := testpki.ClientConfig(newCA, oldClient)
	trustBoth.RootCAs.AddCert(e.ca.Cert)
	if resp, err := e.get(trustBoth); err == nil {
		t.Fatalf("after rotation a client certificate of the old CA is served: %s", resp.Status)
	}

	// A half-written Secret does not stop the endpoint: it serves what it had.
	testutil.Must(t, os.WriteFile(filepath.Join(e.certDir, "..data", KeyFile), []byte("garbage"), 0o600))
	if resp, err := e.get(testpki.ClientConfig(newCA, newCA.Client(t))); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("with a broken key file: %v %v, want the previous certificates served", resp, err)
	}
}

// TestNewMissingFiles: without its certificates the endpoint does not start, and says which
// file is missing.
func TestNewMissingFiles(t *testing.T) {
	for _, missing := range []string{CertFile, KeyFile, ClientCAFile} {
		t.Run(missing, func(t *testing.T) {
			dir := t.TempDir()
			testpki.WriteSecret(t, dir, testpki.NewCA(t, "ca"))
			testutil.Must(t, os.Remove(filepath.Join(dir, missing)))
			_, err := New(Config{CertDir: dir, Launchers: launchers{}})
			if err == nil || !strings.Contains(err.Error(), missing) {
				t.Fatalf("New: %v, want an error naming %s", err, missing)
			}
		})
	}
	if _, err := New(Config{Launchers: launchers{}}); err == nil || !strings.Contains(err.Error(), "access-cert-dir") {
		t.Errorf("New without a directory: %v", err)
	}
}
