package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/server/dynamiccertificates"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// nodeServingSpec is the node agents' serving certificate.
var nodeServingSpec = leafSpec{
	commonName: subresources.NodeServerName,
	dnsNames:   []string{subresources.NodeServerName},
	usage:      x509.ExtKeyUsageServerAuth,
}

// clientSpec is the aggregated server's client certificate for calling node agents.
var clientSpec = leafSpec{commonName: subresources.APIClientName, usage: x509.ExtKeyUsageClientAuth}

// servingSpec is the aggregated server's serving certificate: the names of its Service in
// namespace.
func servingSpec(namespace string) leafSpec {
	svc := subresources.ServiceName + "." + namespace
	return leafSpec{
		commonName: svc + ".svc",
		dnsNames:   []string{svc + ".svc", svc + ".svc.cluster.local", svc},
		usage:      x509.ExtKeyUsageServerAuth,
	}
}

// ensureLeaves reissues the certificates kept in memory that ca did not sign or that are due
// for renewal, and tells the serving certificate's listeners when it changed.
func (m *Manager) ensureLeaves(ca *keyPair, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ca = ca
	if m.client == nil || !validLeaf(m.client.cert, ca.cert, clientSpec, now) {
		kp, err := issue(ca, clientSpec, now, m.cfg.LeafValidity)
		if err != nil {
			return fmt.Errorf("issue node client certificate: %w", err)
		}
		m.client = kp
		m.log.Info("issued the node client certificate", "serial", kp.cert.SerialNumber.Text(16), "notAfter", kp.cert.NotAfter)
	}
	spec := servingSpec(m.cfg.Namespace)
	if cur := m.serving.current(); cur == nil || !validLeaf(cur.cert, ca.cert, spec, now) {
		kp, err := issue(ca, spec, now, m.cfg.LeafValidity)
		if err != nil {
			return fmt.Errorf("issue serving certificate: %w", err)
		}
		m.serving.set(kp)
		m.log.Info("issued the serving certificate", "serial", kp.cert.SerialNumber.Text(16), "notAfter", kp.cert.NotAfter)
	}
	return nil
}

var errNotIssued = errors.New("certificates not issued yet: wait for Ready")

// ServingCert is the aggregated server's serving certificate and key; it tells its listeners
// when they are reissued. It is empty until Ready.
func (m *Manager) ServingCert() dynamiccertificates.CertKeyContentProvider { return m.serving }

// NodeClientTLS is a client configuration for a node agent: the current client certificate,
// the CA as the only root, the node agents' server name and TLS 1.3. It is a snapshot; take a
// new one for each connection (it is cheap) so rotated certificates are used.
func (m *Manager) NodeClientTLS() (*tls.Config, error) {
	m.mu.RLock()
	ca, client := m.ca, m.client
	m.mu.RUnlock()
	if client == nil {
		return nil, errNotIssued
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{client.cert.Raw}, PrivateKey: client.key, Leaf: client.cert}},
		RootCAs:      roots,
		ServerName:   subresources.NodeServerName,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// servingProvider is a dynamiccertificates.CertKeyContentProvider of the serving certificate.
type servingProvider struct {
	mu        sync.Mutex
	kp        *keyPair
	listeners []dynamiccertificates.Listener
}

var _ dynamiccertificates.CertKeyContentProvider = (*servingProvider)(nil)

// Name identifies the provider in the API server's logs.
func (p *servingProvider) Name() string { return "slimvirt-serving-cert" }

// CurrentCertKeyContent returns the PEM certificate and key (nil before the first issue).
func (p *servingProvider) CurrentCertKeyContent() (cert, key []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kp == nil {
		return nil, nil
	}
	return p.kp.certPEM, p.kp.keyPEM
}

// AddListener registers l to be told when the certificate changes.
func (p *servingProvider) AddListener(l dynamiccertificates.Listener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.listeners = append(p.listeners, l)
}

func (p *servingProvider) current() *keyPair {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kp
}

func (p *servingProvider) set(kp *keyPair) {
	p.mu.Lock()
	p.kp = kp
	ls := append([]dynamiccertificates.Listener(nil), p.listeners...)
	p.mu.Unlock()
	for _, l := range ls {
		l.Enqueue()
	}
}
