package webconsole

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
)

// TokenProtocolPrefix starts the websocket subprotocol that carries a bearer token, base64url
// without padding, as the kube-apiserver accepts it: browsers cannot set Authorization on a
// websocket. The server never chooses this protocol in its answer.
const TokenProtocolPrefix = "base64url.bearer.authorization.k8s.io."

// MaxTokenBytes bounds a token; service-account tokens and OIDC id_tokens are a few KiB.
const MaxTokenBytes = 16 << 10

var (
	errNoToken  = errors.New("no token: sign in with a Kubernetes bearer token")
	errBadToken = errors.New("the token is not a bearer token (printable ASCII, at most 16 KiB)")
)

// tokenOf is the request's bearer token: from an Authorization header (the browser's script,
// or a proxy in front that signed the user in), else from a websocket subprotocol.
func tokenOf(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", errBadToken
		}
		return checkToken(strings.TrimSpace(token))
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			enc, ok := strings.CutPrefix(strings.TrimSpace(p), TokenProtocolPrefix)
			if !ok {
				continue
			}
			if len(enc) > base64.RawURLEncoding.EncodedLen(MaxTokenBytes) {
				return "", errBadToken
			}
			b, err := base64.RawURLEncoding.DecodeString(enc)
			if err != nil {
				return "", errBadToken
			}
			return checkToken(string(b))
		}
	}
	return "", errNoToken
}

// checkToken refuses what cannot be a bearer token, so nothing odd reaches a header.
func checkToken(t string) (string, error) {
	if t == "" {
		return "", errNoToken
	}
	if len(t) > MaxTokenBytes {
		return "", errBadToken
	}
	for i := range len(t) {
		if t[i] < 0x21 || t[i] > 0x7e {
			return "", errBadToken
		}
	}
	return t, nil
}

// needToken answers 401 when the request has no usable token and returns it otherwise.
func needToken(w http.ResponseWriter, r *http.Request) (string, bool) {
	t, err := tokenOf(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="slimvirt"`)
		writeError(w, http.StatusUnauthorized, err.Error())
		return "", false
	}
	return t, true
}
