package driver_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/slimvirt/slimvirt/csi/driver"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestRegistration plays kubelet's plugin watcher: it finds the registration socket, asks for
// the plugin's info and reports success; the health endpoint answers through the CSI socket.
// Stopping the driver removes both sockets, which is how kubelet learns it is gone.
func TestRegistration(t *testing.T) {
	dir := t.TempDir()
	kubelet := filepath.Join(dir, "kubelet")
	endpoint := filepath.Join(kubelet, "plugins", driver.DefaultName, "csi.sock")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	healthAddr := lis.Addr().String()
	lis.Close()
	d, err := driver.New(driver.Config{Endpoint: "unix://" + endpoint, NodeID: "node-a", KubeletDir: kubelet,
		StateDir: filepath.Join(dir, "state"), Pools: []driver.Pool{{Name: "default", Dir: filepath.Join(dir, "pool")}},
		HealthAddr: healthAddr, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	reg := filepath.Join(kubelet, "plugins_registry", driver.DefaultName+"-reg.sock")
	testutil.WaitFor(t, 5*time.Second, "registration socket", func() bool { _, err := os.Stat(reg); return err == nil })
	conn, err := grpc.NewClient("unix://"+reg, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc := registerapi.NewRegistrationClient(conn)
	info, err := rc.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != driver.DefaultName || info.Endpoint != endpoint || len(info.SupportedVersions) == 0 {
		t.Fatalf("plugin info %+v", info)
	}
	if _, err := rc.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	var code int
	testutil.WaitFor(t, 5*time.Second, "healthz", func() bool {
		resp, err := http.Get("http://" + healthAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		code = resp.StatusCode
		return true
	})
	if code != http.StatusOK {
		t.Fatalf("healthz answered %d", code)
	}
	cancel()
	<-done
	done <- nil
	for _, sock := range []string{reg, endpoint} {
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Fatalf("socket %s left after stop: %v", sock, err)
		}
	}
}
