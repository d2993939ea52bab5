// Package charttest checks the slimvirt Helm chart as a cluster would take it: for each of a
// set of value sets it runs `helm lint --strict`, renders the chart with helm, and submits every
// rendered object, CRDs included, to a real kube-apiserver as a server-side dry run with strict
// field validation. The package holds only tests.
package charttest
