package launcher

import "testing"

func TestQEMULogSummary(t *testing.T) {
	const started = `2026-11-27 17:09:40.101+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.0
LC_ALL=C \
PATH=/usr/sbin:/usr/bin \
/usr/bin/qemu-system-x86_64 \
-name guest=default_vm,debug-threads=on \
-msg timestamp=on
`
	tests := []struct{ name, log, want string }{
		{"killed", started + "2026-11-27 17:09:53.835+0000: shutting down, reason=crashed\n", "shutting down, reason=crashed"},
		{"an error from QEMU", started +
			"2026-11-27T17:09:41.2Z qemu-system-x86_64: -blockdev {...}: Could not open '/var/run/slimvirt/pvcs/data/disk.img': Permission denied\n" +
			"2026-11-27 17:09:41.300+0000: shutting down, reason=failed\n",
			"2026-11-27T17:09:41.2Z qemu-system-x86_64: -blockdev {...}: Could not open '/var/run/slimvirt/pvcs/data/disk.img': Permission denied; shutting down, reason=failed"},
		{"two starts: only the last counts", started + "2026-11-27 17:09:53.835+0000: shutting down, reason=shutdown\n" + started + "x: y\n", "x: y"},
		{"nothing after the command", started, "(QEMU said nothing)"},
		{"no command line", "qemu: early failure\n", "qemu: early failure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := qemuLogSummary(tt.log); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}
