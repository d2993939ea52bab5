package launcherexec

import (
	"errors"
	"fmt"
	"testing"

	"k8s.io/streaming/pkg/httpstream"
)

func TestFallBackToSPDY(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		// What client-go's websocket executor returns when the server refuses the upgrade.
		{"upgrade refused", fmt.Errorf("connect: %w", &httpstream.UpgradeFailureError{Cause: errors.New("403")}), true},
		{"https proxy", errors.New("proxy: unknown scheme: https"), true},
		{"other failure", errors.New("connection refused"), false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fallBackToSPDY(tc.err); got != tc.want {
				t.Errorf("fallBackToSPDY(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
