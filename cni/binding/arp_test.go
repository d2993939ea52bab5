package binding

import (
	"fmt"
	"net"
	"testing"
)

func TestGatewayARP(t *testing.T) {
	server, _ := net.ParseMAC("02:00:00:00:00:01")
	tests := []struct {
		name string
		snap Snapshot
		want string
	}{
		{"vpc: pinned default gateway", Snapshot{
			Routes:    []Route{{Dst: "169.254.1.1/32"}, {Dst: "0.0.0.0/0", Gw: "169.254.1.1"}, {Dst: "10.96.0.0/12", Gw: "169.254.1.1"}},
			Neighbors: []Neighbor{{IP: "169.254.1.1", MAC: "ee:ee:ee:ee:ee:ee"}},
		}, "[169.254.1.1 ee:ee:ee:ee:ee:ee 169.254.75.10 02:00:00:00:00:01]"},
		{"calico: gateway not pinned", Snapshot{
			Routes: []Route{{Dst: "169.254.1.1/32"}, {Dst: "0.0.0.0/0", Gw: "169.254.1.1"}},
		}, "[169.254.75.10 02:00:00:00:00:01]"},
		{"a pinned neighbour that is no gateway", Snapshot{
			Routes:    []Route{{Dst: "0.0.0.0/0", Gw: "10.0.0.1"}},
			Neighbors: []Neighbor{{IP: "10.0.0.9", MAC: "ee:ee:ee:ee:ee:ee"}},
		}, "[169.254.75.10 02:00:00:00:00:01]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range GatewayARP(&tt.snap, server) {
				got = append(got, e.IP.String(), e.MAC.String())
			}
			if s := fmt.Sprint(got); s != tt.want {
				t.Errorf("GatewayARP = %s, want %s", s, tt.want)
			}
		})
	}
}
