// Package cloudinit builds the cloud-init data source ISOs of a VMI: NoCloud (label cidata,
// files user-data, meta-data, network-config) and ConfigDrive (label config-2, files
// openstack/latest/{user_data,meta_data.json,network_data.json}).
package cloudinit

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/iso9660"
)

// Secret file names under SecretsDir/<volume>/, where the controller mounts the secrets that
// secretRef and networkDataSecretRef name.
const (
	UserDataKey    = "userdata"
	NetworkDataKey = "networkdata"
)

// Source is what a NoCloud or ConfigDrive volume says, in one shape.
type Source struct {
	UserData, UserDataBase64       string
	UserDataSecret                 bool
	NetworkData, NetworkDataBase64 string
	NetworkDataSecret              bool
}

// FromVolume reads the cloud-init source of a volume; ok is false for other volumes.
func FromVolume(vol v1.Volume) (src Source, configDrive bool, ok bool) {
	if c := vol.CloudInitNoCloud; c != nil {
		return Source{c.UserData, c.UserDataBase64, c.UserDataSecretRef != nil, c.NetworkData, c.NetworkDataBase64, c.NetworkDataSecretRef != nil}, false, true
	}
	if c := vol.CloudInitConfigDrive; c != nil {
		return Source{c.UserData, c.UserDataBase64, c.UserDataSecretRef != nil, c.NetworkData, c.NetworkDataBase64, c.NetworkDataSecretRef != nil}, true, true
	}
	return Source{}, false, false
}

// Data is the resolved content of a data source.
type Data struct {
	UserData, NetworkData []byte
	InstanceID, Hostname  string
	UUID                  string
}

// Resolve reads inline, base64 and secret-mounted data. secretDir is SecretsDir/<volume>.
func Resolve(src Source, secretDir string) (user, network []byte, err error) {
	user, err = pick("user data", src.UserData, src.UserDataBase64, src.UserDataSecret, filepath.Join(secretDir, UserDataKey))
	if err != nil {
		return nil, nil, err
	}
	network, err = pick("network data", src.NetworkData, src.NetworkDataBase64, src.NetworkDataSecret, filepath.Join(secretDir, NetworkDataKey))
	return user, network, err
}

func pick(what, plain, b64 string, secret bool, secretFile string) ([]byte, error) {
	switch {
	case secret:
		b, err := os.ReadFile(secretFile)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s secret is not mounted at %s", what, secretFile)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s secret: %w", what, err)
		}
		return b, nil
	case b64 != "":
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("decode base64 %s: %w", what, err)
		}
		return b, nil
	case plain != "":
		return []byte(plain), nil
	}
	return nil, nil
}

// NoCloudFiles are the files of a NoCloud ISO.
func NoCloudFiles(d Data) []iso9660.File {
	meta := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", d.InstanceID, d.Hostname)
	files := []iso9660.File{
		{Path: "user-data", Data: d.UserData},
		{Path: "meta-data", Data: []byte(meta)},
	}
	if len(d.NetworkData) > 0 {
		files = append(files, iso9660.File{Path: "network-config", Data: d.NetworkData})
	}
	return files
}

// ConfigDriveFiles are the files of a ConfigDrive ISO.
func ConfigDriveFiles(d Data) ([]iso9660.File, error) {
	meta, err := json.Marshal(map[string]string{
		"instance_id":    d.InstanceID,
		"uuid":           d.UUID,
		"hostname":       d.Hostname,
		"local_hostname": d.Hostname,
		"name":           d.Hostname,
	})
	if err != nil {
		return nil, err
	}
	files := []iso9660.File{
		{Path: "openstack/latest/meta_data.json", Data: meta},
		{Path: "openstack/latest/user_data", Data: d.UserData},
	}
	if len(d.NetworkData) > 0 {
		files = append(files, iso9660.File{Path: "openstack/latest/network_data.json", Data: d.NetworkData})
	}
	return files, nil
}

// WriteISO writes the data source ISO to path.
func WriteISO(path string, configDrive bool, d Data, t time.Time) error {
	label, files := "cidata", NoCloudFiles(d)
	if configDrive {
		var err error
		label = "config-2"
		if files, err = ConfigDriveFiles(d); err != nil {
			return err
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := iso9660.Write(f, label, files, t); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
