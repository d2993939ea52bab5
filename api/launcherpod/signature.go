package launcherpod

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// Sign returns the signature of a launcher pod's interfaces annotation. It binds the value to
// the pod's namespace and name, so a signed annotation copied onto another pod does not verify.
func Sign(key []byte, namespace, pod, interfaces string) string {
	return hex.EncodeToString(mac(key, namespace, pod, interfaces))
}

// Verify says whether signature is Sign(key, namespace, pod, interfaces). An empty key verifies
// nothing.
func Verify(key []byte, namespace, pod, interfaces, signature string) bool {
	if len(key) == 0 {
		return false
	}
	got, err := hex.DecodeString(signature)
	if err != nil {
		return false
	}
	return hmac.Equal(mac(key, namespace, pod, interfaces), got)
}

func mac(key []byte, namespace, pod, interfaces string) []byte {
	m := hmac.New(sha256.New, key)
	for _, part := range []string{namespace, pod} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	m.Write([]byte(interfaces))
	return m.Sum(nil)
}
