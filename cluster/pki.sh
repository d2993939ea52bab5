# make_pki writes the cluster CA and one ECDSA P-256 key pair per component into $PKI, plus a
# kubeconfig per client. Kept across runs (a warm cluster-up reuses them); a cert is remade only
# when it is missing or its SANs/subject no longer match what we ask for (node IP change).
# Sourced after lib.sh.

# sign NAME SUBJECT EXT [SANS]: EXT is "client", "server" or "both"; CA=NAME picks another
# signing CA than ca.
sign() {
  local name=$1 subj=$2 ext=$3 sans=${4:-} want have
  want="$subj|$ext|$sans"
  have=$(cat "$PKI/$name.spec" 2>/dev/null || true)
  [ -s "$PKI/$name.crt" ] && [ "$have" = "$want" ] && return 0
  local usage
  case $ext in
    client) usage="clientAuth" ;;
    server) usage="serverAuth" ;;
    both) usage="serverAuth,clientAuth" ;;
  esac
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } > "$PKI/$name.ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/${CA:-ca}.crt" -CAkey "$PKI/${CA:-ca}.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
  echo "$want" > "$PKI/$name.spec"
}

# kubeconfig NAME SERVER: a kubeconfig for the client cert NAME.
kubeconfig() {
  local name=$1 server=$2 out=${3:-$PKI/$1.kubeconfig}
  cat > "$out.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: slimvirt
  cluster:
    server: https://$server
    certificate-authority: $PKI/ca.crt
users:
- name: $name
  user:
    client-certificate: $PKI/$name.crt
    client-key: $PKI/$name.key
contexts:
- name: slimvirt
  context: {cluster: slimvirt, user: $name}
current-context: slimvirt
EOF
  mv "$out.tmp" "$out"
}

make_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if [ ! -s "$PKI/ca.crt" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=slimvirt-cluster-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt" 2>/dev/null
    rm -f "$PKI"/*.spec
  fi
  local api_sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE_NAME,IP:127.0.0.1,IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP"
  sign apiserver "/CN=kube-apiserver" server "$api_sans"
  sign etcd-server "/CN=etcd" both "DNS:localhost,IP:127.0.0.1"
  sign apiserver-etcd-client "/CN=kube-apiserver-etcd-client" client
  sign apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" client
  sign admin "/O=system:masters/CN=slimvirt-admin" client
  sign controller-manager "/CN=system:kube-controller-manager" client
  sign scheduler "/CN=system:kube-scheduler" client
  sign kube-proxy "/CN=system:kube-proxy" client
  sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" client
  sign kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" server "DNS:$NODE_NAME,IP:$NODE_IP"
  sign controller-manager-serving "/CN=kube-controller-manager" server "DNS:localhost,IP:127.0.0.1"
  sign scheduler-serving "/CN=kube-scheduler" server "DNS:localhost,IP:127.0.0.1"
  # The aggregation layer: the apiserver proxies to extension apiservers (e.g. subresource
  # APIs) as front-proxy-client, signed by its own CA as kubeadm does it.
  if [ ! -s "$PKI/front-proxy-ca.crt" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/front-proxy-ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/front-proxy-ca.key" -subj "/CN=slimvirt-front-proxy-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/front-proxy-ca.crt" 2>/dev/null
    rm -f "$PKI/front-proxy-client.spec"
  fi
  CA=front-proxy-ca sign front-proxy-client "/CN=front-proxy-client" client
  if [ ! -s "$PKI/sa.key" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
    openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  # Components inside the node namespace talk to the apiserver at the node IP; the admin
  # kubeconfig points at the forwarder in the root namespace.
  kubeconfig controller-manager "$NODE_IP:$API_PORT"
  kubeconfig scheduler "$NODE_IP:$API_PORT"
  kubeconfig kube-proxy "$NODE_IP:$API_PORT"
  kubeconfig kubelet "$NODE_IP:$API_PORT"
  kubeconfig admin "$NODE_IP:$API_PORT" "$PKI/admin-node.kubeconfig"
  kubeconfig admin "$API_LOCAL" "$KUBECONFIG_PATH"
  chmod 600 "$KUBECONFIG_PATH" "$PKI"/*.kubeconfig
}
