package series

import (
	"testing"
	"time"
)

func TestReadStartLatencySummary(t *testing.T) {
	rows, err := ReadStartLatencySummary(writeFile(t, StartLatencyTableFile, testdata(t, StartLatencyTableFile)))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("got %d rows, want 3: %+v", len(rows), rows)
	}
	want := StartLatencySummary{Label: "batch created together", N: 10, RunningP50: 5800 * time.Millisecond,
		RunningP95: 6900 * time.Millisecond, LeaseP50: 70600 * time.Millisecond, LeaseP95: 72300 * time.Millisecond}
	if rows[1] != want {
		t.Errorf("row 2 = %+v, want %+v", rows[1], want)
	}
	if rows[2].LeaseP50 != 0 || rows[2].RunningP95 != 29700*time.Millisecond {
		t.Errorf("row 3 (with \"-\") = %+v", rows[2])
	}
}

func TestReadControlPlaneSummary(t *testing.T) {
	rows, err := ReadControlPlaneSummary(writeFile(t, ControlPlaneTableFile, testdata(t, ControlPlaneTableFile)))
	if err != nil {
		t.Fatal(err)
	}
	want := []ControlPlane{
		{Running: 0, Component: "controller", CPU: 0.003, WorkingSet: 17301504},
		{Running: 20, Component: "controller", CPU: 0.003, WorkingSet: 18664653},
		{Running: 0, Component: "node agent", CPU: 0.008, WorkingSet: 49387930},
		{Running: 20, Component: "node agent", CPU: 0.010, WorkingSet: 52848230},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %+v, want %+v", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, rows[i], want[i])
		}
	}
}
