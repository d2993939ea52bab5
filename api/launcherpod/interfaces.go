package launcherpod

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxInterfacesAnnotation bounds the interfaces annotation the CNI plugin parses. The largest
// the controller writes (one masquerade interface with 128 ports) is under 8 KiB.
const MaxInterfacesAnnotation = 64 << 10

// ParseInterfaces reads an AnnotationInterfaces value: one JSON list of Interface, bounded in
// size, with no field this package does not know and nothing after the list. It checks the
// form only; what the values may be is for the user of the list to check.
func ParseInterfaces(value string) ([]Interface, error) {
	if len(value) > MaxInterfacesAnnotation {
		return nil, fmt.Errorf("parse annotation %s: %d bytes, at most %d", AnnotationInterfaces, len(value), MaxInterfacesAnnotation)
	}
	d := json.NewDecoder(bytes.NewReader([]byte(value)))
	d.DisallowUnknownFields()
	var out []Interface
	if err := d.Decode(&out); err != nil {
		return nil, fmt.Errorf("parse annotation %s: %w", AnnotationInterfaces, err)
	}
	if out == nil {
		return nil, fmt.Errorf("parse annotation %s: not a list", AnnotationInterfaces)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse annotation %s: data after the list", AnnotationInterfaces)
	}
	return out, nil
}
