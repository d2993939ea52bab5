package state

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// TestReload checks that every kind of change survives a restart: the file is reopened after
// each change and must hold exactly what the live store holds.
func TestReload(t *testing.T) {
	base := Volume{ID: "vol-a", Name: "pvc-a", Pool: "default", Dir: "/pool/vol-a", Size: 1 << 20, Project: 1<<30 + 5,
		Content: claim.Content{Phase: claim.PhaseReady}, Created: time.Unix(1700000000, 0).UTC()}
	tests := []struct {
		name   string
		change func(*testing.T, *Store)
		want   map[string]Volume
	}{
		{"create", func(t *testing.T, s *Store) { testutil.Must(t, s.Put(base)) }, map[string]Volume{"vol-a": base}},
		{"expand", func(t *testing.T, s *Store) {
			testutil.Must(t, s.Put(base))
			_, err := s.Update("vol-a", func(v *Volume) error { v.Size = 2 << 20; return nil })
			testutil.Must(t, err)
		}, map[string]Volume{"vol-a": with(base, func(v *Volume) { v.Size = 2 << 20 })}},
		{"publish", func(t *testing.T, s *Store) {
			testutil.Must(t, s.Put(base))
			_, err := s.Update("vol-a", func(v *Volume) error {
				v.Published = map[string]Publication{"/target": {ReadOnly: true}}
				return nil
			})
			testutil.Must(t, err)
		}, map[string]Volume{"vol-a": with(base, func(v *Volume) { v.Published = map[string]Publication{"/target": {ReadOnly: true}} })}},
		{"fill progress", func(t *testing.T, s *Store) {
			testutil.Must(t, s.Put(with(base, func(v *Volume) {
				v.Source = &Source{Import: &claim.Import{URL: "http://127.0.0.1/x.img", Checksum: "sha256:00"}}
				v.Content = claim.Content{Phase: claim.PhasePopulating}
			})))
			_, err := s.Update("vol-a", func(v *Volume) error { v.Content.Progress = "42.00%"; v.Content.Restarts = 2; return nil })
			testutil.Must(t, err)
		}, map[string]Volume{"vol-a": with(base, func(v *Volume) {
			v.Source = &Source{Import: &claim.Import{URL: "http://127.0.0.1/x.img", Checksum: "sha256:00"}}
			v.Content = claim.Content{Phase: claim.PhasePopulating, Progress: "42.00%", Restarts: 2}
		})}},
		{"delete", func(t *testing.T, s *Store) {
			testutil.Must(t, s.Put(base))
			testutil.Must(t, s.Put(with(base, func(v *Volume) { v.ID, v.Name = "vol-b", "pvc-b" })))
			testutil.Must(t, s.Delete("vol-a"))
		}, map[string]Volume{"vol-b": with(base, func(v *Volume) { v.ID, v.Name = "vol-b", "pvc-b" })}},
		{"failed update changes nothing", func(t *testing.T, s *Store) {
			testutil.Must(t, s.Put(base))
			_, err := s.Update("vol-a", func(v *Volume) error { v.Size = 1; return os.ErrInvalid })
			if err == nil {
				t.Fatal("update error was swallowed")
			}
		}, map[string]Volume{"vol-a": base}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			s, err := Open(path)
			testutil.Must(t, err)
			tt.change(t, s)
			reopened, err := Open(path)
			testutil.Must(t, err)
			for _, st := range []*Store{s, reopened} {
				got := map[string]Volume{}
				for _, v := range st.List() {
					got[v.ID] = v
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("state = %+v\nwant    %+v", got, tt.want)
				}
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Fatalf("temp files left next to the state: %v", entries)
			}
		})
	}
}

// TestReloadSnapshots checks that every kind of change to snapshots survives a restart, next to
// the volumes: taken, copied, failed, deleted.
func TestReloadSnapshots(t *testing.T) {
	vol := Volume{ID: "vol-a", Name: "pvc-a", Pool: "default", Dir: "/pool/vol-a", Size: 1 << 20,
		Content: claim.Content{Phase: claim.PhaseReady}, Created: time.Unix(1700000000, 0).UTC()}
	base := Snapshot{ID: "snap-a", Name: "snapshot-a", SourceVolume: "vol-a", Pool: "default",
		Path: "/pool/snapshots/snap-a.img", Size: 1 << 20, Allocated: 4096, Created: time.Unix(1700000100, 0).UTC()}
	withSnap := func(f func(*Snapshot)) Snapshot { c := base; f(&c); return c }
	tests := []struct {
		name   string
		change func(*testing.T, *Store)
		want   map[string]Snapshot
	}{
		{"taken", func(t *testing.T, s *Store) { testutil.Must(t, s.PutSnapshot(base)) }, map[string]Snapshot{"snap-a": base}},
		{"copied", func(t *testing.T, s *Store) {
			testutil.Must(t, s.PutSnapshot(base))
			_, err := s.UpdateSnapshot("snap-a", func(sn *Snapshot) error { sn.Ready, sn.Reflinked, sn.Allocated = true, true, 8192; return nil })
			testutil.Must(t, err)
		}, map[string]Snapshot{"snap-a": withSnap(func(sn *Snapshot) { sn.Ready, sn.Reflinked, sn.Allocated = true, true, 8192 })}},
		{"failed", func(t *testing.T, s *Store) {
			testutil.Must(t, s.PutSnapshot(base))
			_, err := s.UpdateSnapshot("snap-a", func(sn *Snapshot) error { sn.Failed = "no space left on device"; return nil })
			testutil.Must(t, err)
		}, map[string]Snapshot{"snap-a": withSnap(func(sn *Snapshot) { sn.Failed = "no space left on device" })}},
		{"deleted", func(t *testing.T, s *Store) {
			testutil.Must(t, s.PutSnapshot(base))
			testutil.Must(t, s.PutSnapshot(withSnap(func(sn *Snapshot) { sn.ID, sn.Name = "snap-b", "snapshot-b" })))
			testutil.Must(t, s.DeleteSnapshot("snap-a"))
			testutil.Must(t, s.DeleteSnapshot("snap-unknown"))
		}, map[string]Snapshot{"snap-b": withSnap(func(sn *Snapshot) { sn.ID, sn.Name = "snap-b", "snapshot-b" })}},
		{"source volume deleted", func(t *testing.T, s *Store) {
			testutil.Must(t, s.PutSnapshot(base))
			testutil.Must(t, s.Delete("vol-a"))
		}, map[string]Snapshot{"snap-a": base}},
		{"failed update changes nothing", func(t *testing.T, s *Store) {
			testutil.Must(t, s.PutSnapshot(base))
			if _, err := s.UpdateSnapshot("snap-a", func(sn *Snapshot) error { sn.Ready = true; return os.ErrInvalid }); err == nil {
				t.Fatal("update error was swallowed")
			}
		}, map[string]Snapshot{"snap-a": base}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			s, err := Open(path)
			testutil.Must(t, err)
			testutil.Must(t, s.Put(vol))
			tt.change(t, s)
			reopened, err := Open(path)
			testutil.Must(t, err)
			for _, st := range []*Store{s, reopened} {
				got := map[string]Snapshot{}
				for _, sn := range st.ListSnapshots() {
					got[sn.ID] = sn
					byName, err := st.SnapshotByName(sn.Name)
					if err != nil || byName != sn {
						t.Errorf("snapshot named %s: %+v, %v", sn.Name, byName, err)
					}
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("snapshots = %+v\nwant        %+v", got, tt.want)
				}
			}
		})
	}
}

func TestCopiesAreIsolated(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.json"))
	testutil.Must(t, err)
	testutil.Must(t, s.Put(Volume{ID: "v", Published: map[string]Publication{"/a": {}}}))
	v, _ := s.Get("v")
	v.Published["/b"] = Publication{}
	again, _ := s.Get("v")
	if len(again.Published) != 1 {
		t.Fatal("changing a returned volume changed the store without saving")
	}
}

func TestOpenCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	testutil.Must(t, os.WriteFile(path, []byte("{not json"), 0o600))
	if _, err := Open(path); err == nil {
		t.Fatal("a corrupt state file was accepted")
	}
}

func with(v Volume, f func(*Volume)) Volume { c := v.clone(); f(&c); return c }
