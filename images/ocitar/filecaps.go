package ocitar

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// xattrCapability is the tar PAX record of a file's capabilities (security.capability), which
// containerd sets when it unpacks the layer.
const xattrCapability = "SCHILY.xattr.security.capability"

// capNumbers are the capabilities an image's files may carry, by their setcap(8) names.
var capNumbers = map[string]uint{
	"cap_chown":            0,
	"cap_dac_override":     1,
	"cap_net_bind_service": 10,
	"cap_net_admin":        12,
	"cap_net_raw":          13,
}

// fileCaps encodes "cap_a,cap_b" as a VFS_CAP_REVISION_2 security.capability value with the
// capabilities permitted and effective (setcap's "+ep").
func fileCaps(list string) (string, error) {
	var permitted uint64
	for _, n := range strings.Split(list, ",") {
		bit, ok := capNumbers[strings.ToLower(strings.TrimSpace(n))]
		if !ok {
			return "", fmt.Errorf("unknown capability %q", n)
		}
		permitted |= 1 << bit
	}
	const revision2, effective = 0x02000000, 0x1
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], revision2|effective)
	binary.LittleEndian.PutUint32(b[4:], uint32(permitted))
	binary.LittleEndian.PutUint32(b[12:], uint32(permitted>>32))
	return string(b), nil
}
