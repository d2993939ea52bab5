package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	uploadclient "github.com/slimvirt/slimvirt/csi/upload/client"
)

// uploadOptions are virtctl image-upload's flags that slimvirt supports.
type uploadOptions struct {
	dvName       string
	pvcName      string
	imagePath    string
	size         string
	storageClass string
	accessMode   string
	volumeMode   string
	proxyURL     string
	insecure     bool
	waitSecs     int
	noCreate     bool
}

func uploadCmd(e *env) *cobra.Command {
	var o uploadOptions
	cmd := &cobra.Command{
		Use:   "image-upload [dv NAME | pvc NAME] --image-path FILE --size SIZE --uploadproxy-url URL",
		Short: "Upload a disk image (raw or qcow2, optionally gz/xz) into a DataVolume",
		Example: `  # the upload endpoint through a port-forward, as on the local cluster
  kubectl port-forward -n slimvirt svc/slimvirt-upload 8443:443 &
  slimctl image-upload dv fedora --size 5Gi --image-path fedora.qcow2 \
    --uploadproxy-url https://localhost:8443`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := uploadTarget(args, o.dvName, o.pvcName)
			if err != nil {
				return err
			}
			return runUpload(cmd.Context(), e, o, name)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dvName, "dv", "", "the DataVolume to upload into")
	f.StringVar(&o.pvcName, "pvc-name", "", "the PVC to upload into (a DataVolume of that name holds it)")
	f.StringVar(&o.imagePath, "image-path", "", "the image file (raw or qcow2, optionally .gz or .xz)")
	f.StringVar(&o.size, "size", "", "size of the disk to create, e.g. 10Gi")
	f.StringVar(&o.size, "pvc-size", "", "alias of --size")
	f.StringVar(&o.storageClass, "storage-class", "", "StorageClass of the disk (default: the cluster's default)")
	f.StringVar(&o.accessMode, "access-mode", "", "access mode of the disk (ReadWriteOnce by default)")
	f.StringVar(&o.volumeMode, "volume-mode", "", "Filesystem (default) or Block")
	f.StringVar(&o.proxyURL, "uploadproxy-url", "", "URL of the upload endpoint (Service slimvirt/slimvirt-upload), e.g. https://localhost:8443 through kubectl port-forward")
	f.BoolVar(&o.insecure, "insecure", false, "do not verify the upload endpoint's certificate: anyone between here and the endpoint can take the upload token and the image")
	f.IntVar(&o.waitSecs, "wait-secs", 300, "seconds to wait for the DataVolume to be ready for the upload")
	f.BoolVar(&o.noCreate, "no-create", false, "upload into an existing DataVolume only")
	_ = cmd.MarkFlagRequired("image-path")
	return cmd
}

// uploadTarget picks the DataVolume's name from "dv NAME", "pvc NAME", --dv or --pvc-name.
func uploadTarget(args []string, dv, pvc string) (string, error) {
	var names []string
	switch len(args) {
	case 0:
	case 2:
		switch strings.ToLower(args[0]) {
		case "dv", "datavolume", "pvc":
			names = append(names, args[1])
		default:
			return "", fmt.Errorf("unknown kind %q: use dv NAME or pvc NAME", args[0])
		}
	default:
		return "", errors.New("give the target as dv NAME or pvc NAME (or --dv / --pvc-name)")
	}
	for _, n := range []string{dv, pvc} {
		if n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "", errors.New("name the target: dv NAME, pvc NAME, --dv NAME or --pvc-name NAME")
	}
	for _, n := range names[1:] {
		if n != names[0] {
			return "", fmt.Errorf("two different targets given: %s and %s", names[0], n)
		}
	}
	return names[0], nil
}

func runUpload(ctx context.Context, e *env, o uploadOptions, name string) error {
	img, err := os.Open(o.imagePath)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("image file %s not found", o.imagePath)
	}
	if err != nil {
		return fmt.Errorf("open image file: %w", err)
	}
	defer img.Close()
	st, err := img.Stat()
	if err != nil {
		return fmt.Errorf("stat image file %s: %w", o.imagePath, err)
	}
	if st.IsDir() {
		return fmt.Errorf("image file %s is a directory", o.imagePath)
	}
	if o.proxyURL == "" {
		return errors.New("--uploadproxy-url is needed: slimctl does not reach the upload endpoint (Service slimvirt/slimvirt-upload) by itself; " +
			"when it is not reachable from here, forward it: kubectl port-forward -n slimvirt svc/slimvirt-upload 8443:443 and --uploadproxy-url https://localhost:8443")
	}
	c, ns, err := e.clients()
	if err != nil {
		return err
	}
	if err := ensureUploadDataVolume(ctx, e, c.Client, ns, name, o); err != nil {
		return err
	}
	var caPEM []byte
	if !o.insecure {
		if caPEM, err = uploadCA(ctx, c.Kube); err != nil {
			return err
		}
	}
	bar := &progressBar{w: e.stderr}
	err = sendImage(ctx, c.Kube.CoreV1().RESTClient(), uploadclient.Options{
		URL: o.proxyURL, CA: caPEM, Insecure: o.insecure, Progress: bar.update,
	}, ns, name, img, st.Size())
	bar.done()
	if err != nil {
		return fmt.Errorf("upload %s into DataVolume %s/%s: %w", o.imagePath, ns, name, err)
	}
	if err := waitDataVolume(ctx, c.Client, ns, name, time.Duration(o.waitSecs)*time.Second, v1alpha1.DataVolumeSucceeded); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Uploaded %s into DataVolume %s/%s\n", o.imagePath, ns, name)
	return nil
}

// ensureUploadDataVolume makes the upload DataVolume unless it is there (or --no-create), and
// waits until it takes the upload.
func ensureUploadDataVolume(ctx context.Context, e *env, c client.Client, ns, name string, o uploadOptions) error {
	dv := &v1alpha1.DataVolume{}
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, dv)
	switch {
	case apierrors.IsNotFound(err) && o.noCreate:
		return fmt.Errorf("DataVolume %s not found in namespace %s", name, ns)
	case apierrors.IsNotFound(err):
		dv, err = newUploadDataVolume(ns, name, o)
		if err != nil {
			return err
		}
		if err := c.Create(ctx, dv); err != nil {
			return fmt.Errorf("create DataVolume %s/%s: %w", ns, name, err)
		}
		fmt.Fprintf(e.stderr, "DataVolume %s/%s created\n", ns, name)
	case err != nil:
		return fmt.Errorf("get DataVolume %s/%s: %w", ns, name, err)
	case dv.Spec.Source.Upload == nil:
		return fmt.Errorf("DataVolume %s/%s does not have an upload source", ns, name)
	}
	fmt.Fprintf(e.stderr, "Waiting for DataVolume %s/%s to be ready for the upload\n", ns, name)
	return waitDataVolume(ctx, c, ns, name, time.Duration(o.waitSecs)*time.Second, v1alpha1.DataVolumeUploadReady)
}

// The ConfigMap in which the chart publishes the upload endpoint's certificate.
const (
	uploadCANamespace = "slimvirt"
	uploadCAName      = "slimvirt-upload-ca"
	uploadCAKey       = "ca.crt"
)

// uploadCA is the certificate the upload endpoint must present. Without it there is nothing to
// verify the endpoint with, and the upload token must not go to an endpoint nobody verified.
func uploadCA(ctx context.Context, kube kubernetes.Interface) ([]byte, error) {
	cm, err := kube.CoreV1().ConfigMaps(uploadCANamespace).Get(ctx, uploadCAName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read the upload endpoint's certificate from ConfigMap %s/%s: %w "+
			"(the slimvirt chart publishes it there and lets every authenticated user read it)", uploadCANamespace, uploadCAName, err)
	}
	ca := cm.Data[uploadCAKey]
	if !strings.Contains(ca, "-----BEGIN CERTIFICATE-----") {
		return nil, fmt.Errorf("ConfigMap %s/%s holds no certificate under %s", uploadCANamespace, uploadCAName, uploadCAKey)
	}
	return []byte(ca), nil
}

// sendImage gets an upload token for the DataVolume from the aggregated API (kube carries the
// user's credentials to the kube-apiserver) and uploads the image to the endpoint with that
// token alone: the user's credentials never go to the endpoint.
func sendImage(ctx context.Context, kube rest.Interface, o uploadclient.Options, ns, name string, img io.Reader, size int64) error {
	tok, _, err := uploadclient.RequestToken(ctx, kube, ns, name)
	if err != nil {
		return err
	}
	o.Token = tok
	return uploadclient.Upload(ctx, o, ns, name, img, size)
}

// newUploadDataVolume is the DataVolume image-upload creates.
func newUploadDataVolume(ns, name string, o uploadOptions) (*v1alpha1.DataVolume, error) {
	if o.size == "" {
		return nil, fmt.Errorf("DataVolume %s not found in namespace %s; --size is needed to create it", name, ns)
	}
	q, err := resource.ParseQuantity(o.size)
	if err != nil {
		return nil, fmt.Errorf("parse --size %q: %w", o.size, err)
	}
	s := &v1alpha1.StorageSpec{Resources: v1alpha1.StorageResources{Requests: corev1.ResourceList{corev1.ResourceStorage: q}}}
	if o.storageClass != "" {
		sc := o.storageClass
		s.StorageClassName = &sc
	}
	if o.accessMode != "" {
		s.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.PersistentVolumeAccessMode(o.accessMode)}
	}
	if o.volumeMode != "" {
		vm := corev1.PersistentVolumeMode(o.volumeMode)
		if vm != corev1.PersistentVolumeFilesystem && vm != corev1.PersistentVolumeBlock {
			return nil, fmt.Errorf("--volume-mode %q: use Filesystem or Block", o.volumeMode)
		}
		s.VolumeMode = &vm
	}
	return &v1alpha1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.DataVolumeSpec{
			Source:  v1alpha1.DataVolumeSourceSpec{Upload: &v1alpha1.DataVolumeSourceUpload{}},
			Storage: s,
		},
	}, nil
}

// waitDataVolume polls until the DataVolume reaches phase; Failed ends the wait with its reason.
func waitDataVolume(ctx context.Context, c client.Client, ns, name string, timeout time.Duration, phase v1alpha1.DataVolumePhase) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last v1alpha1.DataVolumePhase
	for {
		dv := &v1alpha1.DataVolume{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, dv); err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
			return fmt.Errorf("get DataVolume %s/%s: %w", ns, name, err)
		}
		last = dv.Status.Phase
		if last == phase {
			return nil
		}
		if phase == v1alpha1.DataVolumeUploadReady && last == v1alpha1.DataVolumeSucceeded {
			return fmt.Errorf("DataVolume %s/%s already holds its upload (Succeeded)", ns, name)
		}
		if last == v1alpha1.DataVolumeFailed {
			msg := ""
			for _, cond := range dv.Status.Conditions {
				if cond.Type == v1alpha1.DataVolumeRunning && cond.Message != "" {
					msg = ": " + cond.Message
				}
			}
			return fmt.Errorf("DataVolume %s/%s failed%s", ns, name, msg)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("DataVolume %s/%s is %q, not %s, after %s", ns, name, last, phase, timeout)
		case <-time.After(time.Second):
		}
	}
}

// progressBar draws "[=====>    ]  42.00% 4.9 MiB / 11.2 MiB" on one terminal line.
type progressBar struct {
	w    io.Writer
	last time.Time
	line string
}

func (p *progressBar) update(sent, total int64) {
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond || sent == total {
		p.last = now
		p.line = progressLine(sent, total, 30)
		fmt.Fprintf(p.w, "\r%s", p.line)
	}
}

func (p *progressBar) done() {
	if p.line != "" {
		fmt.Fprintln(p.w)
	}
}

// progressLine renders the bar of width characters, the percentage and the bytes.
func progressLine(sent, total int64, width int) string {
	if total <= 0 {
		return fmt.Sprintf("%s sent", byteSize(sent))
	}
	frac := float64(sent) / float64(total)
	if frac > 1 {
		frac = 1
	}
	fill := int(frac * float64(width))
	bar := strings.Repeat("=", fill)
	if fill < width {
		bar += ">" + strings.Repeat(" ", width-fill-1)
	}
	return fmt.Sprintf("[%s] %6.2f%% %s / %s", bar, frac*100, byteSize(sent), byteSize(total))
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
