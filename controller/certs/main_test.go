package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// The API server every test shares; set once by TestMain.
var (
	kube kubernetes.Interface
	agg  aggregator.Interface
	tenv *testenv.Env
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	te, err := testenv.Start("certs")
	if err != nil {
		fmt.Fprintln(os.Stderr, "certs tests need kube-apiserver and etcd:", err)
		return 1
	}
	defer func() {
		if err := te.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop kube-apiserver and etcd:", err)
		}
	}()
	a, err := aggregator.NewForConfig(te.Config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "make aggregator client:", err)
		return 1
	}
	tenv, kube, agg = te, te.Clientset, a
	return m.Run()
}

var nsCount atomic.Int32

// namespace makes a fresh namespace for one test.
func namespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("certs-%d", nsCount.Add(1))
	testutil.Must(t, tenv.Namespace(context.Background(), ns))
	return ns
}

// fakeClock is a settable clock, starting at the real time.
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// startManager runs a Manager on ns until the test ends and waits until it is ready.
func startManager(t *testing.T, ns string, clock func() time.Time, checkEvery time.Duration) *Manager {
	t.Helper()
	m := newManager(t, ns, clock, checkEvery)
	runManager(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testutil.Must(t, m.Ready(ctx))
	return m
}

func newManager(t *testing.T, ns string, clock func() time.Time, checkEvery time.Duration) *Manager {
	t.Helper()
	w := io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	return newManagerLog(t, ns, clock, checkEvery, w)
}

func newManagerLog(t *testing.T, ns string, clock func() time.Time, checkEvery time.Duration, w io.Writer) *Manager {
	t.Helper()
	log := slog.New(slog.NewTextHandler(w, nil))
	m, err := New(Config{Client: kube, Aggregator: agg, Namespace: ns, CheckEvery: checkEvery, Clock: clock, Log: log})
	testutil.Must(t, err)
	return m
}

// runManager starts m and stops it (and waits for that) when the test ends.
func runManager(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start returned %v", err)
		}
	})
}

func getSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := kube.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	testutil.Must(t, err)
	return s
}

// caOf reads the CA certificate from the CA Secret.
func caOf(t *testing.T, ns string) *x509.Certificate {
	t.Helper()
	return parseCert(t, getSecret(t, ns, subresources.CASecret).Data[keyCert])
}

func parseCert(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatalf("no PEM block in %q", p)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	testutil.Must(t, err)
	return c
}

// verify checks that cert is signed by ca and good for usage (and dnsName if not empty) at now.
func verify(t *testing.T, cert, ca *x509.Certificate, usage x509.ExtKeyUsage, dnsName string, now time.Time) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: dnsName, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		t.Fatalf("verify %s for %q: %v", cert.Subject.CommonName, dnsName, err)
	}
}

// listener counts the serving certificate's change notifications.
type listener struct{ n atomic.Int32 }

func (l *listener) Enqueue() { l.n.Add(1) }

// logBuffer collects the log lines of several managers.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), "msg=\""+msg+"\"")
}
