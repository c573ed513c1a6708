#!/usr/bin/env python3
"""Checks that the library's layers include only downward.

    base <- codec <- prims <- algo <- comm <- api
    transports and cuda beside prims: above codec, below algo
    switch/ (the daemon): on base, codec and transports only

Every quoted #include of a file under src/, cuda/, transports/ or switch/ is resolved
to the file it names and checked against the layer map below; the public
header (include/compressedcoll.h) is the C API's contract and open to all.
perf/ and tests/ stand outside the layers and are not checked.

    scripts/check_layers.py [--root DIR]   exit 0: all downward; 1: not
    scripts/check_layers.py --self-test    exit 0 when the check fails on an
                                           upward include injected into a copy
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Which layer a file belongs to: the first prefix that matches.
LAYER_OF_PATH = [
    ("include/compressedcoll.h", "public"),
    ("src/base/", "base"),
    ("src/codec/", "codec"),
    # DESIGN.md keeps the headers compiled for host and device in cuda/; they
    # are the codecs' math (the host codecs are the reference), so they sit
    # with the codecs, below the device code that shares them.
    ("cuda/philox.h", "codec"),
    ("cuda/nat_math.h", "codec"),
    ("transports/", "transport"),
    ("src/prims/", "prims"),
    ("cuda/", "cuda"),
    ("src/algo/", "algo"),
    ("src/comm/", "comm"),
    ("src/api/", "api"),
    # The aggregation switch's daemon: the switch protocol (transports/udp/)
    # and the codecs' fixed point, nothing of the communicator.
    ("switch/", "switchd"),
]

# The layers each layer may include (itself and the public header always).
BELOW = {
    "base": [],
    "codec": ["base"],
    "transport": ["base"],
    "prims": ["base", "codec", "transport"],
    "cuda": ["base", "codec", "transport", "prims"],
    "algo": ["base", "codec", "transport", "prims", "cuda"],
    "comm": ["base", "codec", "transport", "prims", "cuda", "algo"],
    "api": ["base", "codec", "transport", "prims", "cuda", "algo", "comm"],
    "switchd": ["base", "codec", "transport"],
}

SOURCE_DIRS = ["src", "cuda", "transports", "switch"]
SOURCE_EXTENSIONS = (".h", ".cc", ".cu", ".cuh")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
# Where a quoted include is looked up, as the build's include path does.
SEARCH_DIRS = ["src", "", "include"]


def layer_of(path):
    for prefix, layer in LAYER_OF_PATH:
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return layer
    return None


def resolve(root, including, name):
    """The repository path of `name` as included from `including`, or None
    for a header outside the tree (system, Gloo, CUDA, NCCL)."""
    candidates = [os.path.join(os.path.dirname(including), name)]
    candidates += [os.path.join(d, name) for d in SEARCH_DIRS]
    for candidate in candidates:
        path = os.path.normpath(candidate)
        if os.path.isfile(os.path.join(root, path)):
            return path
    return None


def sources(root):
    for top in SOURCE_DIRS:
        for directory, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(files):
                if name.endswith(SOURCE_EXTENSIONS):
                    yield os.path.relpath(os.path.join(directory, name), root)


def check(root):
    """Returns (files, includes checked, violations as text lines)."""
    files = checked = 0
    violations = []
    for path in sorted(sources(root)):
        layer = layer_of(path)
        if layer is None:
            violations.append(f"{path}: in no layer (add it to LAYER_OF_PATH in {sys.argv[0]})")
            continue
        files += 1
        with open(os.path.join(root, path), encoding="utf-8") as source:
            for number, line in enumerate(source, 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                target = resolve(root, path, match.group(1))
                if target is None:
                    continue
                checked += 1
                target_layer = layer_of(target)
                if target_layer in ("public", layer) or target_layer in BELOW[layer]:
                    continue
                violations.append(
                    f"{path}:{number}: {layer} includes {match.group(1)} ({target_layer}): "
                    f"{layer} may include only {', '.join(BELOW[layer] + [layer]) or layer}")
    return files, checked, violations


def run(root):
    files, checked, violations = check(root)
    for violation in violations:
        print(violation)
    if violations:
        print(f"check_layers: {len(violations)} include(s) point up or sideways "
              f"(docs/architecture.md has the layers)")
        return 1
    print(f"check_layers: {files} files, {checked} includes of our own headers, all downward")
    return 0


def self_test(root):
    """The check must fail on a copy of the tree with an upward include."""
    victim = "src/codec/codec.h"
    upward = '#include "algo/registry.h"  // injected by check_layers.py --self-test\n'
    with tempfile.TemporaryDirectory() as copy:
        for top in SOURCE_DIRS + ["include"]:
            shutil.copytree(os.path.join(root, top), os.path.join(copy, top))
        with open(os.path.join(copy, victim), "a", encoding="utf-8") as source:
            source.write(upward)
        result = subprocess.run([sys.executable, os.path.abspath(__file__), "--root", copy],
                                capture_output=True, text=True)
    print(result.stdout, end="")
    expected = f"{victim}:"
    if result.returncode == 0 or expected not in result.stdout:
        print(f"check_layers --self-test: the check passed a copy whose {victim} includes algo/registry.h")
        return 1
    print(f"check_layers --self-test: the check failed (exit {result.returncode}) on the upward include, as it must")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    return self_test(root) if args.self_test else run(root)


if __name__ == "__main__":
    sys.exit(main())
