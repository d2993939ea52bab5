// Command apiref writes slimvirt's API reference (docs/api-reference.md) from the CRDs that
// controller-gen generates from api/v1alpha1, whose schemas carry the Go doc comments, types,
// enums, defaults and CEL rules. `make api-reference` runs it.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	crds := flag.String("crds", "charts/slimvirt/crds", "directory of the CustomResourceDefinitions (*.yaml)")
	out := flag.String("out", "docs/api-reference.md", "Markdown file to write")
	flag.Parse()
	doc, err := generate(*crds)
	if err == nil {
		err = os.WriteFile(*out, doc, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "apiref:", err)
		os.Exit(1)
	}
}
