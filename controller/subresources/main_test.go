package subresources

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coder/websocket"

	api "github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/testenv"
)

// suite is what the tests share: a real kube-apiserver, the aggregated server under test
// reached directly on loopback (as the kube-apiserver's proxy reaches it) and a stand-in for
// the node agents' access endpoint with mutual TLS.
type suite struct {
	te     *testenv.Env
	c      client.Client
	base   string       // https://127.0.0.1:PORT of the server under test
	http   *http.Client // trusts the server's serving certificate, HTTP/1.1
	ca     []byte       // the server's serving certificate
	pki    *testPKI
	agent  *standIn
	tokens *fixedTokens
}

// env is set once by TestMain and only read afterwards.
var env *suite

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	te, err := testenv.Start("subresources")
	if err != nil {
		fmt.Fprintln(os.Stderr, "these tests need kube-apiserver and etcd:", err)
		return 1
	}
	defer func() {
		if err := te.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop kube-apiserver and etcd:", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	s, stop, err := newSuite(ctx, te)
	if err != nil {
		cancel()
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env = s
	code := m.Run()
	cancel()
	stop()
	return code
}

func newSuite(ctx context.Context, te *testenv.Env) (*suite, func(), error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	v1.AddToSchemeOrDie(scheme)
	c, err := client.New(te.Config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, nil, fmt.Errorf("create client: %w", err)
	}
	pki, err := newTestPKI()
	if err != nil {
		return nil, nil, err
	}
	agent, err := startStandIn(pki)
	if err != nil {
		return nil, nil, err
	}
	s := &suite{te: te, c: c, agent: agent, tokens: &fixedTokens{}, pki: pki}
	if err := publishFrontProxy(ctx, c, pki); err != nil {
		agent.srv.Close()
		return nil, nil, err
	}
	stop, err := s.startServer(ctx, pki)
	if err != nil {
		agent.srv.Close()
		return nil, nil, err
	}
	return s, func() { stop(); agent.srv.Close() }, nil
}

// startServer runs the server under test as the controller would, with a self-signed serving
// certificate, and waits until it is ready.
func (s *suite) startServer(ctx context.Context, pki *testPKI) (func(), error) {
	kubeconfig := s.te.Dir() + "/kubeconfig"
	if err := s.te.WriteKubeconfig(kubeconfig); err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("localhost", []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	if err != nil {
		return nil, fmt.Errorf("make serving certificate: %w", err)
	}
	serving, err := dynamiccertificates.NewStaticCertKeyContent("test-serving", certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv, err := New(Config{
		Client:      s.c,
		ServingCert: serving,
		NodeTLS:     func() (*tls.Config, error) { return pki.clientTLS(), nil },
		NodePort:    s.agent.port,
		Tokens:      s.tokens,
		Listener:    ln,
		Kubeconfig:  kubeconfig,
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	s.base = "https://" + srv.Addr().String()
	s.ca = certPEM
	s.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}},
	}}
	stop := func() {
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintln(os.Stderr, "server stopped with:", err)
			}
		case <-time.After(30 * time.Second):
			fmt.Fprintln(os.Stderr, "server did not stop within 30s")
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := s.http.Get(s.base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("server not ready after 30s: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fixedTokens is the issuer the tests give the server: it signs nothing, it answers a token
// that names what it was asked for.
type fixedTokens struct{}

func (*fixedTokens) Issue(_ context.Context, ns, dv string, uid types.UID) (string, time.Time, error) {
	return "token-" + ns + "-" + dv + "-" + string(uid), time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), nil
}

// standIn plays the node agents' access endpoint: mutual TLS with the test CA, websockets
// echoed, other requests answered with what they were. It records what it was sent.
type standIn struct {
	srv  *httptest.Server
	port int
	mu   sync.Mutex
	seen []*http.Request
}

func startStandIn(pki *testPKI) (*standIn, error) {
	a := &standIn{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	srv.TLS = pki.serverTLS()
	srv.StartTLS()
	a.srv = srv
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	a.port, _ = strconv.Atoi(port)
	return a, nil
}

func (a *standIn) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, r.Clone(context.Background()))
	a.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, "/"+api.VNC) || strings.HasSuffix(r.URL.Path, "/"+api.Console) {
		a.echo(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = fmt.Fprintf(w, "%s %s by %s", r.Method, r.URL.Path, r.TLS.PeerCertificates[0].Subject.CommonName)
}

func (a *standIn) echo(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{api.PlainProtocol, api.BinaryProtocol}})
	if err != nil {
		return
	}
	defer func() { _ = c.CloseNow() }()
	c.SetReadLimit(1 << 20)
	for {
		typ, data, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, append([]byte("echo:"), data...)); err != nil {
			return
		}
	}
}

// requests returns what the stand-in was sent for a path.
func (a *standIn) requests(path string) []*http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*http.Request
	for _, r := range a.seen {
		if r.URL.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// testPKI is a CA with the node agent's serving certificate and the server's client
// certificate, as the controller makes them.
type testPKI struct {
	ca                 *x509.Certificate
	server, cli, proxy tls.Certificate
	pool               *x509.CertPool
}

func newTestPKI() (*testPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "slimvirt-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &testPKI{ca: ca, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	if p.server, err = issue(ca, caKey, 2, api.NodeServerName, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.cli, err = issue(ca, caKey, 3, api.APIClientName, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	if p.proxy, err = issue(ca, caKey, 4, frontProxyName, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	return p, nil
}

func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, serial int64, name string, usage x509.ExtKeyUsage) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func (p *testPKI) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool, ClientAuth: tls.RequireAndVerifyClientCert}
}

func (p *testPKI) clientTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.cli}, RootCAs: p.pool, ServerName: api.NodeServerName}
}

// node makes a Node whose InternalIP is ip (loopback addresses only).
func (s *suite) node(t *testing.T, name, ip string) {
	t.Helper()
	n := &corev1.Node{}
	n.Name = name
	if err := s.c.Create(context.Background(), n); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	if err := s.c.Status().Update(context.Background(), n); err != nil {
		t.Fatal(err)
	}
}

// frontProxyName is the common name of the front proxy's client certificate.
const frontProxyName = "front-proxy-client"

// publishFrontProxy adds a front proxy to kube-system/extension-apiserver-authentication, as a
// kube-apiserver started with --requestheader-* publishes its own (envtest's has none): the
// test CA signs its client certificate, and the usual X-Remote-* headers carry the user.
func publishFrontProxy(ctx context.Context, c client.Client, pki *testPKI) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm := &corev1.ConfigMap{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "extension-apiserver-authentication"}, cm); err != nil {
			return err
		}
		cm.Data["requestheader-client-ca-file"] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.ca.Raw}))
		cm.Data["requestheader-allowed-names"] = `["` + frontProxyName + `"]`
		cm.Data["requestheader-username-headers"] = `["X-Remote-User"]`
		cm.Data["requestheader-uid-headers"] = `[]`
		cm.Data["requestheader-group-headers"] = `["X-Remote-Group"]`
		cm.Data["requestheader-extra-headers-prefix"] = `["X-Remote-Extra-"]`
		return c.Update(ctx, cm)
	})
}

// frontProxy is an HTTP client that presents cert, as the kube-apiserver's aggregator does
// with its proxy client certificate.
func (s *suite) frontProxy(cert tls.Certificate) *http.Client {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(s.ca)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"},
	}}}
}
