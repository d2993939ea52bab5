package webconsole_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestPages: the sign-in page, its script, a VMI's console page (names escaped) and that
// page's files, each with the security headers; other methods, foreign origins and odd paths
// are refused.
func TestPages(t *testing.T) {
	base, _ := startConsole(t)
	for path, want := range map[string]string{
		"/":                     "<title>slimvirt web console</title>",
		"/home.js":              "sessionStorage",
		"/home.css":             "body",
		"/vmis/ns1/vm.1/":       `<meta name="slimvirt-vmi" content="vm.1">`,
		"/vmis/ns1/vm.1/app.js": "base64url.bearer.authorization.k8s.io.",
		"/vmis/ns1/vm.1/vendor/novnc/core/rfb.js": "export default class RFB",
	} {
		resp, err := http.Get(base + path)
		testutil.Must(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d, want %q in the body", path, resp.StatusCode, want)
		}
		h := resp.Header
		if !strings.HasPrefix(h.Get("Content-Security-Policy"), "default-src 'self';") ||
			!strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
			h.Get("X-Frame-Options") != "DENY" || h.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s: headers %v", path, h)
		}
	}
	for _, tc := range []struct {
		method, path, origin string
		want                 int
	}{
		{http.MethodPost, "/", "", http.StatusMethodNotAllowed},
		{http.MethodGet, "/", "http://evil.example", http.StatusForbidden},
		{http.MethodGet, "/vmis/ns1/vm.1/index.html", "", http.StatusNotFound},
		{http.MethodGet, "/vmis/ns1/vm.1/vendor/", "", http.StatusNotFound},
		{http.MethodGet, "/vmis/ns1/VM/", "", http.StatusBadRequest},
		{http.MethodGet, "/vmis/ns1/vm.1/ws/console", "", http.StatusBadRequest}, // not a websocket
		{http.MethodGet, "/nothing", "", http.StatusNotFound},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, nil)
		testutil.Must(t, err)
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		testutil.Must(t, err)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s (Origin %q): %d, want %d", tc.method, tc.path, tc.origin, resp.StatusCode, tc.want)
		}
	}
}
