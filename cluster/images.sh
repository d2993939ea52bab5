# Binaries and images the cluster needs that are built here: the reference CNI plugins (cached
# by version), the test CNI plugin, the sandbox image, and image import into our containerd.
# Sourced after lib.sh.

CNI_PLUGINS=(bridge host-local loopback portmap ptp)

# ensure_cni_plugins_cache builds the plugins into the version cache unless all are there.
ensure_cni_plugins_cache() {
  local p pkgs=() missing=0
  for p in "${CNI_PLUGINS[@]}"; do [ -x "$CNI_PLUGINS_CACHE/$p" ] || missing=1; done
  if [ $missing = 1 ]; then
    for p in bridge loopback ptp; do pkgs+=("github.com/containernetworking/plugins/plugins/main/$p@$CNI_PLUGINS_VERSION"); done
    pkgs+=("github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_PLUGINS_VERSION")
    pkgs+=("github.com/containernetworking/plugins/plugins/meta/portmap@$CNI_PLUGINS_VERSION")
    mkdir -p "$CNI_PLUGINS_CACHE"
    (cd / && GOBIN=$CNI_PLUGINS_CACHE CGO_ENABLED=0 GOFLAGS= go install -trimpath -ldflags "-s -w" "${pkgs[@]}") ||
      die "build CNI plugins $CNI_PLUGINS_VERSION from the Go module proxy failed"
    step "CNI plugins $CNI_PLUGINS_VERSION built into $CNI_PLUGINS_CACHE"
  fi
}

# ensure_cni_plugins also copies them into CNI_BIN_DIR.
ensure_cni_plugins() {
  local p
  ensure_cni_plugins_cache
  mkdir -p "$CNI_BIN_DIR"
  for p in "${CNI_PLUGINS[@]}"; do
    cmp -s "$CNI_PLUGINS_CACHE/$p" "$CNI_BIN_DIR/$p" || install -m 0755 "$CNI_PLUGINS_CACHE/$p" "$CNI_BIN_DIR/$p"
  done
}

# newer_than OUT SRC...: true when OUT is missing or older than any SRC file.
newer_than() {
  local out=$1; shift
  [ -e "$out" ] || return 0
  [ -n "$(find "$@" -newer "$out" -print -quit 2>/dev/null)" ]
}

ensure_pause_image() {
  mkdir -p "$CLUSTER_OUT"
  newer_than "$CLUSTER_OUT/pause.tar" "$REPO_ROOT/cluster/pause" "$REPO_ROOT/images/ocitar" || return 0
  (cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$CLUSTER_OUT/pause" ./cluster/pause) ||
    die "build cluster/pause failed"
  (cd "$REPO_ROOT" && go run ./images/cmd/imagebuild -tag "$SANDBOX_IMAGE" -o "$CLUSTER_OUT/pause.tar" \
    -add "$CLUSTER_OUT/pause:/pause:0755" -entrypoint /pause) || die "build image $SANDBOX_IMAGE failed"
  step "sandbox image $SANDBOX_IMAGE built"
}

# ensure_metrics_server builds metrics-server from the Go module proxy (cached by version) and
# its image: the resource metrics API that `kubectl top` and HorizontalPodAutoscalers read.
ensure_metrics_server() {
  local bin=$METRICS_SERVER_CACHE/metrics-server
  if [ ! -x "$bin" ]; then
    mkdir -p "$METRICS_SERVER_CACHE"
    (cd / && GOBIN=$METRICS_SERVER_CACHE CGO_ENABLED=0 GOFLAGS= go install -trimpath -ldflags "-s -w" \
      "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION") ||
      die "build metrics-server $METRICS_SERVER_VERSION from the Go module proxy failed"
    step "metrics-server $METRICS_SERVER_VERSION built into $METRICS_SERVER_CACHE"
  fi
  mkdir -p "$CLUSTER_OUT"
  newer_than "$CLUSTER_OUT/metrics-server.tar" "$bin" "$REPO_ROOT/images/ocitar" || return 0
  (cd "$REPO_ROOT" && go run ./images/cmd/imagebuild -tag "$METRICS_SERVER_IMAGE" -o "$CLUSTER_OUT/metrics-server.tar" \
    -add "$bin:/metrics-server:0755" -entrypoint /metrics-server -user 65534) ||
    die "build image $METRICS_SERVER_IMAGE failed"
  step "image $METRICS_SERVER_IMAGE built"
}

# ensure_go_binary NAME PKG SRCDIR builds $CLUSTER_OUT/NAME from PKG when SRCDIR changed.
ensure_go_binary() {
  local name=$1 pkg=$2 src=$3
  mkdir -p "$CLUSTER_OUT"
  newer_than "$CLUSTER_OUT/$name" "$REPO_ROOT/$src" || return 0
  (cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -o "$CLUSTER_OUT/$name" "$pkg") || die "build $pkg failed"
  step "$name built"
}

ensure_testcni() {
  ensure_go_binary slimvirt-testcni ./cluster/testcni/cmd/slimvirt-testcni cluster/testcni
  install -m 0755 "$CLUSTER_OUT/slimvirt-testcni" "$CNI_BIN_DIR/slimvirt-testcni"
}

ensure_registry() {
  ensure_go_binary slimvirt-registry ./cluster/registry/cmd/slimvirt-registry cluster/registry
}

ensure_nsforward() {
  ensure_go_binary slimvirt-nsforward ./cluster/nsforward/cmd/slimvirt-nsforward cluster/nsforward
}

# image_tags prints the RepoTags of a docker-archive tarball.
image_tags() {
  tar -xOf "$1" manifest.json 2>/dev/null | grep -o '"RepoTags":\[[^]]*\]' | grep -o '"[^"]*"' | grep -v RepoTags | tr -d '"'
}

# import_image loads a docker-archive into our containerd unless the same file (size and
# mtime) was imported before and its tags are still there. Prints "imported" or "skipped".
# The stamp keeps the tags, so a skip reads neither the tarball nor more than one image list.
import_image() {
  local tar=$1 stamp_dir=$STATE_DIR/image-stamps stamp want tag tags have all=1
  mkdir -p "$stamp_dir"
  stamp=$stamp_dir/$(basename "$tar").stamp
  want=$(stat -c '%s %Y' "$tar")
  if [ "$(head -n1 "$stamp" 2>/dev/null)" = "$want" ]; then
    tags=$(sed -n 2p "$stamp")
    have=$("${CTR[@]}" images ls -q)
    for tag in $tags; do
      grep -qx -e "$tag" -e "docker.io/$tag" -e "docker.io/library/$tag" <<<"$have" || all=0
    done
    [ -n "$tags" ] && [ $all = 1 ] && { echo skipped; return 0; }
  fi
  tags=$(image_tags "$tar" | paste -sd' ')
  "${CTR[@]}" images import --no-unpack=false "$tar" >/dev/null || die "import $tar into containerd failed"
  printf '%s\n%s\n' "$want" "$tags" > "$stamp"
  echo imported
}

# remove_stale_containers deletes containers left in our containerd by an earlier run: their
# pods are gone (etcd starts empty) and their namespaces were removed.
remove_stale_containers() {
  local ids tasks id
  ids=$("${CTR[@]}" containers ls -q 2>/dev/null || true)
  [ -n "$ids" ] || return 0
  tasks=$("${CTR[@]}" tasks ls -q 2>/dev/null || true)
  for id in $tasks; do
    "${CTR[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
  done
  # shellcheck disable=SC2086
  "${CTR[@]}" containers delete $ids >/dev/null 2>&1 || true
  step "removed $(wc -w <<<"$ids") stale containers from containerd"
}
