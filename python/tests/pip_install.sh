#!/usr/bin/env bash
# `pip install .` of the source tree into a fresh venv that sees Debian's torch, then
# `import compressedcoll.torch` and one collective. The build requirements come from
# BUILD_PYTHON's environment (no build isolation: no download during the tests).
#   pip_install.sh SOURCE_DIR BUILD_PYTHON
set -euo pipefail
source_dir=$1
build_python=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 -m venv --system-site-packages "$work/venv"
"$build_python" -m pip wheel --quiet --no-build-isolation --no-deps --wheel-dir "$work/wheel" "$source_dir"
"$work/venv/bin/python" -m pip install --quiet --no-deps --no-index "$work"/wheel/compressedcoll-*.whl
cd "$work"
"$work/venv/bin/python" - <<'PY'
import numpy as np
import compressedcoll, compressedcoll.torch
assert compressedcoll.__file__.startswith(__import__("sys").prefix), compressedcoll.__file__
with compressedcoll.Comm(0, 1, unique_id=compressedcoll.get_unique_id(), transport="local") as comm:
    values = np.arange(10, dtype=np.float32)
    comm.allreduce(values, codec="none")
    assert (values == np.arange(10)).all()
print("pip install: compressedcoll", compressedcoll.__version__, "from", compressedcoll.__file__)
PY
