// Package certs makes and rotates slimvirt's certificates: the cluster needs no cert-manager.
//
// The controller keeps a CA (ECDSA P-256, ten years, CN "slimvirt-ca") in the Secret
// subresources.CASecret (tls.crt, tls.key) in its namespace; the first replica to start
// creates it, and a replica that loses the race reads the winner's. The CA signs:
//
//   - the aggregated API server's serving certificate (in memory only, for the names of
//     subresources.ServiceName in the namespace), given to the server as a
//     dynamiccertificates.CertKeyContentProvider (Manager.ServingCert);
//   - the aggregated server's client certificate (CN subresources.APIClientName, in memory
//     only) for calling node agents (Manager.NodeClientTLS);
//   - the node agents' serving certificate (DNS name subresources.NodeServerName), written to the
//     Secret subresources.NodeAccessSecret. The node agent mounts it and reads three keys:
//     tls.crt and tls.key (its serving certificate and PKCS#8 key) and ca.crt (the CA it
//     verifies clients with; only a client certificate with CN subresources.APIClientName is the
//     aggregated server). The Secret is rewritten only when its content must change, so the
//     agent should reload the files when they change.
//
// Leaf certificates are valid for Config.LeafValidity (30 days by default) and reissued when
// two thirds of their life have passed or the CA changed; the CA is replaced when it is missing,
// unreadable, or two thirds through its own life. The APIService subresources.APIServiceName
// gets the CA as its spec.caBundle.
//
// Every replica runs a Manager (no leader election): each needs its own serving and client
// certificates, and the writes to the two Secrets and the APIService are idempotent. A replica
// picks up a CA another replica replaced at its next check.
//
// RBAC the controller needs: in its namespace, secrets get, create and update (create cannot be
// limited by resourceNames; get and update can: subresources.CASecret and
// subresources.NodeAccessSecret); cluster-wide, apiservices (apiregistration.k8s.io) get and
// patch on resourceNames subresources.APIServiceName.
package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
)

const (
	// DefaultLeafValidity is how long a leaf certificate is valid unless Config says otherwise.
	DefaultLeafValidity = 30 * 24 * time.Hour
	// DefaultCheckEvery is how often the certificates are checked unless Config says otherwise.
	DefaultCheckEvery = time.Hour
	// firstRetry is the wait after a failed check; it doubles up to CheckEvery.
	firstRetry = time.Second
)

// Config configures a Manager.
type Config struct {
	// Client reads and writes the Secrets in Namespace.
	Client kubernetes.Interface
	// Aggregator patches the APIService's caBundle.
	Aggregator aggregator.Interface
	// Namespace is the controller's namespace: the Secrets' and the Service's.
	Namespace string
	// LeafValidity is the life of leaf certificates (DefaultLeafValidity if zero).
	LeafValidity time.Duration
	// CheckEvery is the interval between checks (DefaultCheckEvery if zero); it must be shorter
	// than a third of LeafValidity so that a certificate is renewed before it expires.
	CheckEvery time.Duration
	// Clock is the time certificates are issued and checked at (time.Now if nil).
	Clock func() time.Time
	// Log receives what the Manager does (slog.Default if nil).
	Log *slog.Logger
	// Owners become the owner references of the Secrets the Manager makes (the controller's
	// Deployment), so that uninstalling the controller removes them.
	Owners []metav1.OwnerReference
}

// Manager makes and rotates the certificates; it is a controller-runtime Runnable.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	serving *servingProvider

	mu     sync.RWMutex
	ca     *keyPair
	client *keyPair

	ready     chan struct{}
	readyOnce sync.Once
	// apiServiceMissing is set while the APIService is absent, so that is logged once. Only
	// the checking goroutine touches it.
	apiServiceMissing bool
}

// New validates cfg, fills in its defaults and returns a Manager that does nothing until
// Start.
func New(cfg Config) (*Manager, error) {
	if cfg.Client == nil || cfg.Aggregator == nil {
		return nil, errors.New("configure certificates: Client and Aggregator are required")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("configure certificates: Namespace is required")
	}
	if cfg.LeafValidity == 0 {
		cfg.LeafValidity = DefaultLeafValidity
	}
	if cfg.CheckEvery == 0 {
		cfg.CheckEvery = DefaultCheckEvery
	}
	if cfg.LeafValidity < 0 || cfg.LeafValidity > caValidity/3 {
		return nil, fmt.Errorf("configure certificates: LeafValidity %s is out of range", cfg.LeafValidity)
	}
	if cfg.CheckEvery < 0 || cfg.CheckEvery >= cfg.LeafValidity/3 {
		return nil, fmt.Errorf("configure certificates: CheckEvery %s must be positive and shorter than a third of LeafValidity %s", cfg.CheckEvery, cfg.LeafValidity)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Manager{
		cfg:     cfg,
		log:     cfg.Log.With("component", "certs", "namespace", cfg.Namespace),
		serving: &servingProvider{},
		ready:   make(chan struct{}),
	}, nil
}

// NeedLeaderElection is false: every replica serves with its own certificates.
func (m *Manager) NeedLeaderElection() bool { return false }

// Start checks the certificates at once and then every CheckEvery (sooner after a failure),
// until ctx ends.
func (m *Manager) Start(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	retry := firstRetry
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := m.check(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Error("check certificates", "err", err, "retryIn", retry)
			t.Reset(retry)
			retry = min(2*retry, m.cfg.CheckEvery)
			continue
		}
		retry = firstRetry
		t.Reset(m.cfg.CheckEvery)
	}
}

// Ready returns when the serving and client certificates exist and the first check has
// tried to write the node agents' Secret and the APIService's caBundle, or with ctx's error.
func (m *Manager) Ready(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for certificates: %w", ctx.Err())
	}
}

// check brings the CA, the certificates in memory, the node agents' Secret and the
// APIService's caBundle up to date.
func (m *Manager) check(ctx context.Context) error {
	now := m.cfg.Clock()
	ca, err := m.ensureCA(ctx, now)
	if err != nil {
		return err
	}
	if err := m.ensureLeaves(ca, now); err != nil {
		return err
	}
	err = errors.Join(m.ensureNodeSecret(ctx, ca, now), m.ensureAPIService(ctx, ca))
	// The aggregated server needs only what is in memory; the node agents' Secret and the
	// APIService were tried once and are retried until they succeed.
	m.readyOnce.Do(func() { close(m.ready) })
	return err
}
