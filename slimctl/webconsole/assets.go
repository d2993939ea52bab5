package webconsole

import (
	"embed"
	"fmt"
	"html"
	"io/fs"
	"strings"
)

// assets holds the page (index.html, with {{.Namespace}} and {{.VMI}} filled in), its script and style, and the
// vendored libraries that hack/webassets.sh puts into assets/vendor.
//
//go:embed assets/index.html assets/app.js assets/app.css assets/vendor
var assets embed.FS

// Page is the page of one VMI, for a server that serves it elsewhere (the in-cluster console).
// Its script, style and libraries load from paths relative to the page (see Files) and its
// websockets are ws/vnc and ws/console relative to it. When the browser's sessionStorage
// holds a token under "slimvirt-token", the page offers it to both websockets as the
// subprotocol base64url.bearer.authorization.k8s.io.<token>, besides "binary".
func Page(namespace, vmi string) ([]byte, error) {
	page, err := assets.ReadFile("assets/index.html")
	if err != nil {
		return nil, fmt.Errorf("read page: %w", err)
	}
	// Plain replacement, not html/template: text/template's reflection keeps the linker from
	// dropping unused methods, which would add megabytes to slimctl.
	return []byte(strings.NewReplacer("{{.Namespace}}", html.EscapeString(namespace),
		"{{.VMI}}", html.EscapeString(vmi)).Replace(string(page))), nil
}

// Files are the page's script, style and vendored libraries (app.js, app.css, vendor/...),
// without the page itself.
func Files() (fs.FS, error) {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("open assets: %w", err)
	}
	return sub, nil
}
