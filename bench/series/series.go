package series

import "time"

// File names in bench/results/.
const (
	StartLatencyFile = "start-latency.tsv"
	VMMemoryFile     = "vm-memory.tsv"
	ControlPlaneFile = "control-plane.tsv"
	CNIFile          = "cni.tsv"
)

// Shapes of a start-latency measurement.
const (
	ShapeSingle = "single" // one VMI at a time, the node settled in between
	ShapeBatch  = "batch"  // Together VMIs in one kubectl apply
)

// StartLatency is one VMI's start, timed from the start of the kubectl apply that created it.
type StartLatency struct {
	Shape    string
	Together int // VMIs created by the same apply (1 for ShapeSingle)
	VMI      string
	Running  time.Duration // until phase Running
	Lease    time.Duration // until the guest printed its DHCP lease marker
}

func startLatency() table[StartLatency] {
	type row = StartLatency
	return table[row]{
		"start latency per VMI (make bench-start): seconds from the start of the kubectl apply that created it\n" +
			"until phase Running and until the guest's DHCP lease marker; together = VMIs created by that apply",
		[]column[row]{
			text("shape", func(r *row) *string { return &r.Shape }),
			count("together", func(r *row) *int { return &r.Together }),
			text("vmi", func(r *row) *string { return &r.VMI }),
			duration("running_s", time.Second, func(r *row) *time.Duration { return &r.Running }),
			duration("lease_s", time.Second, func(r *row) *time.Duration { return &r.Lease }),
		}}
}

// WriteStartLatency writes rows to path.
func WriteStartLatency(path string, rows []StartLatency) error {
	return startLatency().write(path, rows)
}

// ReadStartLatency reads what WriteStartLatency wrote.
func ReadStartLatency(path string) ([]StartLatency, error) { return startLatency().read(path) }

// VMMemory is one VMI's launcher pod memory, measured while Running VMIs were running on the
// node (itself included).
type VMMemory struct {
	Running     int
	VMI         string
	Guest       int64 // guest RAM requested, bytes
	WorkingSet  int64 // the launcher pod's cgroup working set, bytes
	LauncherPSS int64 // slimvirt-launcher + libvirtd, bytes
	QEMUPSS     int64 // bytes
}

func vmMemory() table[VMMemory] {
	type row = VMMemory
	return table[row]{
		"memory per VM (make bench-cost): one row per VMI measured, with the number of VMIs Running on the node then;\n" +
			"working set = the launcher pod's cgroup working set; PSS of the launcher's own processes and of QEMU",
		[]column[row]{
			count("vmis_running", func(r *row) *int { return &r.Running }),
			text("vmi", func(r *row) *string { return &r.VMI }),
			bytes("guest_bytes", func(r *row) *int64 { return &r.Guest }),
			bytes("working_set_bytes", func(r *row) *int64 { return &r.WorkingSet }),
			bytes("launcher_pss_bytes", func(r *row) *int64 { return &r.LauncherPSS }),
			bytes("qemu_pss_bytes", func(r *row) *int64 { return &r.QEMUPSS }),
		}}
}

// WriteVMMemory writes rows to path.
func WriteVMMemory(path string, rows []VMMemory) error { return vmMemory().write(path, rows) }

// ReadVMMemory reads what WriteVMMemory wrote.
func ReadVMMemory(path string) ([]VMMemory, error) { return vmMemory().read(path) }

// ControlPlane is one component's cost while Running VMIs were running.
type ControlPlane struct {
	Running    int
	Component  string  // "controller", "node agent"
	CPU        float64 // cores, mean over Window
	WorkingSet int64   // bytes, at the end of Window
	Window     time.Duration
}

func controlPlane() table[ControlPlane] {
	type row = ControlPlane
	return table[row]{
		"control-plane cost (make bench-cost): per component and number of VMIs Running;\n" +
			"CPU = mean cores over the window, working set (cgroup) at its end",
		[]column[row]{
			count("vmis_running", func(r *row) *int { return &r.Running }),
			text("component", func(r *row) *string { return &r.Component }),
			decimal("cpu_cores", func(r *row) *float64 { return &r.CPU }),
			bytes("working_set_bytes", func(r *row) *int64 { return &r.WorkingSet }),
			duration("window_s", time.Second, func(r *row) *time.Duration { return &r.Window }),
		}}
}

// WriteControlPlane writes rows to path.
func WriteControlPlane(path string, rows []ControlPlane) error {
	return controlPlane().write(path, rows)
}

// ReadControlPlane reads what WriteControlPlane wrote.
func ReadControlPlane(path string) ([]ControlPlane, error) { return controlPlane().read(path) }

// CNISample is one ADD and the DEL after it, on one chain.
type CNISample struct {
	Chain string // "bridge", "bridge + slimvirt"
	Run   int
	Add   time.Duration
	Del   time.Duration
}

func cni() table[CNISample] {
	type row = CNISample
	return table[row]{
		"CNI chain latency (make bench-cni): each ADD and the DEL after it, chains alternating run by run",
		[]column[row]{
			text("chain", func(r *row) *string { return &r.Chain }),
			count("run", func(r *row) *int { return &r.Run }),
			duration("add_ms", time.Millisecond, func(r *row) *time.Duration { return &r.Add }),
			duration("del_ms", time.Millisecond, func(r *row) *time.Duration { return &r.Del }),
		}}
}

// WriteCNI writes rows to path.
func WriteCNI(path string, rows []CNISample) error { return cni().write(path, rows) }

// ReadCNI reads what WriteCNI wrote.
func ReadCNI(path string) ([]CNISample, error) { return cni().read(path) }
