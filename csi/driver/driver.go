// Package driver is slimvirt-csi: the CSI Identity, Controller and Node services of the
// csi.slimvirt.io hostpath driver, one instance per node. Filesystem volumes are a directory
// holding a sparse raw disk.img of the requested size and whatever pods write beside it, held
// to the volume's size by a project quota where the pool's filesystem has them; block volumes
// are a loop device over the same kind of file. Snapshots are copies of a volume's disk in its
// pool (snapshot.go). The driver also fills volumes (clone, restore, HTTP import, upload) and serves
// kubelet plugin registration and a health endpoint itself.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/quota"
	"github.com/slimvirt/slimvirt/csi/state"
)

const (
	// DefaultName is the driver's CSI name.
	DefaultName = claim.DriverName
	// TopologyKey is the topology segment that pins a volume to its node.
	TopologyKey = claim.TopologyKey
	// ParamPool is the StorageClass parameter that picks a storage pool.
	ParamPool = "storagePool"

	// Parameters the external-provisioner adds with --extra-create-metadata.
	paramPVCName      = "csi.storage.k8s.io/pvc/name"
	paramPVCNamespace = "csi.storage.k8s.io/pvc/namespace"

	// defaultSize is used when CreateVolume asks for no particular size.
	defaultSize = 1 << 30
)

// Pool is a directory on the node that holds volumes.
type Pool struct {
	Name string
	Dir  string
}

// Cluster is what the driver needs from Kubernetes to fill volumes for DataVolumes. A driver
// without one serves plain volumes and clones only.
type Cluster interface {
	// ClaimSource reads what a PVC asks to be filled with; nil means a blank volume.
	ClaimSource(ctx context.Context, namespace, name string) (*claim.Source, error)
	// ReportContent publishes a volume's fill progress on its PVC.
	ReportContent(ctx context.Context, namespace, name string, c claim.Content) error
	// BasicAuth reads a username and password (keys accessKeyId/secretKey as in CDI, or
	// username/password) from a Secret.
	BasicAuth(ctx context.Context, namespace, secret string) (user, password string, err error)
	// CABundle reads the PEM certificates of a ConfigMap (every key).
	CABundle(ctx context.Context, namespace, configMap string) ([]byte, error)
}

// Filler fills a volume from an HTTP source. progress receives fractions from 0 to 1.
type Filler interface {
	Import(ctx context.Context, vol state.Volume, src claim.Import, progress func(float64)) error
}

// Config is everything a driver instance needs.
type Config struct {
	Name    string
	Version string
	// Endpoint is the CSI socket, unix:///path or /path.
	Endpoint string
	NodeID   string
	// KubeletDir enables kubelet plugin registration through KubeletDir/plugins_registry.
	KubeletDir string
	// RegistrationPath is the CSI socket path as kubelet sees it; the endpoint's by default.
	RegistrationPath string
	StateDir         string
	Pools            []Pool
	// MaxVolumesPerNode is reported to the scheduler; 0 means no limit.
	MaxVolumesPerNode int64
	// HealthAddr serves /healthz (empty: off).
	HealthAddr string
	// PublishWait is how long NodePublishVolume waits for a volume still being filled before
	// it answers Unavailable and lets kubelet retry.
	PublishWait time.Duration
	// SnapshotWait is how long CreateSnapshot waits for its copy before it answers
	// ready_to_use false; the sidecar asks again until it is ready.
	SnapshotWait time.Duration
	// NodeExpansionOnly leaves controller expansion out of the capabilities, so the resizer
	// hands every expansion to kubelet on the volume's node (multi-node clusters: the resizer
	// is not node-aware). Volumes then grow only while a pod uses them.
	NodeExpansionOnly bool
	// RequireQuota refuses to start with a pool whose filesystem does not enforce project
	// quotas; without it such a pool is served with disk.img-only accounting (and logged).
	RequireQuota bool
	Cluster      Cluster
	Filler       Filler
	Log          *slog.Logger
}

// Driver implements the CSI services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	cfg     Config
	log     *slog.Logger
	store   *state.Store
	mounter mount.Interface
	pools   map[string]string
	// quota says which pools (by name) give filesystem volumes project quotas.
	quota map[string]bool

	// mu serialises changes to volumes; long work (copies, imports) runs outside it.
	mu   sync.Mutex
	jobs *jobs
}

// New validates cfg and loads the driver's state.
func New(cfg Config) (*Driver, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.NodeID == "" {
		return nil, errors.New("a node ID is required")
	}
	if cfg.Endpoint == "" {
		return nil, errors.New("an endpoint is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("a state directory is required")
	}
	if len(cfg.Pools) == 0 {
		return nil, errors.New("at least one storage pool is required")
	}
	if cfg.PublishWait == 0 {
		cfg.PublishWait = 20 * time.Second
	}
	if cfg.SnapshotWait == 0 {
		cfg.SnapshotWait = 20 * time.Second
	}
	pools := map[string]string{}
	for _, p := range cfg.Pools {
		if p.Name == "" || p.Dir == "" {
			return nil, fmt.Errorf("pool %q=%q: a name and a directory are required", p.Name, p.Dir)
		}
		if _, dup := pools[p.Name]; dup {
			return nil, fmt.Errorf("pool %s given twice", p.Name)
		}
		if err := os.MkdirAll(p.Dir, 0o750); err != nil {
			return nil, fmt.Errorf("create pool %s dir %s: %w", p.Name, p.Dir, err)
		}
		pools[p.Name] = p.Dir
	}
	withQuota, err := detectQuotas(cfg)
	if err != nil {
		return nil, err
	}
	store, err := state.Open(filepath.Join(cfg.StateDir, "state.json"))
	if err != nil {
		return nil, err
	}
	d := &Driver{
		cfg:     cfg,
		log:     cfg.Log,
		store:   store,
		mounter: mount.New(""),
		pools:   pools,
		quota:   withQuota,
	}
	d.jobs = newJobs(d)
	return d, nil
}

// detectQuotas finds the pools whose filesystem accounts and enforces project quotas, and logs
// each pool's answer.
func detectQuotas(cfg Config) (map[string]bool, error) {
	out := map[string]bool{}
	for _, p := range cfg.Pools {
		err := quota.Supported(p.Dir)
		if err == nil {
			out[p.Name] = true
			cfg.Log.Info("pool has project quotas", "pool", p.Name, "dir", p.Dir, "projectQuota", true)
			continue
		}
		if cfg.RequireQuota {
			return nil, fmt.Errorf("pool %s (%s) has no project quotas and they are required: %w", p.Name, p.Dir, err)
		}
		cfg.Log.Warn("pool has no project quotas: filesystem volumes are held to their size by disk.img only, other files pods write are not limited",
			"pool", p.Name, "dir", p.Dir, "projectQuota", false, "reason", err.Error())
	}
	return out, nil
}

// Run serves the CSI socket (and registration and health when configured) until ctx ends.
func (d *Driver) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.jobs.resume(ctx)
	defer d.jobs.stopAll()

	srv, lis, err := d.listen()
	if err != nil {
		return err
	}
	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(lis) }()
	d.log.Info("serving CSI", "driver", d.cfg.Name, "endpoint", d.cfg.Endpoint, "node", d.cfg.NodeID)

	if d.cfg.KubeletDir != "" {
		reg, err := d.serveRegistration(errc)
		if err != nil {
			srv.Stop()
			return err
		}
		defer reg.Stop()
	}
	if d.cfg.HealthAddr != "" {
		hs := &http.Server{Addr: d.cfg.HealthAddr, Handler: d.healthHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := hs.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve health on %s: %w", d.cfg.HealthAddr, err)
			}
		}()
		defer hs.Close()
	}
	select {
	case <-ctx.Done():
		srv.GracefulStop()
		return nil
	case err := <-errc:
		srv.Stop()
		return err
	}
}

// Serve serves the CSI services on lis until it is closed; for tests and embedding.
func (d *Driver) Serve(ctx context.Context, lis net.Listener) error {
	d.jobs.resume(ctx)
	srv := d.grpcServer()
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	err := srv.Serve(lis)
	d.jobs.stopAll()
	return err
}

func (d *Driver) grpcServer() *grpc.Server {
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.logCalls))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	return srv
}

func (d *Driver) listen() (*grpc.Server, net.Listener, error) {
	path := socketPath(d.cfg.Endpoint)
	lis, err := listenUnix(path)
	if err != nil {
		return nil, nil, err
	}
	return d.grpcServer(), lis, nil
}

// socketPath strips the unix:// scheme CSI endpoints are written with.
func socketPath(endpoint string) string {
	p := strings.TrimPrefix(endpoint, "unix://")
	return strings.TrimPrefix(p, "unix:")
}

// listenUnix listens on path, replacing a socket an earlier run left behind.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create socket dir for %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return lis, nil
}

// logCalls logs every RPC with its outcome and turns stray plain errors into Internal, so no
// error leaves the driver as Unknown.
func (d *Driver) logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Error(codes.Internal, err.Error())
		}
		d.log.Info("CSI call failed", "method", method, "code", status.Code(err).String(), "err", status.Convert(err).Message(), "duration", time.Since(start))
		return resp, err
	}
	if method != "Probe" && method != "NodeGetCapabilities" && method != "GetPluginInfo" {
		d.log.Info("CSI call", "method", method, "duration", time.Since(start))
	}
	return resp, nil
}
