package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"sigs.k8s.io/yaml"
)

// crd is the part of a CustomResourceDefinition the reference shows.
type crd struct {
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind       string   `json:"kind"`
			Plural     string   `json:"plural"`
			Singular   string   `json:"singular"`
			ShortNames []string `json:"shortNames"`
			Categories []string `json:"categories"`
		} `json:"names"`
		Scope    string    `json:"scope"`
		Versions []version `json:"versions"`
	} `json:"spec"`
	schema *schema // of the one version
	size   int     // bytes of the schema's JSON, to order kinds by
}

type version struct {
	Name   string `json:"name"`
	Schema struct {
		OpenAPIV3Schema json.RawMessage `json:"openAPIV3Schema"`
	} `json:"schema"`
	Subresources struct {
		Status *struct{} `json:"status"`
		Scale  *struct {
			SpecReplicasPath   string `json:"specReplicasPath"`
			StatusReplicasPath string `json:"statusReplicasPath"`
			LabelSelectorPath  string `json:"labelSelectorPath"`
		} `json:"scale"`
	} `json:"subresources"`
	Columns []struct {
		Name        string `json:"name"`
		Type        string `json:"type"`
		JSONPath    string `json:"jsonPath"`
		Description string `json:"description"`
		Priority    int    `json:"priority"`
	} `json:"additionalPrinterColumns"`
}

// schema is an OpenAPI v3 schema node as a structural CRD schema has it. It is decoded
// strictly: a keyword it lacks fails the generator instead of vanishing from the reference.
type schema struct {
	Description          string             `json:"description,omitempty"`
	Type                 string             `json:"type,omitempty"`
	Format               string             `json:"format,omitempty"`
	Properties           map[string]*schema `json:"properties,omitempty"`
	AdditionalProperties *schema            `json:"additionalProperties,omitempty"`
	Items                *schema            `json:"items,omitempty"`
	AnyOf                []*schema          `json:"anyOf,omitempty"`
	Required             []string           `json:"required,omitempty"`
	Enum                 []json.RawMessage  `json:"enum,omitempty"`
	Default              json.RawMessage    `json:"default,omitempty"`
	Nullable             bool               `json:"nullable,omitempty"`
	Pattern              string             `json:"pattern,omitempty"`
	MinLength            json.Number        `json:"minLength,omitempty"`
	MaxLength            json.Number        `json:"maxLength,omitempty"`
	Minimum              json.Number        `json:"minimum,omitempty"`
	Maximum              json.Number        `json:"maximum,omitempty"`
	MinItems             json.Number        `json:"minItems,omitempty"`
	MaxItems             json.Number        `json:"maxItems,omitempty"`
	MaxProperties        json.Number        `json:"maxProperties,omitempty"`
	IntOrString          bool               `json:"x-kubernetes-int-or-string,omitempty"`
	PreserveUnknown      bool               `json:"x-kubernetes-preserve-unknown-fields,omitempty"`
	EmbeddedResource     bool               `json:"x-kubernetes-embedded-resource,omitempty"`
	ListType             string             `json:"x-kubernetes-list-type,omitempty"`
	ListMapKeys          []string           `json:"x-kubernetes-list-map-keys,omitempty"`
	MapType              string             `json:"x-kubernetes-map-type,omitempty"`
	Validations          []rule             `json:"x-kubernetes-validations,omitempty"`
}

// rule is a CEL validation rule.
type rule struct {
	Rule              string `json:"rule"`
	Message           string `json:"message,omitempty"`
	MessageExpression string `json:"messageExpression,omitempty"`
	Reason            string `json:"reason,omitempty"`
	FieldPath         string `json:"fieldPath,omitempty"`
	OptionalOldSelf   *bool  `json:"optionalOldSelf,omitempty"`
}

// readCRDs reads every *.yaml in dir, one CRD each.
func readCRDs(dir string) ([]*crd, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CRDs (*.yaml) in %s", dir)
	}
	slices.Sort(files)
	var crds []*crd
	for _, f := range files {
		c, err := readCRD(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		crds = append(crds, c)
	}
	return crds, nil
}

func readCRD(file string) (*crd, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	c := &crd{}
	if err := json.Unmarshal(j, c); err != nil {
		return nil, err
	}
	if c.Spec.Names.Kind == "" {
		return nil, fmt.Errorf("not a CustomResourceDefinition")
	}
	// One version is what slimvirt serves; a second would need a reference per version.
	if len(c.Spec.Versions) != 1 {
		return nil, fmt.Errorf("%s has %d versions, the reference shows one", c.Spec.Names.Kind, len(c.Spec.Versions))
	}
	raw := c.Spec.Versions[0].Schema.OpenAPIV3Schema
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c.schema); err != nil {
		return nil, fmt.Errorf("schema of %s: %w (the reference does not show this keyword)", c.Spec.Names.Kind, err)
	}
	if c.schema == nil {
		return nil, fmt.Errorf("%s has no openAPIV3Schema", c.Spec.Names.Kind)
	}
	c.size = len(raw)
	return c, nil
}
