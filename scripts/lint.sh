#!/usr/bin/env bash
# Static checks: ruff over the Python of src/, tests/ and bench/ (vendored venvs and node packages are
# excluded in pyproject.toml), then mypy over the package. Both are configured in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

status=0
"$PY" -m ruff check src tests bench || status=1
"$PY" -m mypy src/sandboxd || status=1
exit $status
