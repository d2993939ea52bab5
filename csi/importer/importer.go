// Package importer fills a volume's disk.img from an image: fetched over HTTP(S) with resume
// after dropped connections, or streamed in by an upload. Images may be raw or qcow2, either
// optionally gzip or xz compressed; the result is a sparse raw disk.img of the volume's size.
package importer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/egress"
	"github.com/slimvirt/slimvirt/csi/state"
)

// Credentials reads what an HTTP source refers to in the volume's namespace.
type Credentials interface {
	BasicAuth(ctx context.Context, namespace, secret string) (user, password string, err error)
	CABundle(ctx context.Context, namespace, configMap string) ([]byte, error)
}

// Config tunes the importer; zero values are sensible.
type Config struct {
	// Credentials resolves secretRef and certConfigMap; nil refuses sources that use them.
	Credentials Credentials
	// Retries is how often a failed request or a dropped connection is retried (default 8).
	Retries int
	// Backoff is the first retry delay, doubled each time (default 1s).
	Backoff time.Duration
	// Idle is how long a connection may deliver nothing before it counts as dropped (default 60s).
	Idle time.Duration
	// Checkpoint is how many bytes of a raw image are written between two resume records
	// (default 64 MiB); a Target's CheckpointEvery overrides it.
	Checkpoint int64
	// Egress says which addresses an import may connect to; the zero value refuses the
	// node's own addresses, loopback, link-local and the like.
	Egress egress.Policy
	Log    *slog.Logger
}

// Importer fetches HTTP sources into volumes. It implements the driver's Filler.
type Importer struct {
	cfg Config
}

// New returns an importer.
func New(cfg Config) *Importer {
	if cfg.Retries == 0 {
		cfg.Retries = 8
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Second
	}
	if cfg.Idle == 0 {
		cfg.Idle = 60 * time.Second
	}
	if cfg.Checkpoint <= 0 {
		cfg.Checkpoint = 64 << 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Importer{cfg: cfg}
}

// scratchDir is the directory in each pool where qcow2 images are staged.
const scratchDir = ".scratch"

// ScratchPath is where a volume's qcow2 image is staged: in the pool (so it takes the pool's
// space, which the pool's free-space check sees), outside the volume. The file is unlinked
// while in use; the name only says which volume it was for.
func ScratchPath(vol state.Volume) string {
	return filepath.Join(filepath.Dir(vol.Dir), scratchDir, vol.ID+".qcow2")
}

// Import fetches src into vol's disk.img.
func (im *Importer) Import(ctx context.Context, vol state.Volume, src claim.Import, progress func(float64)) error {
	var user, pass string
	var ca []byte
	ns := ""
	if vol.Claim != nil {
		ns = vol.Claim.Namespace
	}
	if src.SecretRef != "" || src.CertConfigMap != "" {
		if im.cfg.Credentials == nil || ns == "" {
			return &PermanentError{Err: errors.New("secretRef and certConfigMap need the driver's Kubernetes access and a PVC")}
		}
	}
	var err error
	if src.SecretRef != "" {
		if user, pass, err = im.cfg.Credentials.BasicAuth(ctx, ns, src.SecretRef); err != nil {
			return err
		}
	}
	if src.CertConfigMap != "" {
		if ca, err = im.cfg.Credentials.CABundle(ctx, ns, src.CertConfigMap); err != nil {
			return err
		}
	}
	return im.Fetch(ctx, Request{URL: src.URL, Checksum: src.Checksum, Username: user, Password: pass, CA: ca},
		Target{Disk: filepath.Join(vol.Dir, diskimg.Name), Size: vol.Size, Scratch: ScratchPath(vol),
			Record: RecordPath(vol), Owner: owner(vol)}, progress)
}

// RecordPath is where an import into vol keeps its resume record: in the pool's scratch
// directory, beside the volume's directory and out of its pods' reach.
func RecordPath(vol state.Volume) string {
	return filepath.Join(filepath.Dir(vol.Dir), scratchDir, vol.ID+recordSuffix)
}

// owner names vol and its incarnation: a volume made again under the same ID is another owner.
func owner(vol state.Volume) string {
	return vol.ID + "@" + vol.Created.UTC().Format(time.RFC3339Nano)
}

// Resumes says whether an import into vol that a restart cut short will continue where it
// stopped: the driver then keeps vol's disk.img as it is instead of resetting it, and Import
// checks the record and resets the disk itself when the record does not hold.
func (im *Importer) Resumes(vol state.Volume) bool {
	fi, err := os.Lstat(RecordPath(vol))
	return err == nil && fi.Mode().IsRegular()
}

// Request is one HTTP image.
type Request struct {
	URL                string
	Checksum           string
	Username, Password string
	// CA is PEM certificates that replace the system roots for this request.
	CA []byte
}

// Fetch downloads req into t.
func (im *Importer) Fetch(ctx context.Context, req Request, t Target, progress func(float64)) error {
	client, err := im.client(req.CA)
	if err != nil {
		return err
	}
	body := &resumingBody{
		ctx: ctx, client: client, url: req.URL, retries: im.cfg.Retries, backoff: im.cfg.Backoff,
		idle: im.cfg.Idle, log: im.cfg.Log,
		newReq: func(ctx context.Context) (*http.Request, error) {
			r, err := http.NewRequestWithContext(ctx, http.MethodGet, req.URL, nil)
			if err != nil {
				return nil, fmt.Errorf("make request for %s: %w", req.URL, err)
			}
			if req.Username != "" || req.Password != "" {
				r.SetBasicAuth(req.Username, req.Password)
			}
			// Ask for the bytes as stored: a transparently decompressed body would not match
			// the checksum or the Range offsets.
			r.Header.Set("Accept-Encoding", "identity")
			r.Header.Set("User-Agent", "slimvirt-csi-importer")
			return r, nil
		},
	}
	from, err := im.start(body, req, t)
	if err != nil {
		im.endRecord(ctx, t)
		return err
	}
	defer body.Close()
	begin := time.Now()
	var image io.Reader = body
	if from == nil {
		var streamed bool
		if image, streamed, err = im.streamOrStage(ctx, req, body, t, progress); streamed || err != nil {
			im.endRecord(ctx, t)
			if err == nil {
				im.cfg.Log.Info("imported image", "url", req.URL, "bytes", body.size, "streamed", true, "duration", time.Since(begin))
			}
			return err
		}
	}
	var ck *checkpoint
	if t.Record != "" && body.ranges && body.valid != "" && len(body.valid) <= maxValidator && body.size > 0 {
		ck = im.checkpoints(req, t, body)
	}
	err = write(ctx, Stream{R: image, Total: body.size, Checksum: req.Checksum, Progress: progress}, t, from, ck)
	im.endRecord(ctx, t)
	if err != nil {
		return err
	}
	resumedAt := int64(0)
	if from != nil {
		resumedAt = from.offset
	}
	im.cfg.Log.Info("imported image", "url", req.URL, "bytes", body.off, "resumedAt", resumedAt, "resumes", body.resumes, "duration", time.Since(begin))
	return nil
}

// start opens the image: from where a killed run's record says, when the record holds for
// this import and the server still has that file; from byte zero into an all-holes disk
// otherwise.
func (im *Importer) start(body *resumingBody, req Request, t Target) (*resumePoint, error) {
	if t.Record == "" {
		return nil, body.open()
	}
	from, opened, err := im.resumeFrom(body, req, t)
	if err != nil {
		return nil, err
	}
	if from != nil {
		return from, nil
	}
	// The driver left disk.img as it was for the record: start from holes.
	if err := removeRecord(t.Record); err != nil {
		return nil, err
	}
	if err := diskimg.Reset(t.Disk); err != nil {
		if opened {
			_ = body.Close() // the import stops here; the reset's error is the one to report
		}
		return nil, err
	}
	if opened {
		return nil, nil
	}
	return nil, body.open()
}

// resumeFrom continues from the record, if there is one that holds. opened says the body
// already holds the whole image from byte zero (the server answered the Range request so).
func (im *Importer) resumeFrom(body *resumingBody, req Request, t Target) (from *resumePoint, opened bool, err error) {
	disk, err := openDisk(t.Disk)
	if err != nil {
		return nil, false, err
	}
	defer disk.Close()
	id, size, err := fileID(disk)
	if err != nil {
		return nil, false, err
	}
	rec, why := loadRecord(t.Record, record{Owner: t.Owner, URL: req.URL, Checksum: req.Checksum}, id, min(size, t.Size))
	if rec == nil {
		if why != "" {
			im.cfg.Log.Info("resume record discarded", "url", req.URL, "record", t.Record, "reason", why)
		}
		return nil, false, nil
	}
	h, err := rec.restoreHash()
	if err != nil {
		im.cfg.Log.Info("resume record discarded", "url", req.URL, "record", t.Record, "reason", err.Error())
		return nil, false, nil
	}
	// Bytes past the record were written but not vouched for: make them holes again, as a
	// fresh import at this byte would find them.
	if err := unix.Fallocate(int(disk.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, rec.Offset, size-rec.Offset); err != nil {
		im.cfg.Log.Info("resume record discarded", "url", req.URL, "record", t.Record, "reason", "punch hole: "+err.Error())
		return nil, false, nil
	}
	// A disk.img reset to holes since (or replaced by another file of the same identity) no
	// longer holds the data the record vouches for.
	if alloc, err := diskimg.AllocatedFile(disk); err != nil || alloc < rec.Data {
		im.cfg.Log.Info("resume record discarded", "url", req.URL, "record", t.Record, "reason", "disk.img lost the data written", "allocated", alloc, "data", rec.Data)
		return nil, false, nil
	}
	resumed, err := body.openFrom(rec.Offset, rec.Total, rec.Validator)
	if err != nil || !resumed {
		return nil, err == nil, err
	}
	im.cfg.Log.Info("import resumed after a restart", "url", req.URL, "offset", rec.Offset, "total", rec.Total)
	return &resumePoint{offset: rec.Offset, data: rec.Data, hash: h}, false, nil
}

// checkpoints records, every t.CheckpointEvery bytes, how far a raw image is written.
func (im *Importer) checkpoints(req Request, t Target, body *resumingBody) *checkpoint {
	disk, err := openDisk(t.Disk)
	if err != nil {
		im.cfg.Log.Info("import will not be resumable", "url", req.URL, "err", err)
		return nil
	}
	id, _, err := fileID(disk)
	_ = disk.Close() // opened read-write only to stat it
	if err != nil {
		im.cfg.Log.Info("import will not be resumable", "url", req.URL, "err", err)
		return nil
	}
	every := t.CheckpointEvery
	if every <= 0 {
		every = im.cfg.Checkpoint
	}
	rec := record{Version: recordVersion, Owner: t.Owner, URL: req.URL, Checksum: req.Checksum,
		Validator: body.valid, Total: body.size, DiskDev: id.dev, DiskIno: id.ino}
	return &checkpoint{every: every, save: func(off, data int64, h hash.Hash) {
		rec.Offset, rec.Data = off, data
		if err := saveRecord(t.Record, rec, h); err != nil {
			// The previous record still holds (it names fewer bytes); the import goes on.
			im.cfg.Log.Error("save resume record", "url", req.URL, "offset", off, "err", err)
		}
	}}
}

// endRecord removes the record once the import is over: done, or failed (the driver then
// resets the disk). An import stopped by its context (the driver shutting down) keeps it.
func (im *Importer) endRecord(ctx context.Context, t Target) {
	if t.Record == "" || ctx.Err() != nil {
		return
	}
	if err := removeRecord(t.Record); err != nil {
		im.cfg.Log.Error("remove resume record", "record", t.Record, "err", err)
	}
}

func (im *Importer) client(ca []byte) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Every connection, redirects and re-resolved names included, is checked on the address
	// dialled. No proxy from the environment: a proxy would make the connection on the
	// importer's behalf, past the check.
	tr.DialContext = im.cfg.Egress.Dialer().DialContext
	tr.Proxy = nil
	tr.ResponseHeaderTimeout = 60 * time.Second
	tr.DisableCompression = true
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, &PermanentError{Err: errors.New("the CA ConfigMap holds no PEM certificate")}
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if r.URL.Scheme != "http" && r.URL.Scheme != "https" {
				return &PermanentError{Err: fmt.Errorf("redirect to %s refused: only http and https", r.URL.Scheme)}
			}
			if len(via) >= 10 {
				return &PermanentError{Err: errors.New("more than 10 redirects")}
			}
			return nil
		},
	}, nil
}
