package webconsole

import (
	"embed"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"

	slimweb "github.com/slimvirt/slimvirt/slimctl/webconsole"
)

// assets holds the sign-in and VMI list page; the console page is slimctl's.
//
//go:embed assets
var assets embed.FS

// Handler answers the pages, the JSON API and the websockets:
//
//	GET /                                                 sign-in and VMI list page
//	GET /home.js, /home.css                               its script and style
//	GET /api/namespaces/NS/virtualmachineinstances        the VMIs the user may list, as JSON
//	GET /vmis/NS/NAME/                                    the VMI's screen and console page
//	GET /vmis/NS/NAME/ws/vnc, /vmis/NS/NAME/ws/console    its websockets
//	GET /vmis/NS/NAME/FILE                                the console page's script, style, libraries
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(s.home)
	})
	own := http.FileServerFS(s.own)
	mux.Handle("GET /home.js", own)
	mux.Handle("GET /home.css", own)
	mux.HandleFunc("GET /api/namespaces/{ns}/virtualmachineinstances", s.list)
	mux.HandleFunc("GET /vmis/{ns}/{name}/ws/{kind}", s.bridge)
	mux.HandleFunc("GET /vmis/{ns}/{name}/{file...}", s.vmiPage)
	return s.guard(mux)
}

// guard sets the security headers of every answer and refuses what a page of another origin
// could send: anything but GET, and any request whose Origin is not the page's own.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Set("Cache-Control", "no-store")
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Referrer-Policy", "no-referrer")
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
		hdr.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws://"+r.Host+" wss://"+r.Host+
			"; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, http.StatusMethodNotAllowed, "only GET is served")
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
			s.cfg.Log.Warn("web console request from another origin refused", "origin", o, "host", r.Host,
				"path", r.URL.Path, "remote", r.RemoteAddr)
			writeError(w, http.StatusForbidden, "request from another origin")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin says whether a browser's Origin header names the host the request was sent to.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		strings.EqualFold(u.Host, host) && u.Path == "" && u.User == nil
}

// vmiPage serves a VMI's console page and, beside it, the page's files. The page itself
// carries nothing secret: the token stays in the browser until a websocket offers it.
func (s *Server) vmiPage(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := vmiOf(w, r)
	if !ok {
		return
	}
	file := r.PathValue("file")
	if file == "" {
		page, err := slimweb.Page(ns, name)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "the console page is missing")
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
		return
	}
	if file == "index.html" || strings.HasSuffix(file, "/") || strings.Contains(file, "..") {
		writeError(w, http.StatusNotFound, "not found") // no directory listings, the page only through its template
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + file
	r2.URL.RawPath = ""
	http.FileServerFS(s.files).ServeHTTP(w, r2)
}

// vmiOf reads and validates the namespace and VMI name of a /vmis/NS/NAME/ path.
func vmiOf(w http.ResponseWriter, r *http.Request) (ns, name string, ok bool) {
	ns, name = r.PathValue("ns"), r.PathValue("name")
	if len(validation.IsDNS1123Label(ns)) != 0 {
		writeError(w, http.StatusBadRequest, "not a namespace name")
		return "", "", false
	}
	if len(validation.IsDNS1123Subdomain(name)) != 0 {
		writeError(w, http.StatusBadRequest, "not a VMI name")
		return "", "", false
	}
	return ns, name, true
}

// userConfig is the kube-apiserver's address and CA with the user's token: the server never
// acts for a user with credentials of its own.
func (s *Server) userConfig(token string) *rest.Config {
	c := rest.CopyConfig(s.api)
	c.BearerToken = token
	c.UserAgent = "slimvirt-webconsole"
	return c
}

// apiError is the body of every refusal of the JSON API and of the websockets' HTTP answers.
type apiError struct {
	Error string `json:"error"`
	Code  int    `json:"code"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(apiError{Error: msg, Code: code})
}
