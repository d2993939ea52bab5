// Package integration tests the controller against a real kube-apiserver and etcd started by
// TestMain (controller-runtime's envtest), with slimvirt's generated CRDs installed. There is
// no kubelet: tests play it by binding pods and writing their status.
package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/manager"
	"github.com/slimvirt/slimvirt/controller/vm"
	"github.com/slimvirt/slimvirt/internal/testenv"
)

const (
	launcherImage = "slimvirt.io/launcher:test"
	// overhead is the launcher memory overhead the tests' controller adds.
	overhead = "64Mi"
)

// suite is what every test shares: the API server, a client, and the running controller.
type suite struct {
	cfg     *rest.Config
	c       client.Client
	keyFile string
	key     []byte
	stop    context.CancelFunc
	done    chan error
	// ownController is true when the tests run their own controller and play the kubelet.
	ownController bool
	// kubeconfig reaches the API server, for the controller binary.
	kubeconfig []byte
	// te runs kube-controller-manager's controllers for the tests that need them.
	te *testenv.Env
}

// needController skips a test that plays the kubelet when the suite runs against a real cluster.
func needController(t *testing.T) {
	t.Helper()
	if !env.ownController {
		t.Skip("needs the suite's own controller and played kubelet (USE_EXISTING_CLUSTER=true)")
	}
}

// env is set once by TestMain and only read afterwards.
var env *suite

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(zapLevel())))
	te, err := testenv.Start("integration")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration tests need kube-apiserver and etcd:", err)
		return 1
	}
	defer func() {
		if err := te.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop kube-apiserver and etcd:", err)
		}
	}()
	s, err := newSuite(te.Config, te.Dir())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s.kubeconfig = te.KubeConfig()
	s.te = te
	if err := installSnapshotCRDs(te.Config); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env = s
	if os.Getenv("USE_EXISTING_CLUSTER") == "true" {
		// Against a real cluster only the API tests run: the controller there is the
		// deployed one, and its kubelets are real.
		return m.Run()
	}
	if err := env.startController(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s.ownController = true
	code := m.Run()
	env.stopController()
	return code
}

func newSuite(cfg *rest.Config, dir string) (*suite, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := snapv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	key := []byte("integration-test-signing-key-0123456789abcdef")
	keyFile := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("write signing key: %w", err)
	}
	return &suite{cfg: cfg, c: c, keyFile: keyFile, key: key}, nil
}

// startController starts a fresh controller (a new manager with empty caches), as a restarted
// controller pod would.
func (s *suite) startController() error {
	c, err := manager.New(manager.Config{
		RestConfig:             s.cfg,
		LauncherImage:          launcherImage,
		SigningKeyFile:         s.keyFile,
		AllowEmulation:         true,
		LauncherMemoryOverhead: resource.MustParse(overhead),
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		CrashLoopBackoff:       vm.Backoff{Base: 2 * time.Second, Max: 4 * time.Second},
		// Leader election is on, as in the chart: each restarted controller must win the lease
		// (released by the one before) before it reconciles.
		LeaderElect:             true,
		LeaderElectionNamespace: "default",
	})
	if err != nil {
		return fmt.Errorf("configure controller: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.done = make(chan error, 1)
	go func() { s.done <- c.Run(ctx) }()
	return nil
}

func (s *suite) stopController() {
	s.stop()
	select {
	case err := <-s.done:
		if err != nil {
			fmt.Fprintln(os.Stderr, "controller stopped with:", err)
		}
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "controller did not stop within 30s")
	}
}

func zapLevel() zapcore.Level {
	if os.Getenv("SLIMVIRT_TEST_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}
