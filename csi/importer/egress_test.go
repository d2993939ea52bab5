package importer_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/csi/egress"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// listen serves h on addr (a loopback address) and counts the requests that reached it.
func listen(t *testing.T, addr string, h http.HandlerFunc) (string, *atomic.Int32) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	testutil.Must(t, err)
	var hits atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	})}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return "http://" + lis.Addr().String(), &hits
}

// TestEgress: an import may not reach the node's own network; the refusal is permanent, says
// why, and no request reaches the server. The servers are real listeners on loopback, and every
// URL is on loopback, so a broken check could never send a request off this machine; which
// other addresses are refused (link-local, the node's own) is csi/egress's TestCheck.
func TestEgress(t *testing.T) {
	dir, raw := images(t)
	files := &server{dir: dir}
	image, imageHits := listen(t, "127.0.0.1:0", files.ServeHTTP)
	redirect, _ := listen(t, "127.0.0.2:0", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, image+"/disk.raw", http.StatusFound)
	})
	denied, deniedHits := listen(t, "127.0.0.3:0", files.ServeHTTP)
	p := func(s string) []netip.Prefix {
		l, err := egress.ParseCIDRs(s)
		testutil.Must(t, err)
		return l
	}
	tests := []struct {
		name    string
		policy  egress.Policy
		url     string
		wantErr string // empty: the import succeeds
		hits    *atomic.Int32
	}{
		{"loopback refused", egress.Policy{}, image + "/disk.raw", "import refused: 127.0.0.1 is a loopback address of the node", imageHits},
		{"kubelet port refused", egress.Policy{}, "http://127.0.0.1:10250/", "import refused: 127.0.0.1 is a loopback address of the node", nil},
		{"IPv6 loopback refused", egress.Policy{}, "http://[::1]:10250/", "import refused: ::1 is a loopback address", nil},
		{"unspecified refused", egress.Policy{}, "http://0.0.0.0:10250/", "import refused: 0.0.0.0 is an unspecified address", nil},
		{"redirect to loopback refused", egress.Policy{Allow: p("127.0.0.2/32")}, redirect + "/x", "import refused: 127.0.0.1 is a loopback address of the node", imageHits},
		{"allow list re-permits loopback", egress.Policy{Allow: p("127.0.0.0/8")}, redirect + "/x", "", nil},
		{"deny list wins over allow list", egress.Policy{Allow: p("127.0.0.0/8"), Deny: p("127.0.0.3")}, denied + "/disk.raw", "import refused: 127.0.0.3 is in 127.0.0.3/32, which the cluster admin denies", deniedHits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before int32
			if tt.hits != nil {
				before = tt.hits.Load()
			}
			im := importer.New(importer.Config{Retries: 3, Backoff: 50 * time.Millisecond, Egress: tt.policy,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			target := newTarget(t, t.TempDir(), volSize)
			start := time.Now()
			err := im.Fetch(context.Background(), importer.Request{URL: tt.url}, target, nil)
			if tt.wantErr == "" {
				testutil.Must(t, err)
				checkDisk(t, target.Disk, raw)
				return
			}
			var pe *importer.PermanentError
			if err == nil || !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want a permanent one starting %q", err, tt.wantErr)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("refusal took %v: it was retried", d)
			}
			if tt.hits != nil && tt.hits.Load() != before {
				t.Fatal("a request reached the refused server")
			}
		})
	}
}

// TestNoProxyFromEnvironment: HTTP_PROXY does not carry an import past the check.
func TestNoProxyFromEnvironment(t *testing.T) {
	proxy, proxyHits := listen(t, "127.0.0.1:0", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("from the proxy"))
	})
	t.Setenv("HTTP_PROXY", proxy)
	t.Setenv("http_proxy", proxy)
	im := importer.New(importer.Config{Retries: 1, Backoff: 10 * time.Millisecond, Egress: egress.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	// Only the proxy's own address is allowed: through the proxy the request would succeed;
	// dialled directly, 127.0.0.5 is refused. No address off this machine is ever asked.
	err := im.Fetch(context.Background(), importer.Request{URL: "http://127.0.0.5:10250/latest/meta-data/"}, newTarget(t, t.TempDir(), volSize), nil)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.5 is a loopback address") {
		t.Fatalf("error %v, want the address refused", err)
	}
	if proxyHits.Load() != 0 {
		t.Fatal("the import went through the environment's proxy")
	}
}
