package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/testenv"
)

// The mutation drill: random mutations of valid manifests go to the API server while the
// controller runs. Each must be refused with a message a user can act on, or accepted and then
// handled: the controller shows it acted, stops writing, never panics and keeps running.
//
// Acted: a VMI has its launcher pod or says why not (Synchronized=False with a reason, or
// Failed with one); a VM has a printableStatus for its generation; a replica set has observed
// its generation; a DataVolume has a phase. Stops writing: once all that shows, no object of the
// namespace changes more than maxQuietWrites times in quietWindow, and no controller reconciles
// much more often than its objects' periodic retries explain. Never panics: controller-runtime
// recovers a reconciler's panic and counts it in controller_runtime_reconcile_panics_total,
// which must not grow. Keeps running: the manager's Run has not returned.

const (
	// mutationSeedEnv repeats a run: the seed is printed at the start and on failure.
	mutationSeedEnv = "SLIMVIRT_MUTATION_SEED"
	// mutationCountEnv runs more (or fewer) mutations than the default, for a longer drill.
	mutationCountEnv = "SLIMVIRT_MUTATION_COUNT"
	defaultMutations = 200
	// actTimeout bounds how long the controller may take to show it handled every object.
	actTimeout = 45 * time.Second
	// perObjectDelete is added to actTimeout for each object there is to delete at the end.
	perObjectDelete = 200 * time.Millisecond
	// quietWindow is how long the namespace is watched, once everything was handled, for a
	// controller that keeps writing.
	quietWindow = 4 * time.Second
	quietPoll   = 200 * time.Millisecond
	// maxQuietWrites is how often an object may change in the quiet window. The controller's
	// periodic retries are 5 s apart or more (a VMI whose PVC is missing, a replica set whose
	// VMIs cannot be made), so one or two changes are a retry; a hot loop writes on every poll.
	maxQuietWrites = 2
)

// Seeds beside examples/: there is no DataVolume example, and none of a VM with
// dataVolumeTemplates.
const (
	dataVolumeBlankSeed = `
apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata:
  name: blank
spec:
  source:
    blank: {}
  storage:
    resources:
      requests:
        storage: 1Gi
`
	dataVolumeHTTPSeed = `
apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata:
  name: fedora
  annotations:
    cdi.kubevirt.io/storage.bind.immediate.requested: "true"
spec:
  contentType: kubevirt
  source:
    http:
      url: https://images.example/fedora.qcow2
      checksum: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  pvc:
    accessModes:
    - ReadWriteOnce
    volumeMode: Block
    resources:
      requests:
        storage: 5Gi
`
	vmDataVolumeSeed = `
apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachine
metadata:
  name: withdv
spec:
  runStrategy: Always
  dataVolumeTemplates:
  - metadata:
      name: withdv-root
      labels:
        app: withdv
    spec:
      source:
        blank: {}
      storage:
        accessModes:
        - ReadWriteOnce
        resources:
          requests:
            storage: 2Gi
  template:
    metadata:
      labels:
        app: withdv
    spec:
      domain:
        cpu:
          cores: 2
        resources:
          requests:
            memory: 256Mi
        devices:
          disks:
          - name: root
            bootOrder: 1
            disk:
              bus: virtio
          interfaces:
          - name: default
            masquerade: {}
            ports:
            - port: 22
              protocol: TCP
      networks:
      - name: default
        pod: {}
      volumes:
      - name: root
        dataVolume:
          name: withdv-root
`
)

// enumAlternatives are other values for fields the seeds set, valid or nearly so, so that a
// swap sometimes makes a different valid object and sometimes an unsupported one.
var enumAlternatives = map[string][]any{
	"bus":                           {"virtio", "sata", "scsi", "usb", "ide"},
	"model":                         {"virtio", "e1000", "e1000e", "rtl8139", "pcnet"},
	"runStrategy":                   {"Always", "RerunOnFailure", "Manual", "Halted", "Once", "always"},
	"imagePullPolicy":               {"Always", "IfNotPresent", "Never", "Sometimes"},
	"type":                          {"Disk", "DiskOrCreate", "q35", "pc", "pc-q35-7.2", "Directory"},
	"volumeMode":                    {"Filesystem", "Block", "Raw"},
	"accessModes[]":                 {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod", "ReadWriteSometimes"},
	"protocol":                      {"TCP", "UDP", "SCTP"},
	"contentType":                   {"kubevirt", "archive"},
	"replicas":                      {int64(0), int64(1), int64(2), int64(5)},
	"port":                          {int64(1), int64(80), int64(65535), int64(0), int64(65536)},
	"cores":                         {int64(1), int64(2), int64(512), int64(513)},
	"bootOrder":                     {int64(1), int64(2), int64(3)},
	"terminationGracePeriodSeconds": {int64(0), int64(5), int64(600), int64(math.MaxInt64)},
}

// pinnedMutations each found a bug once; every drill runs them, whatever its seed.
var pinnedMutations = []struct {
	seed  string
	path  path
	value any
}{
	// A resource the API server does not allow in a pod: the VMIs' pods are refused.
	{"vmirs-linux", path{"spec", "template", "spec", "domain", "resources", "requests", "x-extra"}, "128Mi"},
	// A label no VMI may have: each refused create named a new VMI in the status, and each
	// status write woke the replica set up for another create at once.
	{"vmirs-linux", path{"spec", "template", "metadata", "labels", ""}, "x"},
	// Values the controller decodes differently from how they were written: its update of the
	// VMI (adding its finalizer) changed the immutable spec and was refused, forever.
	{"vmi-linux", path{"spec", "volumes", 2, "cloudInitNoCloud", "userData"}, ""},
	{"vmi-linux", path{"spec", "volumes", 1, "emptyDisk", "capacity"}, int64(7)},
	// An empty selector written as an empty map was accepted.
	{"vmirs-linux", path{"spec", "selector", "matchLabels"}, map[string]any{}},
	// DataVolume templates whose DataVolumes are refused: the VM failed without a status.
	{"vm-datavolume", path{"spec", "dataVolumeTemplates", 0, "metadata", "labels", "app"}, "-0"},
	{"vm-datavolume", path{"spec", "dataVolumeTemplates", 0, "metadata", "name"}, "Bad_Name"},
	// A negative size: the PVC is refused, and the DataVolume failed without a status.
	{"dv-blank", path{"spec", "storage", "resources", "requests", "storage"}, int64(-1)},
	// Quantities the schema's pattern let through and Kubernetes cannot parse: the controller
	// could not decode the object, and its watch of every object of the kind failed with it.
	{"vmi-linux", path{"spec", "domain", "resources", "requests", "memory"}, "1e1.5"},
	{"vmi-linux", path{"spec", "volumes", 1, "emptyDisk", "capacity"}, "1e1.5"},
	{"dv-blank", path{"spec", "storage", "resources", "requests", "storage"}, "1e1.5"},
}

var (
	badNames      = []string{"Bad_Name", "-leading", "trailing-", "has.dot", "UPPER", "with space", "ünïcödé", "a/b", "..", "nul\x00byte", " padded "}
	badQuantities = []any{"12Zi", "-1Gi", "1e1.5", "0", "-0", "1.5.3Gi", "Gi", "1e400", "99999999999999999999Ei", "+1", ".5", "1 Gi", "1gi", "0.0000000001", int64(-1), int64(math.MaxInt64)}
	bigNumbers    = []any{int64(math.MaxInt64), int64(1 << 31), int64(1 << 32), 1e30, int64(65536), int64(math.MaxInt32)}
	smallNumbers  = []any{int64(-1), int64(math.MinInt64), -0.5, int64(0), 1.5}
	longLengths   = []int{64, 254, 4097, 70000}
	unknownKeys   = []string{"bogusField", "Spec", "x-extra"}
	badKeys       = []string{"Bad Key!", "-x", "a/b/c", "UPPER_key", ""}
)

// TestMutationDrill is the "bad input at scale" drill: every mutation is accepted and handled
// by the controller, or refused by the API server with a message that names what is wrong.
func TestMutationDrill(t *testing.T) {
	needController(t)
	start := time.Now()
	ctx := context.Background()
	seedValue := mutationSeed(t)
	count := mutationCount(t)
	t.Logf("mutation seed %d (repeat with %s=%d)", seedValue, mutationSeedEnv, seedValue)
	defer func() {
		if t.Failed() {
			t.Logf("reproduce with %s=%d", mutationSeedEnv, seedValue)
		}
	}()
	m := newMutator(seedValue, mutationSeeds(t))
	ns := newNamespace(t)
	panicsBefore := controllerCounters(t, "controller_runtime_reconcile_panics_total")

	var accepted []*drillObject
	refused := map[string]int{}
	for i := range len(pinnedMutations) + count {
		obj, mu, err := m.next(i)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: obj}
		u.SetNamespace(ns)
		// As kubectl applies by default: strict, so an unknown field is refused, not dropped.
		if err := env.c.Create(ctx, u, client.FieldValidation("Strict")); err != nil {
			group, problem := judgeRefusal(err)
			refused[group]++
			if problem != "" {
				t.Errorf("%s: %s", mu, problem)
			}
			t.Logf("%s: refused (%s): %s", mu, group, firstLine(err.Error(), 200))
			continue
		}
		accepted = append(accepted, &drillObject{kind: u.GetKind(), name: u.GetName(), mutation: mu})
	}
	if len(accepted) == 0 || len(refused) == 0 {
		t.Errorf("%d accepted, %d refusal reasons: the drill should see both", len(accepted), len(refused))
	}

	made := waitHandled(t, ctx, ns, accepted)
	checkQuiet(t, ctx, ns)
	deleteAccepted(t, ctx, ns, accepted)
	checkControllerAlive(t, panicsBefore)

	byOutcome := map[string]int{}
	for _, o := range accepted {
		byOutcome[shortKinds[o.kind]+" "+o.outcome]++
		t.Logf("%s: accepted, %s %s: %s", o.mutation, o.kind, o.name, o.outcome)
	}
	t.Logf("mutation drill: seed %d, %d random and %d pinned mutations in %s: %d accepted (%s; the VMIs they made: %s); %d refused (%s)",
		seedValue, count, len(pinnedMutations), time.Since(start).Round(time.Second),
		len(accepted), summary(byOutcome), summary(made), count+len(pinnedMutations)-len(accepted), summary(refused))
}

var shortKinds = map[string]string{
	"VirtualMachineInstance": "vmi", "VirtualMachine": "vm", "VirtualMachineInstanceReplicaSet": "vmirs", "DataVolume": "dv",
}

// drillObject is an accepted mutation and what the controller made of it.
type drillObject struct {
	kind, name string
	mutation   mutation
	// outcome is how the controller showed it handled the object; empty until it did.
	outcome string
}

func mutationSeed(t *testing.T) uint64 {
	t.Helper()
	s := os.Getenv(mutationSeedEnv)
	if s == "" {
		return uint64(time.Now().UnixNano())
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", mutationSeedEnv, s, err)
	}
	return v
}

func mutationCount(t *testing.T) int {
	t.Helper()
	s := os.Getenv(mutationCountEnv)
	if s == "" {
		return defaultMutations
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		t.Fatalf("%s=%q: want a positive number", mutationCountEnv, s)
	}
	return v
}

// seed is a valid manifest that mutations start from.
type seed struct {
	short string
	obj   map[string]any
}

// mutationSeeds are the slimvirt manifests in examples/ and the extra seeds above.
func mutationSeeds(t *testing.T) []seed {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("examples: %v (%d files)", err, len(files))
	}
	raw := map[string]string{"dv-blank": dataVolumeBlankSeed, "dv-http": dataVolumeHTTPSeed, "vm-datavolume": vmDataVolumeSeed}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		raw[strings.TrimSuffix(filepath.Base(f), ".yaml")] = string(b)
	}
	var seeds []seed
	for _, short := range slices.Sorted(maps.Keys(raw)) {
		obj := map[string]any{}
		if err := yaml.Unmarshal([]byte(raw[short]), &obj); err != nil {
			t.Fatalf("seed %s: %v", short, err)
		}
		if gv, _ := obj["apiVersion"].(string); gv != v1.GroupVersion.String() {
			continue
		}
		seeds = append(seeds, seed{short: short, obj: obj})
	}
	return seeds
}

// path is a place in a decoded object: map keys and list indexes.
type path []any

func (p path) String() string {
	var b strings.Builder
	for _, e := range p {
		switch e := e.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e)
		case int:
			fmt.Fprintf(&b, "[%d]", e)
		}
	}
	return b.String()
}

// key names the field at p for the value tables: a list element is its list's key + "[]".
func (p path) key() string {
	for i := len(p) - 1; i >= 0; i-- {
		if k, ok := p[i].(string); ok {
			return k + strings.Repeat("[]", len(p)-1-i)
		}
	}
	return ""
}

// mutation is one change to one seed, as logged and reported.
type mutation struct {
	// id is m and the random mutation's number, or p and the pinned mutation's.
	id    string
	seed  string
	path  string
	op    string
	value string
}

func (m mutation) String() string {
	s := fmt.Sprintf("%s %s %s %s", m.id, m.seed, m.path, m.op)
	if m.value != "" {
		s += " " + m.value
	}
	return s
}

type mutator struct {
	rnd   *rand.Rand
	seeds []seed
	// byKey holds every value found under each key in the seeds, for swaps and grafts.
	byKey map[string][]any
}

func newMutator(s uint64, seeds []seed) *mutator {
	m := &mutator{rnd: rand.New(rand.NewPCG(s, s^0x5eed)), seeds: seeds, byKey: map[string][]any{}}
	for _, sd := range seeds {
		for _, p := range paths(sd.obj) {
			m.byKey[p.key()] = append(m.byKey[p.key()], lookup(sd.obj, p))
		}
	}
	return m
}

// next makes mutation i: the pinned ones first, then the random ones.
func (m *mutator) next(i int) (map[string]any, mutation, error) {
	if i < len(pinnedMutations) {
		return m.pinned(i)
	}
	obj, mu := m.mutate(i - len(pinnedMutations))
	return obj, mu, nil
}

// mutate makes random mutation i: a copy of a random seed with one random change.
func (m *mutator) mutate(i int) (map[string]any, mutation) {
	sd := m.seeds[m.rnd.IntN(len(m.seeds))]
	id := fmt.Sprintf("m%03d", i)
	obj := copyOf(sd, id)
	ps := paths(obj)
	p := ps[m.rnd.IntN(len(ps))]
	mu := mutation{id: id, seed: sd.short, path: p.String()}
	mu.op, mu.value = m.change(obj, p, id)
	return obj, mu
}

// pinned makes pinned mutation i.
func (m *mutator) pinned(i int) (map[string]any, mutation, error) {
	pm := pinnedMutations[i]
	id := fmt.Sprintf("p%02d", i)
	for _, sd := range m.seeds {
		if sd.short == pm.seed {
			obj := copyOf(sd, id)
			set(obj, pm.path, runtime.DeepCopyJSONValue(pm.value))
			return obj, mutation{id: id, seed: sd.short, path: pm.path.String(), op: "set", value: render(pm.value)}, nil
		}
	}
	return nil, mutation{}, fmt.Errorf("pinned mutation %d: no seed %s", i, pm.seed)
}

// copyOf is a copy of a seed named after the mutation id.
func copyOf(sd seed, id string) map[string]any {
	obj := runtime.DeepCopyJSON(sd.obj)
	rename(obj, sd.obj["metadata"].(map[string]any)["name"].(string), id+"-"+sd.short)
	return obj
}

// change applies one applicable operation at p and returns its name and the new value.
func (m *mutator) change(obj map[string]any, p path, id string) (string, string) {
	cur := lookup(obj, p)
	if p.String() == "metadata.name" {
		return m.changeName(obj, p, id)
	}
	ops := []string{"delete", "null", "wrong-type"}
	if m.grafts(p, cur) != nil {
		ops = append(ops, "graft")
	}
	switch cur.(type) {
	case string:
		ops = append(ops, "empty-string", "long-string", "bad-name", "swap", "bad-quantity")
	case float64, int64:
		ops = append(ops, "swap", "big-number", "small-number", "bad-quantity")
	case bool:
		ops = append(ops, "flip")
	case []any:
		ops = append(ops, "duplicate-entry", "empty-list")
	case map[string]any:
		ops = append(ops, "unknown-field", "bad-key", "empty-map")
	}
	op := ops[m.rnd.IntN(len(ops))]
	var v any
	switch op {
	case "delete":
		remove(obj, p)
		return op, ""
	case "null":
		v = nil
	case "wrong-type":
		v = m.wrongType(cur)
	case "graft":
		v = runtime.DeepCopyJSONValue(pick(m.rnd, m.grafts(p, cur)))
	case "empty-string":
		v = ""
	case "long-string":
		v = strings.Repeat("a", pick(m.rnd, longLengths))
	case "bad-name":
		v = pick(m.rnd, badNames)
	case "swap":
		v = m.swap(p, cur)
	case "bad-quantity":
		v = pick(m.rnd, badQuantities)
	case "big-number":
		v = pick(m.rnd, bigNumbers)
	case "small-number":
		v = pick(m.rnd, smallNumbers)
	case "flip":
		v = !cur.(bool)
	case "duplicate-entry":
		l := cur.([]any)
		if len(l) == 0 {
			v = []any{"x", "x"}
		} else {
			l = append(l, runtime.DeepCopyJSONValue(pick(m.rnd, l)))
			v = l
		}
	case "empty-list":
		v = []any{}
	case "unknown-field", "bad-key":
		mp := cur.(map[string]any)
		k := pick(m.rnd, unknownKeys)
		if op == "bad-key" {
			k = pick(m.rnd, badKeys)
		}
		var val any = "x"
		if len(mp) > 0 {
			val = runtime.DeepCopyJSONValue(mp[pick(m.rnd, slices.Sorted(maps.Keys(mp)))])
		}
		mp[k] = val
		return op, fmt.Sprintf("%q: %s", k, render(val))
	case "empty-map":
		v = map[string]any{}
	}
	set(obj, p, v)
	return op, render(v)
}

// changeName breaks metadata.name; every name made keeps the mutation's id, so two mutations
// never ask for the same name.
func (m *mutator) changeName(obj map[string]any, p path, id string) (string, string) {
	var v any
	op := pick(m.rnd, []string{"delete", "empty-string", "long-string", "bad-name", "wrong-type"})
	switch op {
	case "delete":
		remove(obj, p)
		return op, ""
	case "empty-string":
		v = ""
	case "long-string":
		// Around the limits: 57 (a replica set), 63 (a DNS label), 253 (a DNS subdomain).
		v = id + "-" + strings.Repeat("a", pick(m.rnd, []int{52, 53, 58, 59, 248, 249}))
	case "bad-name":
		v = fmt.Sprintf(pick(m.rnd, []string{"%s-UPPER", "%s_underscore", "-%s", "%s-", "%s.dot", "%s space", "%s/slash"}), id)
	case "wrong-type":
		v = pick(m.rnd, []any{int64(7), true, []any{id}, map[string]any{"name": id}})
	}
	set(obj, p, v)
	return op, render(v)
}

// wrongType returns a value of another JSON type than cur.
func (m *mutator) wrongType(cur any) any {
	all := []any{"1", "yes", int64(7), 2.5, true, []any{"x"}, []any{}, map[string]any{"x": "y"}, map[string]any{}}
	var out []any
	for _, v := range all {
		if jsonType(v) != jsonType(cur) {
			out = append(out, v)
		}
	}
	return pick(m.rnd, out)
}

// swap returns another value seen under the same key, or one of its alternatives, or any
// string of the seeds when the key has no other value.
func (m *mutator) swap(p path, cur any) any {
	var cands []any
	for _, v := range append(slices.Clone(m.byKey[p.key()]), enumAlternatives[p.key()]...) {
		if isScalar(v) && !reflect.DeepEqual(v, cur) {
			cands = append(cands, v)
		}
	}
	if len(cands) == 0 {
		for _, k := range slices.Sorted(maps.Keys(m.byKey)) {
			for _, v := range m.byKey[k] {
				if s, ok := v.(string); ok && s != cur {
					cands = append(cands, s)
				}
			}
		}
	}
	return pick(m.rnd, cands)
}

// grafts are the other values of p's key in the seeds that are not scalars: a seed's
// volumes in place of another's, a VM's template in a replica set.
func (m *mutator) grafts(p path, cur any) []any {
	var out []any
	for _, v := range m.byKey[p.key()] {
		if !isScalar(v) && !reflect.DeepEqual(v, cur) {
			out = append(out, v)
		}
	}
	return out
}

func isScalar(v any) bool {
	switch v.(type) {
	case []any, map[string]any:
		return false
	}
	return true
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64, float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "list"
	case map[string]any:
		return "map"
	}
	return "null"
}

func pick[T any](rnd *rand.Rand, l []T) T { return l[rnd.IntN(len(l))] }

// paths lists every place in obj a mutation may change: not apiVersion, kind, or metadata
// and its namespace as a whole, which decide where the object goes rather than what it is.
func paths(obj map[string]any) []path {
	var out []path
	var walk func(v any, p path)
	walk = func(v any, p path) {
		switch v := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(v)) {
				q := append(slices.Clone(p), k)
				switch q.String() {
				case "apiVersion", "kind", "metadata.namespace":
					continue
				case "metadata":
				default:
					out = append(out, q)
				}
				walk(v[k], q)
			}
		case []any:
			for i := range v {
				q := append(slices.Clone(p), i)
				out = append(out, q)
				walk(v[i], q)
			}
		}
	}
	walk(obj, nil)
	return out
}

func lookup(v any, p path) any {
	for _, e := range p {
		switch e := e.(type) {
		case string:
			v = v.(map[string]any)[e]
		case int:
			v = v.([]any)[e]
		}
	}
	return v
}

// set replaces the value at p; p's parent exists, since p was found in the object.
func set(obj map[string]any, p path, v any) {
	parent := lookup(obj, p[:len(p)-1])
	switch e := p[len(p)-1].(type) {
	case string:
		parent.(map[string]any)[e] = v
	case int:
		parent.([]any)[e] = v
	}
}

func remove(obj map[string]any, p path) {
	parentPath := p[:len(p)-1]
	parent := lookup(obj, parentPath)
	switch e := p[len(p)-1].(type) {
	case string:
		delete(parent.(map[string]any), e)
	case int:
		l := parent.([]any)
		set(obj, parentPath, append(slices.Clone(l[:e]), l[e+1:]...))
	}
}

// rename gives a copy of a seed its own name, and its own labels and DataVolumes: every string
// that is the seed's name, or starts with it and a '-', is renamed. Copies of one seed then
// share no selector (a replica set adopts the VMIs its selector matches) and no DataVolume.
func rename(v any, old, name string) {
	re := func(s string) string {
		if s == old || strings.HasPrefix(s, old+"-") {
			return name + strings.TrimPrefix(s, old)
		}
		return s
	}
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok {
				v[k] = re(s)
			} else {
				rename(e, old, name)
			}
		}
	case []any:
		for i, e := range v {
			if s, ok := e.(string); ok {
				v[i] = re(s)
			} else {
				rename(e, old, name)
			}
		}
	}
}

func render(v any) string {
	if s, ok := v.(string); ok && len(s) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", s[:20], len(s))
	}
	b, _ := json.Marshal(v)
	if len(b) > 60 {
		return string(b[:57]) + "..."
	}
	return string(b)
}

// fieldRef finds a field path in a message: spec.domain, metadata.name, spec: (a rule on spec).
var fieldRef = regexp.MustCompile(`\b(spec|metadata)(\.[A-Za-z]|\[|:)`)

// userPhrases are the API server's words for what is wrong with a field.
var userPhrases = []string{"Required value", "Unsupported value", "Invalid value", "Duplicate value", "Too long", "Too many", "unknown field", "must be", "cannot unmarshal"}

// judgeRefusal groups a refusal by its reason and says what is wrong with it, if anything: it
// must be the API server refusing the object (Invalid or BadRequest, not an internal error, a
// timeout or a webhook failing) with a message that names a field or the reason in words.
func judgeRefusal(err error) (group, problem string) {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return "not an API error", fmt.Sprintf("refused without an API status: %v", err)
	}
	s := st.Status()
	group = string(s.Reason)
	if s.Details != nil && len(s.Details.Causes) > 0 {
		group += "/" + string(s.Details.Causes[0].Type)
	} else if strings.Contains(s.Message, "unknown field") {
		group += "/unknown field"
	} else if strings.Contains(s.Message, "cannot unmarshal") || strings.Contains(s.Message, "cannot be handled") {
		group += "/wrong type"
	}
	switch {
	case s.Reason != metav1.StatusReasonInvalid && s.Reason != metav1.StatusReasonBadRequest:
		return group, fmt.Sprintf("refused as %s (code %d), want Invalid or BadRequest: %s", s.Reason, s.Code, s.Message)
	case strings.TrimSpace(s.Message) == "":
		return group, "refused with an empty message"
	case fieldRef.MatchString(s.Message):
		return group, ""
	}
	for _, p := range userPhrases {
		if strings.Contains(s.Message, p) {
			return group, ""
		}
	}
	return group, fmt.Sprintf("refused with a message that names no field and no reason: %s", s.Message)
}

// waitHandled waits until the controller has shown it acted on every accepted object and on
// every VMI the accepted VMs and replica sets made, and counts the latter by outcome.
func waitHandled(t *testing.T, ctx context.Context, ns string, accepted []*drillObject) map[string]int {
	t.Helper()
	deadline := time.Now().Add(actTimeout)
	pending := slices.Clone(accepted)
	for len(pending) > 0 && time.Now().Before(deadline) {
		pending = slices.DeleteFunc(pending, func(o *drillObject) bool {
			out, err := outcome(ctx, ns, o.kind, o.name)
			var st apierrors.APIStatus
			switch {
			case err != nil && !errors.As(err, &st):
				o.outcome = fmt.Sprintf("it does not decode as a %s, and every watch of %ss fails with it: %v", o.kind, o.kind, err)
			case err != nil:
				o.outcome = "error: " + err.Error()
			default:
				o.outcome = out
			}
			return out != ""
		})
		if len(pending) > 0 {
			time.Sleep(250 * time.Millisecond)
		}
	}
	for _, o := range pending {
		t.Errorf("%s: accepted as %s %s, and the controller showed no sign of handling it within %s (%s)", o.mutation, o.kind, o.name, actTimeout, firstNonEmpty(o.outcome, "nothing in its status"))
	}
	for {
		made := map[string]int{}
		var unhandled []string
		for _, vmi := range listMeta(t, ctx, watchedKinds["vmi"], client.InNamespace(ns)) {
			if metav1.GetControllerOf(&vmi) == nil {
				continue // an accepted VMI, judged above
			}
			if out, _ := outcome(ctx, ns, "VirtualMachineInstance", vmi.Name); out != "" {
				made[out]++
			} else {
				unhandled = append(unhandled, vmi.Name)
			}
		}
		if len(unhandled) == 0 {
			return made
		}
		if time.Now().After(deadline) {
			t.Errorf("VMIs made by accepted VMs and replica sets that the controller did not handle within %s: %v", actTimeout, unhandled)
			return made
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// outcome says how the controller showed it handled an object; empty while it has not.
func outcome(ctx context.Context, ns, kind, name string) (string, error) {
	key := types.NamespacedName{Namespace: ns, Name: name}
	switch kind {
	case "VirtualMachineInstance":
		vmi := &v1.VirtualMachineInstance{}
		if err := env.c.Get(ctx, key, vmi); err != nil {
			return "", err
		}
		if c := condition(vmi, v1.VMISynchronized); c != nil && c.Status == corev1.ConditionFalse && c.Reason != "" {
			return "Synchronized=False " + c.Reason, nil
		}
		if vmi.Status.Phase == v1.Failed && vmi.Status.Reason != "" {
			return "Failed " + vmi.Status.Reason, nil
		}
		var pods corev1.PodList
		if err := env.c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{launcherpod.LabelVMI: name}); err != nil {
			return "", err
		}
		if len(pods.Items) > 0 {
			return "launcher pod", nil
		}
	case "VirtualMachine":
		vm := &v1.VirtualMachine{}
		if err := env.c.Get(ctx, key, vm); err != nil {
			return "", err
		}
		if vm.Status.PrintableStatus == "" || vm.Status.ObservedGeneration != vm.Generation {
			return "", nil
		}
		out := string(vm.Status.PrintableStatus)
		for _, c := range vm.Status.Conditions {
			if c.Type == v1.VMFailure && c.Status == corev1.ConditionTrue {
				out += " Failure " + c.Reason
			}
		}
		return out, nil
	case "VirtualMachineInstanceReplicaSet":
		rs := &v1.VirtualMachineInstanceReplicaSet{}
		if err := env.c.Get(ctx, key, rs); err != nil {
			return "", err
		}
		if rs.Status.ObservedGeneration != rs.Generation {
			return "", nil
		}
		for _, c := range rs.Status.Conditions {
			if c.Type == v1.ReplicaSetReplicaFailure {
				return "ReplicaFailure " + c.Reason, nil
			}
		}
		return "observed", nil
	case "DataVolume":
		dv := &v1.DataVolume{}
		if err := env.c.Get(ctx, key, dv); err != nil {
			return "", err
		}
		if dv.Status.Phase == v1.DataVolumeFailed {
			for _, c := range dv.Status.Conditions {
				if c.Type == v1.DataVolumeRunning {
					return "Failed " + c.Reason, nil
				}
			}
		}
		return string(dv.Status.Phase), nil
	case "VirtualMachineSnapshot":
		s := &v1.VirtualMachineSnapshot{}
		if err := env.c.Get(ctx, key, s); err != nil {
			return "", err
		}
		return string(s.Status.Phase), nil
	case "VirtualMachineRestore":
		r := &v1.VirtualMachineRestore{}
		if err := env.c.Get(ctx, key, r); err != nil {
			return "", err
		}
		if r.Status.Complete != nil && *r.Status.Complete {
			return "complete", nil
		}
		for _, c := range r.Status.Conditions {
			if c.Status == corev1.ConditionTrue || c.Reason != "" {
				return string(c.Type) + " " + c.Reason, nil
			}
		}
		return "", nil
	default:
		return "", fmt.Errorf("unexpected kind %s", kind)
	}
	return "", nil
}

// checkQuiet watches the namespace for a while once everything was handled: no object may
// keep changing (a controller writing in a loop, or making and deleting objects), and no
// controller may reconcile far more often than its objects' periodic retries explain.
func checkQuiet(t *testing.T, ctx context.Context, ns string) {
	t.Helper()
	reconcilesBefore := controllerCounters(t, "controller_runtime_reconcile_total")
	errorsBefore := controllerCounters(t, "controller_runtime_reconcile_errors_total")
	prev := snapshot(t, ctx, ns)
	changes := map[string]int{}
	for end := time.Now().Add(quietWindow); time.Now().Before(end); {
		time.Sleep(quietPoll)
		cur := snapshot(t, ctx, ns)
		for k, v := range cur {
			if prev[k] != v {
				changes[k]++
			}
		}
		for k := range prev {
			if _, ok := cur[k]; !ok {
				changes[k]++
			}
		}
		prev = cur
	}
	for _, k := range slices.Sorted(maps.Keys(changes)) {
		if changes[k] > maxQuietWrites {
			t.Errorf("%s changed %d times in %s after the controller handled it: a hot loop", k, changes[k], quietWindow)
		}
	}
	reconciles := delta(reconcilesBefore, controllerCounters(t, "controller_runtime_reconcile_total"))
	errs := delta(errorsBefore, controllerCounters(t, "controller_runtime_reconcile_errors_total"))
	objects := clusterObjects(t, ctx)
	for _, c := range slices.Sorted(maps.Keys(objects)) {
		// With nothing changing, only timers wake a reconcile: retries 5 s apart or more, so about
		// one per object in the window; twice that, and some slack, leaves room for back-offs.
		limit := 2*objects[c] + 10
		t.Logf("quiet window: controller %s reconciled %v times (%v errors) for %d objects in the cluster", c, reconciles[c], errs[c], objects[c])
		if reconciles[c] > float64(limit) {
			t.Errorf("controller %s reconciled %v times in %s for %d objects (limit %d): a hot loop", c, reconciles[c], quietWindow, objects[c], limit)
		}
	}
}

// snapshot maps every object of the namespace the controllers make or own to its UID and
// resourceVersion, so any write, creation or deletion shows.
func snapshot(t *testing.T, ctx context.Context, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for kind, gvk := range watchedKinds {
		for _, o := range listMeta(t, ctx, gvk, client.InNamespace(ns)) {
			out[kind+" "+o.Name] = string(o.UID) + "/" + o.ResourceVersion
		}
	}
	return out
}

// watchedKinds are what the controllers reconcile and what they make.
var watchedKinds = map[string]schema.GroupVersionKind{
	"vmi": v1.GroupVersion.WithKind("VirtualMachineInstance"), "vm": v1.GroupVersion.WithKind("VirtualMachine"),
	"vmirs": v1.GroupVersion.WithKind("VirtualMachineInstanceReplicaSet"), "dv": v1.GroupVersion.WithKind("DataVolume"),
	"pod": corev1.SchemeGroupVersion.WithKind("Pod"), "pvc": corev1.SchemeGroupVersion.WithKind("PersistentVolumeClaim"),
}

// listMeta lists objects' metadata only: an accepted object that does not decode as its Go
// type must not stop the drill from seeing the others.
func listMeta(t *testing.T, ctx context.Context, gvk schema.GroupVersionKind, opts ...client.ListOption) []metav1.PartialObjectMetadata {
	t.Helper()
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err := env.c.List(ctx, list, opts...); err != nil {
		t.Fatalf("list %s: %v", gvk.Kind, err)
	}
	return list.Items
}

// clusterObjects counts the objects each controller looks after, in every namespace.
func clusterObjects(t *testing.T, ctx context.Context) map[string]int {
	t.Helper()
	return map[string]int{
		"vmi":        len(listMeta(t, ctx, watchedKinds["vmi"])),
		"vm":         len(listMeta(t, ctx, watchedKinds["vm"])),
		"vmirs":      len(listMeta(t, ctx, watchedKinds["vmirs"])),
		"datavolume": len(listMeta(t, ctx, watchedKinds["dv"])),
	}
}

// controllerCounters reads a controller-runtime counter per controller.
func controllerCounters(t *testing.T, name string) map[string]float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func delta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

// deleteAccepted deletes what was accepted: deleting odd objects is handled too, and the
// controller lets each go once what it made is gone.
func deleteAccepted(t *testing.T, ctx context.Context, ns string, accepted []*drillObject) {
	t.Helper()
	playKubelet(t, ns)
	// The controller's deletes go through its client's rate limit: a longer drill takes longer.
	timeout := actTimeout + time.Duration(len(snapshot(t, ctx, ns)))*perObjectDelete
	for _, o := range accepted {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(v1.GroupVersion.String())
		u.SetKind(o.kind)
		u.SetNamespace(ns)
		u.SetName(o.name)
		if err := env.c.Delete(ctx, u); client.IgnoreNotFound(err) != nil {
			t.Errorf("%s: delete %s %s: %v", o.mutation, o.kind, o.name, err)
		}
	}
	var left map[string]string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		left = snapshot(t, ctx, ns)
		for k := range left {
			if strings.HasPrefix(k, "pvc ") {
				delete(left, k) // no garbage collector runs here to delete a DataVolume's PVC
			}
		}
		if len(left) == 0 {
			return
		}
	}
	t.Errorf("objects still there %s after their deletion: %v", timeout, slices.Sorted(maps.Keys(left)))
}

// checkControllerAlive fails when a reconciler panicked during the drill (controller-runtime
// recovers the panic and counts it) or the controller's manager stopped.
func checkControllerAlive(t *testing.T, panicsBefore map[string]float64) {
	t.Helper()
	for c, n := range delta(panicsBefore, controllerCounters(t, "controller_runtime_reconcile_panics_total")) {
		if n > 0 {
			t.Errorf("controller %s panicked %v times during the drill", c, n)
		}
	}
	select {
	case err := <-env.done:
		env.done <- err // stopController waits for it
		t.Errorf("the controller stopped during the drill: %v", err)
	default:
	}
}

func summary(counts map[string]int) string {
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b string) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, counts[k])
	}
	return strings.Join(parts, ", ")
}

func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
