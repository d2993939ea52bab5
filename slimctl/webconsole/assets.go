package webconsole

import "embed"

// assets holds the page (index.html, with {{.Namespace}} and {{.VMI}} filled in), its script and style, and the
// vendored libraries that hack/webassets.sh puts into assets/vendor.
//
//go:embed assets/index.html assets/app.js assets/app.css assets/vendor
var assets embed.FS
