package binding

import (
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

func TestRecord(t *testing.T) {
	tests := []struct {
		name    string
		rec     Record
		alias   string // decoded instead of rec when set
		wantErr string
	}{
		{name: "bridge", rec: Record{Binding: launcherpod.BindingBridge, GuestMAC: "0a:58:0a:f4:00:07"}},
		{name: "masquerade", rec: Record{Binding: launcherpod.BindingMasquerade, GuestMAC: "02:00:00:00:00:01", VMNetwork: "10.0.2.0/24"}},
		{name: "foreign alias", alias: "uplink to rack 7", wantErr: "decode binding record"},
		{name: "no mac", alias: `{"binding":"bridge"}`, wantErr: "guest mac"},
		{name: "too long", rec: Record{Binding: "bridge", GuestMAC: "02:00:00:00:00:01", VMNetwork: strings.Repeat("x", 300)}, wantErr: "more than 255"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alias := tt.alias
			if alias == "" {
				var err error
				alias, err = tt.rec.Encode()
				if err != nil {
					if tt.wantErr == "" || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("Encode: %v, want %q", err, tt.wantErr)
					}
					return
				}
			}
			got, err := DecodeRecord(alias)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode: %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.rec {
				t.Fatalf("round trip = %+v, %v; want %+v", got, err, tt.rec)
			}
		})
	}
}
