#!/usr/bin/env bash
# Installs python-tds (pytds) for the tds_pytds test into a cache outside the repository and
# prints the directory to put on PYTHONPATH. Idempotent.
set -euo pipefail
dir="${ODS_SIM_PYTDS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ods-sim/python-tds}"
if ! PYTHONPATH="$dir" python3 -c 'import pytds' 2>/dev/null; then
    mkdir -p "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --target "$dir" python-tds >&2
fi
echo "$dir"
