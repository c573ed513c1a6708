#!/usr/bin/env bash
# Creates (or refreshes) the virtual environment the Python package is built and
# tested in: Debian's python3 with its system packages visible (python3-torch,
# python3-numpy, python3-pytest from scripts/install-deps.sh: never a PyPI torch),
# plus the two build tools Debian does not package, nanobind and scikit-build-core.
#   scripts/python-env.sh VENV_DIR
# Prints nothing when the environment is already complete.
set -euo pipefail

venv=${1:?usage: scripts/python-env.sh VENV_DIR}
# The interpreter Debian's python3-torch is built for, whatever python3 is first on PATH.
python=/usr/bin/python3
[[ -x $python ]] || python=$(command -v python3)

build_requirements=("nanobind>=2.2,<4" "scikit-build-core>=0.10")

if [[ -x $venv/bin/python ]] &&
  "$venv/bin/python" -c 'import nanobind, scikit_build_core' 2>/dev/null; then
  exit 0
fi
echo "python-env: creating $venv (system site packages + nanobind, scikit-build-core)"
"$python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${build_requirements[@]}"
