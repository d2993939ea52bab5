package launcher

import (
	"encoding/json"
	"fmt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/vmifile"
)

// ReadVMI reads the launcher's VMI: envJSON (env SLIMVIRT_VMI, the launcher run alone) when
// set, else file, which must have the SHA-256 sha256 (package vmifile).
func ReadVMI(envJSON, file, sha256 string) (*v1.VirtualMachineInstance, error) {
	raw := []byte(envJSON)
	if envJSON == "" && sha256 != "" {
		var err error
		if raw, err = vmifile.Read(file, sha256); err != nil {
			return nil, err
		}
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("no VMI: the pod sets neither %s nor %s", launcherpod.EnvVMISHA256, launcherpod.EnvVMI)
	}
	vmi := &v1.VirtualMachineInstance{}
	if err := json.Unmarshal(raw, vmi); err != nil {
		return nil, fmt.Errorf("parse %s: %w", launcherpod.EnvVMI, err)
	}
	if vmi.Name == "" {
		return nil, fmt.Errorf("the VMI in %s has no name", launcherpod.EnvVMI)
	}
	return vmi, nil
}
