package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

func TestFirstStartCreatesCAAndNodeSecret(t *testing.T) {
	ns := namespace(t)
	startManager(t, ns, nil, 0)

	ca := caOf(t, ns)
	if ca.Subject.CommonName != "slimvirt-ca" || !ca.IsCA || ca.CheckSignatureFrom(ca) != nil {
		t.Fatalf("CA is %q, IsCA %v, self-signed %v", ca.Subject.CommonName, ca.IsCA, ca.CheckSignatureFrom(ca) == nil)
	}
	if pub, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("CA key is %T, want ECDSA P-256", ca.PublicKey)
	}
	if life := time.Until(ca.NotAfter); life < 9*365*24*time.Hour {
		t.Fatalf("CA expires in %s, want about ten years", life)
	}
	node := getSecret(t, ns, subresources.NodeAccessSecret)
	if !bytes.Equal(node.Data[keyCA], getSecret(t, ns, subresources.CASecret).Data[keyCert]) {
		t.Fatal("node Secret's ca.crt is not the CA's certificate")
	}
	if _, err := parseKeyPair(node.Data[keyCert], node.Data[keyKey]); err != nil {
		t.Fatalf("node Secret's key pair: %v", err)
	}
	leaf := parseCert(t, node.Data[keyCert])
	verify(t, leaf, ca, x509.ExtKeyUsageServerAuth, subresources.NodeServerName, time.Now())
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 29*24*time.Hour || life > 31*24*time.Hour {
		t.Fatalf("node certificate is valid for %s, want 30 days", life)
	}
}

func TestSecondManagerReusesCAAndNodeSecret(t *testing.T) {
	ns := namespace(t)
	startManager(t, ns, nil, 0)
	caSecret := getSecret(t, ns, subresources.CASecret)
	node := getSecret(t, ns, subresources.NodeAccessSecret)

	m2 := startManager(t, ns, nil, 0)
	if rv := getSecret(t, ns, subresources.CASecret).ResourceVersion; rv != caSecret.ResourceVersion {
		t.Fatalf("CA Secret was rewritten (resourceVersion %s -> %s)", caSecret.ResourceVersion, rv)
	}
	if rv := getSecret(t, ns, subresources.NodeAccessSecret).ResourceVersion; rv != node.ResourceVersion {
		t.Fatalf("node Secret was rewritten (resourceVersion %s -> %s)", node.ResourceVersion, rv)
	}
	cert, _ := m2.ServingCert().CurrentCertKeyContent()
	verify(t, parseCert(t, cert), caOf(t, ns), x509.ExtKeyUsageServerAuth, "", time.Now())
}

func TestRacingReplicasAgreeOnOneCA(t *testing.T) {
	ns := namespace(t)
	logs := &logBuffer{}
	ms := make([]*Manager, 5)
	for i := range ms {
		ms[i] = newManagerLog(t, ns, nil, 0, logs)
	}
	// Their first checks run at once, each in its own goroutine.
	for _, m := range ms {
		runManager(t, m)
	}
	want := getSecretEventually(t, ns, subresources.CASecret).Data[keyCert]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, m := range ms {
		testutil.Must(t, m.Ready(ctx))
		m.mu.RLock()
		got := m.ca.certPEM
		m.mu.RUnlock()
		if !bytes.Equal(got, want) {
			t.Errorf("replica %d uses a CA that is not the Secret's", i)
		}
	}
	if n := logs.count("made a new CA"); n != 1 {
		t.Errorf("%d replicas made a CA, want 1", n)
	}
	t.Logf("%d creates of a Secret lost a race", logs.count("another writer created the secret first"))
}

func getSecretEventually(t *testing.T, ns, name string) (s *corev1.Secret) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, "secret "+name, func() bool {
		got, err := kube.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
		s = got
		return err == nil
	})
	return s
}

func TestLeavesRenewedAfterTwoThirdsOfTheirLife(t *testing.T) {
	ns := namespace(t)
	clock := &fakeClock{}
	m := startManager(t, ns, clock.now, 100*time.Millisecond)
	l := &listener{}
	m.ServingCert().AddListener(l)
	serving0, _ := m.ServingCert().CurrentCertKeyContent()
	client0 := clientCert(t, m)
	node0 := getSecret(t, ns, subresources.NodeAccessSecret)
	ca0 := getSecret(t, ns, subresources.CASecret)

	// Just before two thirds of 30 days: nothing changes.
	clock.advance(19 * 24 * time.Hour)
	time.Sleep(time.Second)
	if l.n.Load() != 0 || !bytes.Equal(clientCert(t, m).Raw, client0.Raw) {
		t.Fatal("certificates renewed before two thirds of their life")
	}
	if rv := getSecret(t, ns, subresources.NodeAccessSecret).ResourceVersion; rv != node0.ResourceVersion {
		t.Fatal("node Secret rewritten before two thirds of its certificate's life")
	}

	clock.advance(2 * 24 * time.Hour)
	testutil.WaitFor(t, 10*time.Second, "serving certificate listener", func() bool { return l.n.Load() > 0 })
	now := clock.now()
	ca := caOf(t, ns)
	if rv := getSecret(t, ns, subresources.CASecret).ResourceVersion; rv != ca0.ResourceVersion {
		t.Fatal("CA Secret rewritten when only the leaves were due")
	}
	serving1, _ := m.ServingCert().CurrentCertKeyContent()
	renewed(t, "serving", parseCert(t, serving0), parseCert(t, serving1), ca, now)
	renewed(t, "client", client0, clientCert(t, m), ca, now)
	var node1 []byte
	testutil.WaitFor(t, 10*time.Second, "node Secret rewritten", func() bool {
		node1 = getSecret(t, ns, subresources.NodeAccessSecret).Data[keyCert]
		return !bytes.Equal(node1, node0.Data[keyCert])
	})
	renewed(t, "node", parseCert(t, node0.Data[keyCert]), parseCert(t, node1), ca, now)
}

// renewed checks that new replaces old: another serial, signed by ca, good at now.
func renewed(t *testing.T, what string, old, cur, ca *x509.Certificate, now time.Time) {
	t.Helper()
	if old.SerialNumber.Cmp(cur.SerialNumber) == 0 {
		t.Fatalf("%s certificate not renewed", what)
	}
	verify(t, cur, ca, cur.ExtKeyUsage[0], "", now)
	if !cur.NotAfter.After(old.NotAfter) {
		t.Fatalf("%s certificate renewed but not extended: %s -> %s", what, old.NotAfter, cur.NotAfter)
	}
}

func clientCert(t *testing.T, m *Manager) *x509.Certificate {
	t.Helper()
	c, err := m.NodeClientTLS()
	testutil.Must(t, err)
	return c.Certificates[0].Leaf
}

func TestServingCertVerifiesForTheService(t *testing.T) {
	ns := namespace(t)
	m := startManager(t, ns, nil, 0)
	certPEM, keyPEM := m.ServingCert().CurrentCertKeyContent()
	kp, err := parseKeyPair(certPEM, keyPEM)
	testutil.Must(t, err)
	ca := caOf(t, ns)
	for _, name := range []string{
		subresources.ServiceName + "." + ns + ".svc",
		subresources.ServiceName + "." + ns + ".svc.cluster.local",
		subresources.ServiceName + "." + ns,
	} {
		verify(t, kp.cert, ca, x509.ExtKeyUsageServerAuth, name, time.Now())
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	other := subresources.ServiceName + ".other.svc"
	if _, err := kp.cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: other}); err == nil {
		t.Fatalf("serving certificate verifies for %s", other)
	}
}

func TestAPIServiceGetsCABundle(t *testing.T) {
	ns := namespace(t)
	// The APIService does not exist yet: the manager is ready all the same and sets the
	// caBundle at a later check.
	startManager(t, ns, nil, 100*time.Millisecond)
	createAPIService(t, ns)
	want := getSecret(t, ns, subresources.CASecret).Data[keyCert]
	waitCABundle(t, want)
}

func createAPIService(t *testing.T, ns string) {
	t.Helper()
	api := agg.ApiregistrationV1().APIServices()
	_, err := api.Create(context.Background(), &apiregv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: subresources.APIServiceName},
		Spec: apiregv1.APIServiceSpec{
			Group:                subresources.Group,
			Version:              subresources.Version,
			Service:              &apiregv1.ServiceReference{Namespace: ns, Name: subresources.ServiceName},
			GroupPriorityMinimum: 1000,
			VersionPriority:      15,
		},
	}, metav1.CreateOptions{})
	testutil.Must(t, err)
	t.Cleanup(func() {
		err := api.Delete(context.Background(), subresources.APIServiceName, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete apiservice: %v", err)
		}
	})
}

func waitCABundle(t *testing.T, want []byte) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "APIService caBundle", func() bool {
		s, err := agg.ApiregistrationV1().APIServices().Get(context.Background(), subresources.APIServiceName, metav1.GetOptions{})
		return err == nil && bytes.Equal(s.Spec.CABundle, want)
	})
}

func TestDeletedCAIsRecreatedAndEverythingReissued(t *testing.T) {
	ns := namespace(t)
	createAPIService(t, ns)
	m := startManager(t, ns, nil, 100*time.Millisecond)
	l := &listener{}
	m.ServingCert().AddListener(l)
	old := getSecret(t, ns, subresources.CASecret)
	waitCABundle(t, old.Data[keyCert])

	testutil.Must(t, kube.CoreV1().Secrets(ns).Delete(context.Background(), subresources.CASecret, metav1.DeleteOptions{}))
	var caPEM []byte
	testutil.WaitFor(t, 10*time.Second, "a new CA", func() bool {
		s, err := kube.CoreV1().Secrets(ns).Get(context.Background(), subresources.CASecret, metav1.GetOptions{})
		if err == nil {
			caPEM = s.Data[keyCert]
		}
		return err == nil && !bytes.Equal(caPEM, old.Data[keyCert])
	})
	ca := parseCert(t, caPEM)
	testutil.WaitFor(t, 10*time.Second, "serving certificate listener", func() bool { return l.n.Load() > 0 })
	serving, _ := m.ServingCert().CurrentCertKeyContent()
	verify(t, parseCert(t, serving), ca, x509.ExtKeyUsageServerAuth, subresources.ServiceName+"."+ns+".svc", time.Now())
	verify(t, clientCert(t, m), ca, x509.ExtKeyUsageClientAuth, "", time.Now())
	testutil.WaitFor(t, 10*time.Second, "node Secret with the new CA", func() bool {
		return bytes.Equal(getSecret(t, ns, subresources.NodeAccessSecret).Data[keyCA], caPEM)
	})
	verify(t, parseCert(t, getSecret(t, ns, subresources.NodeAccessSecret).Data[keyCert]), ca, x509.ExtKeyUsageServerAuth, subresources.NodeServerName, time.Now())
	waitCABundle(t, caPEM)
}

func TestUnreadableCAIsReplaced(t *testing.T) {
	ns := namespace(t)
	_, err := kube.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: subresources.CASecret},
		Data:       map[string][]byte{keyCert: []byte("not a certificate"), keyKey: []byte("junk")},
	}, metav1.CreateOptions{})
	testutil.Must(t, err)
	startManager(t, ns, nil, 0)
	ca := caOf(t, ns)
	if ca.Subject.CommonName != "slimvirt-ca" {
		t.Fatalf("CA is %q", ca.Subject.CommonName)
	}
}
