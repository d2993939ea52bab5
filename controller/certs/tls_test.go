package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestNodeMutualTLS plays a node agent serving with the node Secret (verifying clients
// against its ca.crt) and the aggregated server calling it with NodeClientTLS.
func TestNodeMutualTLS(t *testing.T) {
	ns := namespace(t)
	m := startManager(t, ns, nil, 0)
	node := getSecret(t, ns, subresources.NodeAccessSecret)
	serverCert, err := tls.X509KeyPair(node.Data[keyCert], node.Data[keyKey])
	testutil.Must(t, err)
	clientCAs := x509.NewCertPool()
	if !clientCAs.AppendCertsFromPEM(node.Data[keyCA]) {
		t.Fatal("no certificate in ca.crt")
	}
	addr, results := serveTLS(t, &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientCAs:    clientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})

	good, err := m.NodeClientTLS()
	testutil.Must(t, err)
	if err := call(addr, good); err != nil {
		t.Fatalf("client with NodeClientTLS: %v", err)
	}
	if r := <-results; r.err != nil || r.clientCN != subresources.APIClientName || r.version != tls.VersionTLS13 {
		t.Fatalf("server saw client %q over TLS version %#x, error %v", r.clientCN, r.version, r.err)
	}

	// A client certificate from another CA (trusting our CA for the server) is refused.
	other, err := newCA(time.Now())
	testutil.Must(t, err)
	stranger, err := issue(other, clientSpec, time.Now(), time.Hour)
	testutil.Must(t, err)
	bad := good.Clone()
	bad.Certificates = []tls.Certificate{{Certificate: [][]byte{stranger.cert.Raw}, PrivateKey: stranger.key}}
	if err := call(addr, bad); err == nil {
		t.Fatal("client certificate of another CA accepted")
	}
	if r := <-results; r.err == nil {
		t.Fatal("server accepted a client certificate of another CA")
	}

	// So is a client without a certificate.
	none := good.Clone()
	none.Certificates = nil
	if err := call(addr, none); err == nil {
		t.Fatal("client without a certificate accepted")
	}
	if r := <-results; r.err == nil {
		t.Fatal("server accepted a client without a certificate")
	}
}

type handshake struct {
	clientCN string
	version  uint16
	err      error
}

// serveTLS accepts connections on loopback until the test ends; for each it reports the
// handshake and then echoes one byte.
func serveTLS(t *testing.T, cfg *tls.Config) (string, <-chan handshake) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	testutil.Must(t, err)
	results := make(chan handshake, 10)
	done := make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serveOne(c.(*tls.Conn), results)
		}
	}()
	return ln.Addr().String(), results
}

func serveOne(c *tls.Conn, results chan<- handshake) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		results <- handshake{err: err}
		return
	}
	st := c.ConnectionState()
	results <- handshake{clientCN: st.PeerCertificates[0].Subject.CommonName, version: st.Version}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err == nil {
		_, _ = c.Write(b)
	}
}

// call dials addr, writes a byte and reads it back: with TLS 1.3 the server's refusal of a
// client certificate shows only after the client's handshake has finished.
func call(addr string, cfg *tls.Config) error {
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if b[0] != 'x' {
		return errors.New("echo mismatch")
	}
	return nil
}
