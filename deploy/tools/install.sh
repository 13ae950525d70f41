#!/usr/bin/env bash
# Install the tools that check deploy/ (idempotent; a second run only verifies):
#
#   promtool, prometheus   Debian's `prometheus` package: rule checks, rule unit tests and
#                          the live scrape test. Its service is never started.
#   Python checkers        into the project's virtualenv: PyYAML (+ stubs), kubernetes-validate
#                          (Kubernetes' JSON schemas, shipped in the wheel: works offline).
#   compose-config         deploy/tools/compose-config, built with Go: the Compose loader and
#                          validator Docker Compose itself uses (compose-spec/compose-go).
#   kustomize              `kubectl kustomize` when kubectl is installed, else built with Go.
#   monitoring CRDs        prometheus-operator's PodMonitor and PrometheusRule CRDs, taken from
#                          its Go module (the Go module proxy), to validate those resources.
#   AsyncAPI schemas       the official JSON Schemas of the AsyncAPI specification
#                          (@asyncapi/specs from the npm registry), to validate
#                          schemas/asyncapi.yaml.
#
# Everything but the Debian package goes under .local/tools (or $DEPLOY_TOOLS_DIR).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${DEPLOY_TOOLS_DIR:-$ROOT/.local/tools}"
VENV="${DEPLOY_VENV:-$ROOT/.venv}"
PROMETHEUS_OPERATOR_VERSION="v0.94.1"
KUSTOMIZE_VERSION="v5.8.1"  # needs Go 1.24 or newer
ASYNCAPI_SPECS_VERSION="6.11.1"
PYTHON_TOOLS=("PyYAML>=6" "types-PyYAML>=6" "types-jsonschema" "kubernetes-validate==1.37.0")

log() { printf 'deploy-tools: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root (or sudo) to run: $*"
  fi
}

install_prometheus() {
  if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
    return
  fi
  log "installing Debian's prometheus package (promtool and the server binary)"
  # The package's maintainer scripts would start the service through invoke-rc.d; a
  # policy-rc.d answering 101 ("action forbidden") keeps it stopped. Leave any existing one.
  local policy=/usr/sbin/policy-rc.d added=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    added=1
  fi
  local status=0
  as_root apt-get update -qq || status=$?
  if [ "$status" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      prometheus >/dev/null || status=$?
  fi
  if [ "$added" -eq 1 ]; then as_root rm -f "$policy"; fi
  [ "$status" -eq 0 ] || die "apt-get failed ($status)"
  command -v promtool >/dev/null || die "promtool still missing after installing prometheus"
}

install_python_tools() {
  [ -x "$VENV/bin/python" ] || die "no virtualenv at $VENV: run 'make setup' first"
  if "$VENV/bin/python" -c 'import importlib.metadata as m, yaml, kubernetes_validate
for name in ("types-PyYAML", "types-jsonschema"): m.version(name)' 2>/dev/null; then
    return
  fi
  log "installing ${PYTHON_TOOLS[*]} into $VENV"
  "$VENV/bin/python" -m pip install --quiet "${PYTHON_TOOLS[@]}"
}

require_go() {
  command -v go >/dev/null || die "Go is required to build the deploy checkers (go not on PATH)"
}

build_compose_config() {
  local src="$ROOT/deploy/tools/compose-config" bin="$TOOLS/bin/compose-config"
  if [ -x "$bin" ] && [ -z "$(find "$src" -newer "$bin" -type f)" ]; then
    return
  fi
  require_go
  log "building compose-config (compose-spec/compose-go)"
  mkdir -p "$TOOLS/bin"
  (cd "$src" && GOFLAGS=-mod=readonly GOTOOLCHAIN=local go build -trimpath -o "$bin" .)
}

install_kustomize() {
  if [ -x "$TOOLS/bin/kustomize" ] || command -v kustomize >/dev/null \
    || kubectl kustomize --help >/dev/null 2>&1; then
    return
  fi
  require_go
  log "building kustomize $KUSTOMIZE_VERSION"
  mkdir -p "$TOOLS/bin"
  GOBIN="$TOOLS/bin" GOTOOLCHAIN=local go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
}

fetch_monitoring_crds() {
  local dest="$TOOLS/crds/$PROMETHEUS_OPERATOR_VERSION" module dir
  if [ -s "$dest/monitoring.coreos.com_podmonitors.yaml" ] \
    && [ -s "$dest/monitoring.coreos.com_prometheusrules.yaml" ]; then
    return
  fi
  require_go
  log "fetching prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs (Go module)"
  module="github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION"
  mkdir -p "$dest"
  # Outside any module, so the download leaves no trace in the project's go.mod files.
  dir="$(cd "$dest" && GO111MODULE=on GOFLAGS='' GOTOOLCHAIN=local go mod download -json "$module" \
    | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
  for crd in podmonitors prometheusrules; do
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml" "$dest/"
  done
  chmod u+w "$dest"/*.yaml
}

fetch_asyncapi_specs() {
  local dest="$TOOLS/asyncapi-specs/$ASYNCAPI_SPECS_VERSION"
  if [ -s "$dest/schemas/3.0.0-without-\$id.json" ]; then
    return
  fi
  command -v npm >/dev/null || die "npm is required to fetch @asyncapi/specs (npm not on PATH)"
  log "fetching @asyncapi/specs $ASYNCAPI_SPECS_VERSION (npm registry)"
  local work
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "@asyncapi/specs@$ASYNCAPI_SPECS_VERSION" >/dev/null)
  mkdir -p "$dest"
  tar -xzf "$work"/asyncapi-specs-*.tgz -C "$dest" --strip-components=1 package/schemas
  rm -rf "$work"
}

install_prometheus
install_python_tools
build_compose_config
install_kustomize
fetch_monitoring_crds
fetch_asyncapi_specs
log "ready: promtool $(promtool --version 2>&1 | awk 'NR==1 {print $3}'), tools in $TOOLS"
