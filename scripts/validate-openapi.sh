#!/usr/bin/env bash
# Validates the admin API's OpenAPI document offline: builds the producer, prints the document with
# `producer openapi` (generated from the handlers; no database needed) and checks it against the
# OpenAPI 3.1 schema and rules (unique operation ids, path parameters declared, …) with
# openapi-spec-validator, pinned to an exact version.
#
# The validator is installed on first use into a virtualenv under target/openapi-validator/ (PyPI
# only; nothing else is downloaded). It is first shown a known-bad document and must reject it, so
# a wrapper that swallows exit codes cannot pass silently. The document is left in
# target/openapi/openapi.json for inspection. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# Pinned validator (top level) ...
requirements=(
  "openapi-spec-validator==0.9.0"
)
# ... and everything it pulls in, so a clean checkout gets the same set.
constraints=(
  annotated-types==0.8.0 attrs==26.1.0 jsonschema==4.26.0 jsonschema-path==0.5.0
  jsonschema-specifications==2025.9.1 lazy-object-proxy==1.13.0 openapi-schema-validator==0.9.0
  pathable==0.6.0 pydantic==2.14.4 pydantic-settings==2.16.3 pydantic_core==2.50.5
  python-dotenv==1.2.4 PyYAML==6.0.4 referencing==0.37.0 rfc3339-validator==0.1.4
  rpds-py==2026.9.1 six==1.17.0 typing-inspection==0.4.5 typing_extensions==4.16.0
)

fail() { echo "validate-openapi: FAILED: $*" >&2; exit 1; }
step() { echo "== $*"; }

# --- validator ----------------------------------------------------------------------------------
target_dir=${CARGO_TARGET_DIR:-$root/target}
cache=$target_dir/openapi-validator
stamp_text=$(printf '%s\n' "$(python3 --version 2>&1)" "${requirements[@]}" "${constraints[@]}")
stamp_hash=$(printf '%s' "$stamp_text" | sha256sum | cut -c1-12)
venv=$cache/venv-$stamp_hash
if [[ ! -f $venv/.complete ]]; then
  step "installing the pinned validator into ${venv#"$root"/}"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  printf '%s\n' "${constraints[@]}" >"$venv/constraints.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -c "$venv/constraints.txt" "${requirements[@]}" ||
    fail "could not install openapi-spec-validator from PyPI"
  printf '%s\n' "$stamp_text" >"$venv/.complete"
fi
validator=$venv/bin/openapi-spec-validator
echo "validator: openapi-spec-validator $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("openapi-spec-validator"))')"

out=$target_dir/openapi
rm -rf "$out"
mkdir -p "$out"

# --- the validator must say no to a bad document ------------------------------------------------
step "canary: a document with a duplicate operation id and an undeclared path parameter"
cat >"$out/canary.json" <<'JSON'
{"openapi": "3.1.0", "info": {"title": "canary", "version": "0"},
 "paths": {"/a/{id}": {"get": {"operationId": "same", "responses": {"200": {"description": "ok"}}}},
           "/b": {"get": {"operationId": "same", "responses": {"200": {"description": "ok"}}}}}}
JSON
if "$validator" --schema 3.1 "$out/canary.json" >"$out/canary.log" 2>&1; then
  fail "openapi-spec-validator accepted a broken document (see $out/canary.log)"
fi

# --- the document -------------------------------------------------------------------------------
step "producer openapi"
cargo build --quiet -p producer --bin producer || fail "cannot build the producer"
env -u DATABASE_URL "$target_dir/debug/producer" openapi >"$out/openapi.json" ||
  fail "producer openapi failed"
version=$("$venv/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["openapi"])' "$out/openapi.json")
[[ $version == 3.1.* ]] || fail "the document is OpenAPI $version, not 3.1"
paths=$("$venv/bin/python" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["paths"]))' "$out/openapi.json")

step "openapi-spec-validator --schema 3.1 (OpenAPI $version, $paths paths)"
"$validator" --schema 3.1 --validation-errors all "$out/openapi.json" || fail "the document is not valid OpenAPI 3.1"
echo "validate-openapi: OK (${out#"$root"/}/openapi.json)"
