package launcherpod

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"k8s.io/utils/ptr"
)

func TestParseInterfaces(t *testing.T) {
	tests := []struct {
		name, value string
		want        []Interface
		wantErr     string
	}{
		{"bridge", `[{"name":"default","binding":"bridge","tapOwner":107}]`, []Interface{{Name: "default", Binding: BindingBridge, TapOwner: ptr.To(107)}}, ""},
		{"empty list", `[]`, []Interface{}, ""},
		{"null", `null`, nil, "not a list"},
		{"object", `{"name":"default"}`, nil, "cannot unmarshal"},
		{"unknown field", `[{"name":"default","binding":"bridge","hostNetwork":true}]`, nil, "unknown field"},
		{"trailing data", `[] []`, nil, "data after the list"},
		{"truncated", `[{"name":`, nil, "unexpected EOF"},
		{"too big", "[" + strings.Repeat(" ", MaxInterfacesAnnotation) + "]", nil, "at most"},
		{"wrong type", `[{"name":"default","queues":"4"}]`, nil, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInterfaces(tt.value)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// FuzzParseInterfaces: the annotation a tenant may write is parsed within its bound, refused
// with an error or read into a list that encodes back to a value parsed the same way.
func FuzzParseInterfaces(f *testing.F) {
	for _, s := range []string{
		`[{"name":"default","binding":"bridge","tapOwner":107}]`,
		`[{"name":"default","binding":"masquerade","vmNetworkCIDR":"10.0.2.0/24","ports":[{"protocol":"TCP","port":80}],"queues":4}]`,
		`[]`, `null`, `[{"mac":"02:00:00:00:00:01"}] x`, `[{"name":"\u0000"}]`, `[[[[[[[[[[[[`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		got, err := ParseInterfaces(value)
		if err != nil {
			if got != nil {
				t.Fatalf("error %v with a result %+v", err, got)
			}
			return
		}
		if len(value) > MaxInterfacesAnnotation || got == nil {
			t.Fatalf("accepted %d bytes as %+v", len(value), got)
		}
		again, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("encode %+v: %v", got, err)
		}
		back, err := ParseInterfaces(string(again))
		if err != nil {
			t.Fatalf("parse %s again: %v", again, err)
		}
		// An empty list of ports and none encode alike.
		if twice, _ := json.Marshal(back); string(twice) != string(again) {
			t.Fatalf("round trip of %s gave %s", again, twice)
		}
	})
}
