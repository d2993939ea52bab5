package charttest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/slimvirt/slimvirt/internal/testenv"
)

// chartDir is the chart under test, relative to this package (where go test runs).
const chartDir = "../slimvirt"

// snapshotCRDDir holds external-snapshotter's CRDs in the chart, as they come.
const snapshotCRDDir = "snapshot-crds"

// snapshotClassKind is what the chart asks the cluster for before it renders its
// VolumeSnapshotClass; the test cluster serves it.
const snapshotClassKind = "snapshot.storage.k8s.io/v1/VolumeSnapshotClass"

// cluster is the API server and helm the tests share; TestMain sets it.
var cluster *server

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	s, err := startServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cluster = s
	code := m.Run()
	if err := s.stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// server is a kube-apiserver with slimvirt's CRDs, and a helm that renders for its version.
type server struct {
	env    *testenv.Env
	mapper meta.RESTMapper
	helm   *helm
}

func startServer() (*server, error) {
	bin, err := helmBinary()
	if err != nil {
		return nil, err
	}
	home, err := os.MkdirTemp("", "slimvirt-charttest-helm-")
	if err != nil {
		return nil, err
	}
	env, err := testenv.Start("charttest")
	if err != nil {
		return nil, errors.Join(err, os.RemoveAll(home))
	}
	s := &server{env: env, helm: &helm{bin: bin, home: home}}
	if err := env.WriteKubeconfig(filepath.Join(home, "kubeconfig")); err != nil {
		return nil, errors.Join(err, s.stop())
	}
	// The snapshot CRDs, as a cluster has them once the chart (snapshots.installCRDs) or its
	// own snapshot controller's installation put them there: the VolumeSnapshotClass needs them.
	if _, err := envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(chartDir, snapshotCRDDir)}, ErrorIfPathMissing: true}); err != nil {
		return nil, errors.Join(fmt.Errorf("install the snapshot CRDs: %w", err), s.stop())
	}
	version, err := env.Clientset.Discovery().ServerVersion()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("get server version: %w", err), s.stop())
	}
	// Render for the server's version: a helm built without release flags assumes v1.20.0,
	// which the chart's kubeVersion refuses.
	s.helm.kubeVersion = version.GitVersion
	groups, err := restmapper.GetAPIGroupResources(env.Clientset.Discovery())
	if err != nil {
		return nil, errors.Join(fmt.Errorf("discover served resources: %w", err), s.stop())
	}
	s.mapper = restmapper.NewDiscoveryRESTMapper(groups)
	return s, nil
}

func (s *server) stop() error {
	return errors.Join(s.env.Stop(), os.RemoveAll(s.helm.home))
}

// helmBinary is $HELM, or the helm hack/tools.sh pins in $SLIMVIRT_CACHE.
func helmBinary() (string, error) {
	if h := os.Getenv("HELM"); h != "" {
		return h, nil
	}
	cache := os.Getenv("SLIMVIRT_CACHE")
	if cache == "" {
		cache = "/var/cache/slimvirt"
	}
	bin := filepath.Join(cache, "tools", "bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("helm is needed (make deps, or set $HELM): %w", err)
	}
	return bin, nil
}

// helm runs the helm binary with a home of its own, so no user configuration or plugin takes
// part, and the test API server as its cluster.
type helm struct {
	bin         string
	home        string
	kubeVersion string
}

func (h *helm) run(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"),
		"KUBECONFIG="+filepath.Join(h.home, "kubeconfig"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// lintProblem is a line of helm's output that --strict alone lets pass: helm prints the
// warnings of merging values (a table set to a string) on stderr and still exits 0.
var lintProblem = regexp.MustCompile(`(?i)warning|error`)

// lint runs helm lint --strict and fails on any warning or error it prints.
func (h *helm) lint(ctx context.Context, r release) error {
	stdout, stderr, err := h.run(ctx, "lint", chartDir, "--strict", "--kube-version", h.kubeVersion,
		"--namespace", r.namespace, "-f", r.valuesFile)
	if err != nil {
		return fmt.Errorf("helm lint: %w\n%s%s", err, stdout, stderr)
	}
	var problems []string
	for _, line := range strings.Split(stdout+stderr, "\n") {
		if lintProblem.MatchString(line) && !strings.Contains(line, "0 chart(s) failed") {
			problems = append(problems, line)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("helm lint: %s", strings.Join(problems, "\n"))
	}
	return nil
}

// template renders the chart, CRDs included, as helm install would send it. With
// r.lookup the templates' lookup calls read the API server, as on an upgrade; otherwise they
// find nothing, as on a first install.
func (h *helm) template(ctx context.Context, r release) ([]object, error) {
	args := []string{"template", r.name, chartDir, "--include-crds",
		"--kube-version", h.kubeVersion, "--api-versions", snapshotClassKind, "--namespace", r.namespace, "-f", r.valuesFile}
	if r.lookup {
		args = append(args, "--dry-run=server")
	}
	stdout, stderr, err := h.run(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("helm template: %w\n%s", err, stderr)
	}
	return decode([]byte(stdout))
}

// release is a release name, its namespace and a values file.
type release struct {
	name, namespace, valuesFile string
	lookup                      bool
}

// object is one rendered object and the file helm rendered it from.
type object struct {
	source string
	*unstructured.Unstructured
}

func (o object) String() string {
	s := o.GetKind() + " " + o.GetName()
	if ns := o.GetNamespace(); ns != "" {
		s = o.GetKind() + " " + ns + "/" + o.GetName()
	}
	return s + " (" + o.source + ")"
}

// decode splits helm's output into objects. A key given twice in one mapping is an error:
// YAML would keep the last and drop the first silently.
func decode(out []byte) ([]object, error) {
	var objs []object
	seen := map[string]bool{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	source := "?"
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read rendered YAML: %w", err)
		}
		// A file of crds/ that starts with "---" leaves its source line in an empty document
		// of its own.
		if _, after, ok := strings.Cut(string(doc), "# Source: "); ok {
			source, _, _ = strings.Cut(after, "\n")
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(j); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		o := object{source: source, Unstructured: u}
		key := u.GroupVersionKind().GroupKind().String() + " " + u.GetNamespace() + "/" + u.GetName()
		if seen[key] {
			return nil, fmt.Errorf("%s: rendered twice", o)
		}
		seen[key] = true
		objs = append(objs, o)
	}
}

// dryRunner submits objects as a server-side dry run. It is not safe for concurrent use: the
// server's warnings are read after each request.
type dryRunner struct {
	dyn      dynamic.Interface
	mapper   meta.RESTMapper
	warnings *testenv.Warnings
}

func (s *server) dryRunner() (*dryRunner, error) {
	w := &testenv.Warnings{}
	cfg := rest.CopyConfig(s.env.Config)
	cfg.WarningHandler = w
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("make dynamic client: %w", err)
	}
	return &dryRunner{dyn: dyn, mapper: s.mapper, warnings: w}, nil
}

// dryRun checks that the server serves the object's kind, that the object is namespaced exactly
// when its kind is, and that the server accepts it, with strict field validation and without a
// warning. An object the server has already (the CRDs testenv installed) is server-side applied
// instead, as an upgrade would.
func (d *dryRunner) dryRun(ctx context.Context, o object) error {
	gvk := o.GroupVersionKind()
	m, err := d.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("kind not served: %w", err)
	}
	var ri dynamic.ResourceInterface = d.dyn.Resource(m.Resource)
	namespaced := m.Scope.Name() == meta.RESTScopeNameNamespace
	switch ns := o.GetNamespace(); {
	case namespaced && ns == "":
		return errors.New("namespaced object without metadata.namespace")
	case !namespaced && ns != "":
		return fmt.Errorf("cluster-scoped object with metadata.namespace %q", ns)
	case namespaced:
		ri = d.dyn.Resource(m.Resource).Namespace(ns)
	}
	d.warnings.Take()
	dryRun := []string{metav1.DryRunAll}
	_, err = ri.Create(ctx, o.Unstructured, metav1.CreateOptions{DryRun: dryRun, FieldValidation: "Strict"})
	if apierrors.IsAlreadyExists(err) {
		data, err := o.MarshalJSON()
		if err != nil {
			return err
		}
		_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
			DryRun: dryRun, FieldManager: "slimvirt-charttest", Force: ptr.To(true), FieldValidation: "Strict"})
		if err != nil {
			return fmt.Errorf("server-side apply (dry run) refused: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("create (dry run) refused: %w", err)
	}
	if w := d.warnings.Take(); len(w) > 0 {
		return fmt.Errorf("the server warned: %s", strings.Join(w, "; "))
	}
	return nil
}

// prepare writes a value set's values file and makes its release namespace.
func prepare(t *testing.T, v valueSet) release {
	t.Helper()
	r := release{name: v.release, namespace: v.namespace, valuesFile: filepath.Join(t.TempDir(), "values.yaml")}
	if r.name == "" {
		r.name = "slimvirt"
	}
	if r.namespace == "" {
		r.namespace = "slimvirt"
	}
	if err := os.WriteFile(r.valuesFile, []byte(v.values), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cluster.env.Namespace(t.Context(), r.namespace); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestChart lints and renders the chart for each value set, checks that the values reached the
// objects, and dry-runs every object on the API server.
func TestChart(t *testing.T) {
	crdFiles, err := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	if err != nil || len(crdFiles) == 0 {
		t.Fatalf("no CRDs in %s/crds: %v", chartDir, err)
	}
	for _, v := range valueSets {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			r := prepare(t, v)
			if err := cluster.helm.lint(ctx, r); err != nil {
				t.Error(err)
			}
			objs, err := cluster.helm.template(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			v.check(t, rendered(objs))
			d, err := cluster.dryRunner()
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			crds, pods := 0, 0
			for _, o := range objs {
				if o.GetKind() == "CustomResourceDefinition" && !strings.HasPrefix(o.source, "slimvirt/templates/") {
					crds++
				}
				if err := d.dryRun(ctx, o); err != nil {
					t.Errorf("%s: %v", o, err)
				}
				if pod, ok := podOf(o); ok {
					pods++
					if err := d.dryRun(ctx, pod); err != nil {
						t.Errorf("%s: %v", pod, err)
					}
				}
			}
			if crds != len(crdFiles) {
				t.Errorf("rendered %d CRDs, want the %d in %s/crds", crds, len(crdFiles), chartDir)
			}
			t.Logf("%s: %d objects (%d of them CRDs) and %d pods of their templates dry-run in %s", v.name,
				len(objs), crds, pods, time.Since(start).Round(time.Millisecond))
		})
	}
}

// podOf is a pod as a workload's controller would make it from its template. Its dry run
// passes the pod admission plugins (priority class, pod security), which a Deployment's or
// DaemonSet's own dry run does not.
func podOf(o object) (object, bool) {
	switch o.GetKind() {
	case "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job":
	default:
		return object{}, false
	}
	template, ok, _ := unstructured.NestedMap(o.Object, "spec", "template")
	if !ok {
		return object{}, false
	}
	pod := &unstructured.Unstructured{Object: template}
	pod.SetAPIVersion("v1")
	pod.SetKind("Pod")
	pod.SetName(o.GetName() + "-pod")
	pod.SetNamespace(o.GetNamespace())
	return object{source: o.source + ", spec.template", Unstructured: pod}, true
}
