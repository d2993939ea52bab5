package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/slimvirt/slimvirt/cni/binding"
	"github.com/slimvirt/slimvirt/cni/netconf"
	"github.com/slimvirt/slimvirt/internal/atomicfile"
)

// record is one attachment the plugin made, kept in <stateDir>/attachments/<network>/.
type record struct {
	ContainerID string              `json:"containerID"`
	IfName      string              `json:"ifName"`
	Netns       string              `json:"netns"`
	Attachment  *binding.Attachment `json:"attachment"`
}

// isFileToken says whether s may name a state file: the runtime picks container IDs and network
// names, and they become file names only when they are plain tokens, so nothing is ever written
// outside the state directory.
func isFileToken(s string) bool {
	if len(s) == 0 || len(s) > 251 || s[0] == '.' || s[0] == '-' || s[0] == '_' || strings.Contains(s, "..") {
		return false
	}
	for _, c := range s {
		if ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'; !ok {
			return false
		}
	}
	return true
}

type store struct{ dir string }

func newStore(conf *netconf.Config) (*store, error) {
	if err := conf.CheckStateDir(); err != nil {
		return nil, err
	}
	stateDir, network := conf.StateDir, conf.Name
	if network == "" {
		network = "unnamed"
	}
	if !isFileToken(network) {
		return nil, fmt.Errorf("network name %q cannot name a state directory", network)
	}
	return &store{dir: filepath.Join(stateDir, "attachments", network)}, nil
}

func (s *store) path(containerID, ifName string) (string, error) {
	for _, v := range []string{containerID, ifName} {
		if !isFileToken(v) {
			return "", fmt.Errorf("%q cannot name a state file", v)
		}
	}
	return filepath.Join(s.dir, containerID+"_"+ifName+".json"), nil
}

// save writes the record atomically, synced to disk before ADD touches the netns.
func (s *store) save(r *record) error {
	p, err := s.path(r.ContainerID, r.IfName)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create state directory %s: %w", s.dir, err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := atomicfile.WriteFile(p, b, 0o600); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return nil
}

// load returns the record, or nil when there is none.
func (s *store) load(containerID, ifName string) (*record, error) {
	p, err := s.path(containerID, ifName)
	if err != nil {
		return nil, err
	}
	return readRecord(p)
}

func readRecord(p string) (*record, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file %s: %w", p, err)
	}
	r := &record{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("parse state file %s: %w", p, err)
	}
	if r.Attachment == nil {
		return nil, fmt.Errorf("parse state file %s: no attachment", p)
	}
	return r, nil
}

func (s *store) remove(containerID, ifName string) error {
	p, err := s.path(containerID, ifName)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove state file %s: %w", p, err)
	}
	return nil
}

// list returns every record of the network.
func (s *store) list() ([]*record, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list state directory %s: %w", s.dir, err)
	}
	var out []*record
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		r, err := readRecord(filepath.Join(s.dir, e.Name()))
		if err != nil || r == nil {
			// An unreadable record cannot be undone; drop it so GC does not trip on it forever.
			_ = os.Remove(filepath.Join(s.dir, e.Name()))
			continue
		}
		out = append(out, r)
	}
	return out, nil
}
