package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// permissions are the cgroup device permissions a pod gets: read and write, no mknod.
const permissions = "rw"

// plugin is the kubelet device plugin of one resource. Its devices are interchangeable tokens
// for the same device node: holding one lets a container open the node.
type plugin struct {
	pluginapi.UnimplementedDevicePluginServer

	res    Resource
	socket string
	ids    []string
	log    *slog.Logger

	mu sync.Mutex
	// health is empty until Plugins.Run first looks at the device, before it serves.
	health string
	// changed is closed, and replaced, when health changes; it wakes the ListAndWatch streams.
	changed chan struct{}

	// Used by Plugins.Run's goroutine only.
	server *grpc.Server
	// listening is the socket file server listens on.
	listening os.FileInfo
	// registeredWith is the kubelet socket the plugin last registered on.
	registeredWith os.FileInfo
}

func newPlugin(res Resource, short, socket string, count int, log *slog.Logger) *plugin {
	pl := &plugin{res: res, socket: socket, log: log, changed: make(chan struct{})}
	for i := range count {
		pl.ids = append(pl.ids, short+strconv.Itoa(i))
	}
	return pl
}

// deviceErr says why the device node (or the directory) is not usable, or nil when it is.
func (pl *plugin) deviceErr() error {
	if m := pl.res.Mount; m != nil {
		return mountErr(m)
	}
	fi, err := os.Stat(pl.res.Path)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeCharDevice == 0 {
		return fmt.Errorf("%s is not a character device (mode %s)", pl.res.Path, fi.Mode())
	}
	return nil
}

// mountErr says why a Mount cannot be given yet: its directory or its marker is missing. Neither
// may be a link: the runtime would mount what it points to.
func mountErr(m *Mount) error {
	fi, err := os.Lstat(m.HostPath)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (mode %s)", m.HostPath, fi.Mode())
	}
	marker := filepath.Join(m.HostPath, m.Marker)
	if fi, err = os.Lstat(marker); err != nil {
		return fmt.Errorf("not seeded yet: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (mode %s)", marker, fi.Mode())
	}
	return nil
}

func healthOf(err error) string {
	if err != nil {
		return pluginapi.Unhealthy
	}
	return pluginapi.Healthy
}

// checkHealth looks at the device node and wakes the ListAndWatch streams on a change.
func (pl *plugin) checkHealth() {
	err := pl.deviceErr()
	h := healthOf(err)
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if h == pl.health {
		return
	}
	pl.health = h
	close(pl.changed)
	pl.changed = make(chan struct{})
	if err != nil {
		pl.log.Warn("device missing, resource unhealthy: pods asking for it stay Pending", "device", pl.res.source(), "err", err)
	} else {
		pl.log.Info("device present, resource healthy", "device", pl.res.source())
	}
}

func (pl *plugin) state() (string, <-chan struct{}) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.health, pl.changed
}

func (pl *plugin) devices(health string) []*pluginapi.Device {
	devs := make([]*pluginapi.Device, len(pl.ids))
	for i, id := range pl.ids {
		devs[i] = &pluginapi.Device{ID: id, Health: health}
	}
	return devs
}

// serving says whether pl's server still listens on a socket the kubelet can reach.
func (pl *plugin) serving() bool {
	if pl.server == nil {
		return false
	}
	fi, err := os.Stat(pl.socket)
	return err == nil && os.SameFile(fi, pl.listening)
}

// serve (re)starts pl's gRPC server on a fresh socket.
func (pl *plugin) serve() error {
	pl.stop()
	if err := os.Remove(pl.socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", pl.socket, err)
	}
	lis, err := net.Listen("unix", pl.socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", pl.socket, err)
	}
	// stop removes the socket only while it is still ours.
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	fi, err := os.Stat(pl.socket)
	if err != nil {
		_ = lis.Close() // the stat's error is the one to report
		return fmt.Errorf("stat socket %s: %w", pl.socket, err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, pl)
	go func() {
		if err := srv.Serve(lis); err != nil {
			pl.log.Error("device plugin server failed", "socket", pl.socket, "err", err)
		}
	}()
	pl.server, pl.listening, pl.registeredWith = srv, fi, nil
	return nil
}

// stop ends pl's server and its streams and removes its socket if it is still there.
func (pl *plugin) stop() {
	if pl.server == nil {
		return
	}
	pl.server.Stop()
	if fi, err := os.Stat(pl.socket); err == nil && os.SameFile(fi, pl.listening) {
		if err := os.Remove(pl.socket); err != nil {
			pl.log.Error("removing device plugin socket failed", "socket", pl.socket, "err", err)
		}
	}
	pl.server, pl.listening, pl.registeredWith = nil, nil, nil
}

func (pl *plugin) options() *pluginapi.DevicePluginOptions {
	return &pluginapi.DevicePluginOptions{}
}

func (pl *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return pl.options(), nil
}

// ListAndWatch sends the devices, then again each time their health changes.
func (pl *plugin) ListAndWatch(_ *pluginapi.Empty, s grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	for {
		health, changed := pl.state()
		if err := s.Send(&pluginapi.ListAndWatchResponse{Devices: pl.devices(health)}); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-s.Context().Done():
			return nil
		}
	}
}

// Allocate gives each container the device node, once however many devices it holds.
func (pl *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	if err := pl.deviceErr(); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "allocate %s: %v", pl.res.Name, err)
	}
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		for _, id := range c.DevicesIds {
			if !slices.Contains(pl.ids, id) {
				return nil, status.Errorf(codes.InvalidArgument, "allocate %s: no device %q", pl.res.Name, id)
			}
		}
		if m := pl.res.Mount; m != nil {
			resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
				Mounts: []*pluginapi.Mount{{HostPath: m.HostPath, ContainerPath: m.ContainerPath, ReadOnly: true}},
			})
			pl.log.Info("allocated", "mount", m.HostPath, "ids", c.DevicesIds)
			continue
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Devices: []*pluginapi.DeviceSpec{{HostPath: pl.res.Path, ContainerPath: pl.res.Path, Permissions: permissions}},
		})
		pl.log.Info("allocated", "device", pl.res.Path, "ids", c.DevicesIds)
	}
	return resp, nil
}

// GetPreferredAllocation picks any devices: they are all the same. The kubelet does not ask,
// as the options do not offer it.
func (pl *plugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, c := range req.ContainerRequests {
		ids := slices.Clone(c.MustIncludeDeviceIDs)
		for _, id := range c.AvailableDeviceIDs {
			if len(ids) >= int(c.AllocationSize) {
				break
			}
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// PreStartContainer has nothing to prepare; the options do not ask the kubelet to call it.
func (pl *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// dial connects to a gRPC server on a unix socket.
func dial(socket string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
