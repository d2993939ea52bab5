// Package state keeps what slimvirt-csi knows about its volumes and snapshots in one JSON file.
//
// Every change is written before the call that made it returns, atomically (internal/atomicfile:
// a temp file in the same directory, fsync, rename, fsync of the directory), so a driver killed
// at any point restarts with either the old or the new state and never with a torn file. csi-driver-host-path lost updates because only
// some changes were saved (its issue #457); here the only way to change state is a method that
// saves. Readers get copies, so a caller cannot change state without saving it.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/internal/atomicfile"
)

// Volume is one volume on this node.
type Volume struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Pool string `json:"pool"`
	// Dir is the volume's directory. It holds disk.img and, for a filesystem volume, whatever
	// the pods that mount it write there.
	Dir string `json:"dir"`
	// Size is the capacity in bytes: disk.img's exact length.
	Size  int64 `json:"size"`
	Block bool  `json:"block,omitempty"`
	// Project is the filesystem volume's project quota ID (0: no quota): the pool's filesystem
	// charges everything under Dir to it and holds it to the volume's limit.
	Project uint32 `json:"project,omitempty"`
	// Source says how the content is made; nil for a blank volume.
	Source *Source `json:"source,omitempty"`
	// Claim is the PVC the volume was made for, when the provisioner said.
	Claim *Claim `json:"claim,omitempty"`
	// Content is the state of the volume's content, as it is reported on the claim.
	Content claim.Content `json:"content"`
	// Published maps target paths to their publication.
	Published map[string]Publication `json:"published,omitempty"`
	// LoopDevice is the device attached to disk.img for a published block volume.
	LoopDevice string    `json:"loopDevice,omitempty"`
	Created    time.Time `json:"created"`
}

// Source is where a volume's content comes from.
type Source struct {
	// CloneOf is the ID of the volume this one copies.
	CloneOf string `json:"cloneOf,omitempty"`
	// Snapshot is the ID of the snapshot this volume is made from.
	Snapshot string `json:"snapshot,omitempty"`
	// Import is an HTTP import.
	Import *claim.Import `json:"import,omitempty"`
	// Upload means the content arrives through the upload endpoint.
	Upload bool `json:"upload,omitempty"`
}

// Claim names a PVC.
type Claim struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Publication is one NodePublishVolume.
type Publication struct {
	ReadOnly bool `json:"readOnly,omitempty"`
}

func (v Volume) clone() Volume {
	c := v
	if v.Source != nil {
		s := *v.Source
		if v.Source.Import != nil {
			i := *v.Source.Import
			s.Import = &i
		}
		c.Source = &s
	}
	if v.Claim != nil {
		cl := *v.Claim
		c.Claim = &cl
	}
	if v.Published != nil {
		c.Published = make(map[string]Publication, len(v.Published))
		for k, p := range v.Published {
			c.Published[k] = p
		}
	}
	return c
}

// Snapshot is a point-in-time copy of a volume's disk, a file of its own in the source
// volume's pool. It does not depend on its source: a reflink shares blocks copy-on-write.
type Snapshot struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// SourceVolume is the ID of the volume the snapshot was taken of.
	SourceVolume string `json:"sourceVolume"`
	Pool         string `json:"pool"`
	// Path is the snapshot's file.
	Path string `json:"path"`
	// Size is the source volume's size when the snapshot was taken: the least a volume made
	// from it holds.
	Size int64 `json:"size"`
	// Allocated is what the copy occupies on disk.
	Allocated int64 `json:"allocated,omitempty"`
	// Reflinked says the copy shares its blocks with the source's disk (copy-on-write).
	Reflinked bool `json:"reflinked,omitempty"`
	// Ready is set once the copy is complete.
	Ready bool `json:"ready,omitempty"`
	// Failed says why the copy did not complete; such a snapshot is taken again from scratch.
	Failed  string    `json:"failed,omitempty"`
	Created time.Time `json:"created"`
}

// ErrNotFound is returned for an unknown volume or snapshot.
var ErrNotFound = errors.New("not found")

// Store is the persisted set of volumes and snapshots. It is safe for concurrent use.
type Store struct {
	path      string
	mu        sync.Mutex
	volumes   map[string]Volume
	snapshots map[string]Snapshot
}

type file struct {
	Volumes   []Volume   `json:"volumes"`
	Snapshots []Snapshot `json:"snapshots,omitempty"`
}

// Open loads the state at path, or starts empty when the file does not exist yet.
func Open(path string) (*Store, error) {
	s := &Store{path: path, volumes: map[string]Volume{}, snapshots: map[string]Snapshot{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse state %s: %w", path, err)
	}
	for _, v := range f.Volumes {
		s.volumes[v.ID] = v
	}
	for _, sn := range f.Snapshots {
		s.snapshots[sn.ID] = sn
	}
	return s, nil
}

// Get returns a copy of the volume with the given ID.
func (s *Store) Get(id string) (Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.volumes[id]
	if !ok {
		return Volume{}, fmt.Errorf("get volume %s: %w", id, ErrNotFound)
	}
	return v.clone(), nil
}

// ByName returns a copy of the volume created under the given CSI name.
func (s *Store) ByName(name string) (Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.volumes {
		if v.Name == name {
			return v.clone(), nil
		}
	}
	return Volume{}, fmt.Errorf("get volume named %s: %w", name, ErrNotFound)
}

// List returns copies of all volumes, sorted by ID so pagination is stable.
func (s *Store) List() []Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Volume, 0, len(s.volumes))
	for _, v := range s.volumes {
		out = append(out, v.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Put adds or replaces a volume and saves the state.
func (s *Store) Put(v Volume) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.volumes[v.ID]
	s.volumes[v.ID] = v.clone()
	if err := s.save(); err != nil {
		if had {
			s.volumes[v.ID] = old
		} else {
			delete(s.volumes, v.ID)
		}
		return err
	}
	return nil
}

// Update applies fn to the stored volume and saves the result; fn's error aborts the change.
func (s *Store) Update(id string, fn func(*Volume) error) (Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.volumes[id]
	if !ok {
		return Volume{}, fmt.Errorf("update volume %s: %w", id, ErrNotFound)
	}
	v := old.clone()
	if err := fn(&v); err != nil {
		return old.clone(), err
	}
	s.volumes[id] = v
	if err := s.save(); err != nil {
		s.volumes[id] = old
		return old.clone(), err
	}
	return v.clone(), nil
}

// Delete removes a volume and saves the state; deleting an unknown volume is not an error.
func (s *Store) Delete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.volumes[id]
	if !ok {
		return nil
	}
	delete(s.volumes, id)
	if err := s.save(); err != nil {
		s.volumes[id] = old
		return err
	}
	return nil
}

// save writes the state atomically. The caller holds s.mu.
func (s *Store) save() error {
	f := file{Volumes: make([]Volume, 0, len(s.volumes))}
	for _, v := range s.volumes {
		f.Volumes = append(f.Volumes, v)
	}
	sort.Slice(f.Volumes, func(i, j int) bool { return f.Volumes[i].ID < f.Volumes[j].ID })
	f.Snapshots = s.sortedSnapshots()
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir %s: %w", dir, err)
	}
	if err := atomicfile.WriteFile(s.path, data, 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// GetSnapshot returns the snapshot with the given ID.
func (s *Store) GetSnapshot(id string) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, ok := s.snapshots[id]
	if !ok {
		return Snapshot{}, fmt.Errorf("get snapshot %s: %w", id, ErrNotFound)
	}
	return sn, nil
}

// SnapshotByName returns the snapshot taken under the given CSI name.
func (s *Store) SnapshotByName(name string) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sn := range s.snapshots {
		if sn.Name == name {
			return sn, nil
		}
	}
	return Snapshot{}, fmt.Errorf("get snapshot named %s: %w", name, ErrNotFound)
}

// ListSnapshots returns all snapshots, sorted by ID so pagination is stable.
func (s *Store) ListSnapshots() []Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedSnapshots()
}

// sortedSnapshots is the snapshots by ID. The caller holds s.mu.
func (s *Store) sortedSnapshots() []Snapshot {
	out := make([]Snapshot, 0, len(s.snapshots))
	for _, sn := range s.snapshots {
		out = append(out, sn)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// PutSnapshot adds or replaces a snapshot and saves the state.
func (s *Store) PutSnapshot(sn Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.snapshots[sn.ID]
	s.snapshots[sn.ID] = sn
	if err := s.save(); err != nil {
		if had {
			s.snapshots[sn.ID] = old
		} else {
			delete(s.snapshots, sn.ID)
		}
		return err
	}
	return nil
}

// UpdateSnapshot applies fn to the stored snapshot and saves the result; fn's error aborts the
// change.
func (s *Store) UpdateSnapshot(id string, fn func(*Snapshot) error) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.snapshots[id]
	if !ok {
		return Snapshot{}, fmt.Errorf("update snapshot %s: %w", id, ErrNotFound)
	}
	sn := old
	if err := fn(&sn); err != nil {
		return old, err
	}
	s.snapshots[id] = sn
	if err := s.save(); err != nil {
		s.snapshots[id] = old
		return old, err
	}
	return sn, nil
}

// DeleteSnapshot removes a snapshot and saves the state; deleting an unknown snapshot is not
// an error.
func (s *Store) DeleteSnapshot(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.snapshots[id]
	if !ok {
		return nil
	}
	delete(s.snapshots, id)
	if err := s.save(); err != nil {
		s.snapshots[id] = old
		return err
	}
	return nil
}
