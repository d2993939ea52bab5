// Package install puts the slimvirt CNI plugin on a node: it copies the binary into the CNI bin
// dir, appends slimvirt to the node's existing conflist (keeping the original aside to restore
// it byte for byte), puts it back when the cluster CNI rewrites its file, and takes it all out
// again on uninstall.
package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/slimvirt/slimvirt/cni/netconf"
)

// PluginType is the plugin's "type" in a conflist and its file name in the CNI bin dir.
const PluginType = "slimvirt"

// EntryOptions are the admin's choices written into slimvirt's conflist entry, where the
// plugin reads them and no tenant can change them.
type EntryOptions struct {
	// AllowCustomMACs lets VMs on the bridge binding use MACs that are not locally
	// administered. A MAC another party on the node uses is refused either way.
	AllowCustomMACs bool
}

// Entry is slimvirt's conflist entry. An option left at its default is not written, so a node's
// conflist stays as an older installer wrote it.
func Entry(signingKeyFile, stateDir string, opts EntryOptions) map[string]any {
	e := map[string]any{
		"type":           PluginType,
		"signingKeyFile": signingKeyFile,
		"stateDir":       stateDir,
		"capabilities":   map[string]any{netconf.PodAnnotationsCapability: true},
	}
	if opts.AllowCustomMACs {
		e["allowCustomMACs"] = true
	}
	return e
}

// isConfigFile says whether libcni would load name.
func isConfigFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	switch filepath.Ext(name) {
	case ".conf", ".conflist", ".json":
		return true
	}
	return false
}

// pickConfig returns the file the runtime uses (libcni loads the lexically first), skipping
// files that hold nothing but slimvirt. want, when set, names the file.
func pickConfig(dir, want string) (string, error) {
	if want != "" {
		p := filepath.Join(dir, filepath.Base(want))
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%w: %s is missing", ErrNoConfig, p)
		} else if err != nil {
			return "", fmt.Errorf("find conflist %s: %w", p, err)
		}
		return p, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("list %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() && isConfigFile(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		doc, err := parseConfig(n, b)
		if err != nil || onlyOurs(doc) {
			continue
		}
		return filepath.Join(dir, n), nil
	}
	return "", fmt.Errorf("%w in %s", ErrNoConfig, dir)
}

// ErrNoConfig means the node has no CNI configuration yet (the cluster CNI writes it later).
var ErrNoConfig = errors.New("no CNI configuration")

// parseConfig reads a .conflist (or a single-plugin .conf, returned as a one-plugin list).
func parseConfig(name string, b []byte) (map[string]any, error) {
	doc := map[string]any{}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", name, err)
	}
	if _, ok := doc["plugins"]; ok {
		if _, ok := doc["plugins"].([]any); !ok {
			return nil, fmt.Errorf("parse %s: plugins is not a list", name)
		}
		return doc, nil
	}
	if _, ok := doc["type"].(string); !ok {
		return nil, fmt.Errorf("parse %s: neither a conflist nor a plugin config", name)
	}
	// A single plugin config becomes a list of one, as libcni's ConfListFromConf does.
	list := map[string]any{"cniVersion": doc["cniVersion"], "name": doc["name"], "plugins": []any{doc}}
	return list, nil
}

func plugins(doc map[string]any) []any {
	p, _ := doc["plugins"].([]any)
	return p
}

func isOurs(p any) bool {
	m, ok := p.(map[string]any)
	return ok && m["type"] == PluginType
}

func onlyOurs(doc map[string]any) bool {
	ps := plugins(doc)
	if len(ps) == 0 {
		return false
	}
	for _, p := range ps {
		if !isOurs(p) {
			return false
		}
	}
	return true
}

// hasEntry says whether doc ends with exactly entry.
func hasEntry(doc map[string]any, entry map[string]any) bool {
	ps := plugins(doc)
	if len(ps) == 0 || !isOurs(ps[len(ps)-1]) {
		return false
	}
	for _, p := range ps[:len(ps)-1] {
		if isOurs(p) {
			return false
		}
	}
	a, _ := json.Marshal(ps[len(ps)-1])
	b, _ := json.Marshal(entry)
	return bytes.Equal(a, b)
}

func containsOurs(doc map[string]any) bool {
	for _, p := range plugins(doc) {
		if isOurs(p) {
			return true
		}
	}
	return false
}

// withoutOurs returns doc with every slimvirt entry removed.
func withoutOurs(doc map[string]any) ([]byte, error) {
	out := map[string]any{}
	for k, v := range doc {
		out[k] = v
	}
	var ps []any
	for _, p := range plugins(doc) {
		if !isOurs(p) {
			ps = append(ps, p)
		}
	}
	out["plugins"] = ps
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode conflist: %w", err)
	}
	return append(b, '\n'), nil
}

// chained returns doc with every slimvirt entry removed and entry appended last.
func chained(doc map[string]any, entry map[string]any) ([]byte, error) {
	if v, _ := doc["cniVersion"].(string); v != "" && (strings.HasPrefix(v, "0.1") || strings.HasPrefix(v, "0.2")) {
		return nil, fmt.Errorf("cniVersion %s cannot chain plugins (0.3.0 or later)", v)
	}
	var ps []any
	for _, p := range plugins(doc) {
		if !isOurs(p) {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil, errors.New("the conflist has no plugin to chain after")
	}
	out := map[string]any{}
	for k, v := range doc {
		out[k] = v
	}
	out["plugins"] = append(ps, entry)
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode conflist: %w", err)
	}
	return append(b, '\n'), nil
}
