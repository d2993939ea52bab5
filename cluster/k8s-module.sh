# k8s_module DIR NAME VERSION PKG...: makes DIR a Go module (named NAME) that requires
# k8s.io/kubernetes at VERSION with its staging modules at the matching v0 tags, as the
# kubernetes repo's own go.mod replaces them, and imports PKG... in a tools.go so that
# `go build`/`go test -c` of those packages resolve. Sourced by the scripts that build
# Kubernetes' commands and its e2e test binary from the Go module proxy.
k8s_module() {
  local dir=$1 name=$2 version=$3 upstream staging p
  shift 3
  staging=${version/#v1/v0}   # staging modules are tagged v0.X.Y for v1.X.Y
  mkdir -p "$dir"
  (cd "$dir" && go mod download -json "k8s.io/kubernetes@$version" >/dev/null)
  upstream=$(go env GOMODCACHE)/k8s.io/kubernetes@$version/go.mod
  {
    echo "module $name"
    echo
    grep -E '^go [0-9.]+' "$upstream"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    grep -E '=> \./staging/' "$upstream" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } > "$dir/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for p in "$@"; do printf '\t_ "%s"\n' "$p"; done
    printf ')\n'
  } > "$dir/tools.go"
  (cd "$dir" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1) || true
}
