package launcherpod

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// PodRef names one pod object. The UID sets apart a pod from a deleted one of the same name: a
// signature bound to it does not verify on a pod made again with copied annotations.
type PodRef struct {
	Namespace, Name, UID string
}

func (p PodRef) String() string { return p.Namespace + "/" + p.Name + " (uid " + p.UID + ")" }

// signatureDomain starts every signed message; it holds a '/', which no namespace (a DNS label)
// does, so no message signed by the older scheme (namespace first) can verify under this one.
const signatureDomain = "slimvirt.io/interfaces-signature/v2"

// maxSignatureLen bounds the hex signature the plugin decodes (SHA-256: 64 hex digits).
const maxSignatureLen = 2 * sha256.Size

// Reasons a signature does not verify, for logs and tests.
var (
	ErrNoKey          = errors.New("no signing key")
	ErrNoPodUID       = errors.New("pod has no UID")
	ErrBadSignature   = errors.New("signature is not a hex SHA-256 HMAC")
	ErrSignatureWrong = errors.New("signature does not match the pod and its interfaces")
)

// SignPod returns the signature of a launcher pod's interfaces annotation, bound to the pod's
// namespace, name and UID. The controller signs once the pod exists (its UID is known only
// then), before it lets the pod be scheduled.
func SignPod(key []byte, pod PodRef, interfaces string) string {
	return hex.EncodeToString(podMAC(key, pod, interfaces))
}

// VerifyPod says why signature is not SignPod(key, pod, interfaces), or nil when it is. An empty
// key or a pod without a UID verifies nothing.
func VerifyPod(key []byte, pod PodRef, interfaces, signature string) error {
	if len(key) == 0 {
		return ErrNoKey
	}
	if pod.UID == "" {
		return fmt.Errorf("verify signature of pod %s/%s: %w", pod.Namespace, pod.Name, ErrNoPodUID)
	}
	if len(signature) != maxSignatureLen {
		return fmt.Errorf("verify signature of pod %s: %w", pod, ErrBadSignature)
	}
	got, err := hex.DecodeString(signature)
	if err != nil {
		return fmt.Errorf("verify signature of pod %s: %w", pod, ErrBadSignature)
	}
	if !hmac.Equal(podMAC(key, pod, interfaces), got) {
		return fmt.Errorf("verify signature of pod %s: %w", pod, ErrSignatureWrong)
	}
	return nil
}

func podMAC(key []byte, pod PodRef, interfaces string) []byte {
	m := hmac.New(sha256.New, key)
	for _, part := range []string{signatureDomain, pod.Namespace, pod.Name, pod.UID} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	m.Write([]byte(interfaces))
	return m.Sum(nil)
}
