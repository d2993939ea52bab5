package podnic

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"

	"github.com/slimvirt/slimvirt/runtime/domain"
)

// Tap attaches the VMI's first interface to an existing tap device, with no DHCP or ARP
// service: for running the launcher on its own with a tap made by hand, and for tests. In a
// launcher pod the CNI plugin's binding (For) is used instead.
type Tap struct {
	Tap string
	// MAC is the guest MAC; the spec's macAddress wins, and a random local one is made when both are empty.
	MAC string
	// MTU is the guest MTU; the tap's own when 0.
	MTU int
}

// Prepare checks that the tap exists and returns it as the one NIC.
func (n *Tap) Prepare(context.Context) ([]domain.NIC, error) {
	link, err := net.InterfaceByName(n.Tap)
	if err != nil {
		return nil, fmt.Errorf("find tap %s: %w", n.Tap, err)
	}
	mtu := n.MTU
	if mtu == 0 {
		mtu = link.MTU
	}
	mac := n.MAC
	if mac == "" {
		b := make([]byte, 6)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		b[0] = b[0]&0xfe | 0x02 // unicast, locally administered
		mac = net.HardwareAddr(b).String()
	}
	return []domain.NIC{{Tap: n.Tap, MAC: mac, MTU: mtu}}, nil
}

// Serve has nothing to serve; it waits for the guest to end.
func (n *Tap) Serve(ctx context.Context, _ func(net.IP)) error {
	<-ctx.Done()
	return nil
}
