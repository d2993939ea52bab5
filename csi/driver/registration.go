package driver

import (
	"context"
	"fmt"
	"path/filepath"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// registration answers kubelet's plugin watcher, which finds the socket in plugins_registry,
// asks GetInfo and tells the result. It does node-driver-registrar's job in-process.
type registration struct {
	registerapi.UnimplementedRegistrationServer
	d *Driver
}

func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.d.cfg.Name,
		Endpoint:          r.d.registrationPath(),
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registration) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if s.PluginRegistered {
		r.d.log.Info("registered with kubelet", "driver", r.d.cfg.Name)
	} else {
		r.d.log.Error("kubelet refused the plugin registration", "err", s.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func (d *Driver) registrationPath() string {
	if d.cfg.RegistrationPath != "" {
		return d.cfg.RegistrationPath
	}
	return socketPath(d.cfg.Endpoint)
}

// RegistrationSocket is where kubelet looks for the driver.
func (d *Driver) RegistrationSocket() string {
	return filepath.Join(d.cfg.KubeletDir, "plugins_registry", d.cfg.Name+"-reg.sock")
}

func (d *Driver) serveRegistration(errc chan<- error) (*grpc.Server, error) {
	lis, err := listenUnix(d.RegistrationSocket())
	if err != nil {
		return nil, fmt.Errorf("serve plugin registration: %w", err)
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, &registration{d: d})
	go func() { errc <- srv.Serve(lis) }()
	d.log.Info("serving kubelet plugin registration", "socket", d.RegistrationSocket())
	return srv, nil
}
