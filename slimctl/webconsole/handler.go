package webconsole

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// handler answers the page, its files and its websockets, all under /SECRET/.
type handler struct {
	cfg     Config
	secret  string
	host    string // the listen address: the only Host and Origin accepted
	index   []byte
	files   http.Handler
	streams chan struct{}
}

func newHandler(cfg Config, secret, host string, streams chan struct{}) (*handler, error) {
	index, err := Page(cfg.Namespace, cfg.VMI)
	if err != nil {
		return nil, err
	}
	sub, err := Files()
	if err != nil {
		return nil, err
	}
	return &handler{cfg: cfg, secret: secret, host: host, index: index,
		files: http.FileServerFS(sub), streams: streams}, nil
}

// check decides whether a request may be served: the status to refuse it with, or 0.
func (h *handler) check(r *http.Request) (rest string, status int) {
	if r.Host != h.host {
		return "", http.StatusForbidden // a name that resolves here, but not ours: DNS rebinding
	}
	first, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if subtle.ConstantTimeCompare([]byte(first), []byte(h.secret)) != 1 {
		return "", http.StatusForbidden
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return "", http.StatusMethodNotAllowed
	}
	// Browsers send Origin on every websocket and on cross-origin fetches; only the page's own
	// origin may use the server. Top-level navigations and same-origin module loads send none.
	if o := r.Header.Get("Origin"); o != "" && o != "http://"+h.host {
		return "", http.StatusForbidden
	}
	return rest, 0
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, status := h.check(r)
	if status != 0 {
		h.cfg.Log.Warn("web console request refused", "status", status, "host", r.Host,
			"origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		http.Error(w, http.StatusText(status), status)
		return
	}
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws://"+h.host+
		"; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
	switch {
	case rest == "":
		hdr.Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(h.index)
	case streamKind(rest) != "":
		if r.Header.Get("Origin") == "" {
			http.Error(w, "websocket without Origin", http.StatusForbidden)
			return
		}
		h.bridge(w, r, streamKind(rest))
	case rest == "index.html" || strings.HasSuffix(rest, "/") || strings.Contains(rest, ".."):
		http.NotFound(w, r) // no directory listings, and the page only through its template
	default:
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + rest
		h.files.ServeHTTP(w, r2)
	}
}
