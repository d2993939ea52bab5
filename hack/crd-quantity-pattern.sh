#!/usr/bin/env bash
# controller-gen's pattern for resource.Quantity fields lets the exponent have a fraction
# ("1e1.5"), which Kubernetes cannot parse: one such object makes every watch of its kind fail
# to decode. This narrows the exponent to an integer, as resource.ParseQuantity has it, in the
# generated CRDs (make generate runs it after controller-gen).
set -euo pipefail
perl -pi -e 's/\Q([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+)))\E/([eE](\\+|-)?[0-9]+)/g' "$@"
