"""The binding against the C API: the same seed and inputs give the same bits, over tcp
between processes."""

import os
import subprocess

import numpy as np
import pytest

from conftest import TEST_SECRET, free_port, last_json, run_ranks

REFERENCE = os.environ.get("CC_TEST_REFERENCE_ALLREDUCE")
DATATYPES = {"float32": 7, "float16": 6, "bfloat16": 9, "int32": 2}
OPS = {"sum": 0, "avg": 4}
NRANKS = 3


@pytest.mark.skipif(not REFERENCE, reason="CC_TEST_REFERENCE_ALLREDUCE is not set (run through ctest)")
@pytest.mark.parametrize("codec,algo,dtype,op", [
    ("nat", "ring", "float32", "sum"),
    ("nat", "direct", "float32", "avg"),
    ("nat", "tree", "bfloat16", "sum"),
    ("dither_nat:s=8", "ring", "float32", "avg"),
    ("qsgd:s=16", "direct", "float16", "sum"),
    ("none", "ring", "float32", "sum"),
    ("nat", "ring", "int32", "sum"),
])
def test_python_ranks_leave_the_c_api_bits(tmp_path, codec, algo, dtype, op):
    count = 50021
    rng = np.random.default_rng(42)
    for rank in range(NRANKS):
        values = rng.standard_normal(count) * 100
        if dtype == "bfloat16":
            raw = (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)  # truncation is fine
        elif dtype == "int32":
            raw = values.astype(np.int32)
        else:
            raw = values.astype(dtype)
        raw.tofile(tmp_path / f"in{rank}")
    seed = 123456789
    outputs = {}
    for side in ("c", "python"):
        comm_id = f"127.0.0.1:{free_port()}"
        pattern = str(tmp_path / f"{side}_out%d")
        if side == "c":
            processes = []
            for rank in range(NRANKS):
                processes.append(subprocess.Popen(
                    [REFERENCE, str(NRANKS), str(rank), comm_id, str(seed), codec, algo, str(DATATYPES[dtype]),
                     str(OPS[op]), str(count), str(tmp_path / f"in{rank}"), pattern % rank],
                    env=dict(os.environ, CC_SOCKET_IFNAME="lo", CC_COMM_SECRET=TEST_SECRET), stderr=subprocess.PIPE,
                    text=True))
            for process in processes:
                _, stderr = process.communicate(timeout=120)
                assert process.returncode == 0, stderr
        else:
            run_ranks(NRANKS, "allreduce_file", {
                "input": str(tmp_path / "in%d"), "output": pattern, "comm_id": comm_id, "seed": seed,
                "codec": codec, "algo": algo, "dtype": dtype, "op": op})
        outputs[side] = [(tmp_path / f"{side}_out{rank}").read_bytes() for rank in range(NRANKS)]
    for rank in range(NRANKS):
        assert outputs["python"][rank] == outputs["c"][rank], f"rank {rank} differs from the C API's"
        assert outputs["python"][rank] == outputs["python"][0], f"rank {rank} differs from rank 0"
    original = (tmp_path / "in0").read_bytes()
    assert outputs["python"][0] != original


@pytest.mark.parametrize("counts,dtypes", [([1000, 2000], ["float32", "float32"]),
                                           ([1000, 1000], ["float32", "int32"])],
                         ids=["counts", "dtypes"])
def test_mismatched_calls_fail_on_every_rank_without_hanging(counts, dtypes):
    results = run_ranks(2, "mismatched_calls", {
        "comm_id": f"127.0.0.1:{free_port()}", "algo": "ring", "timeout": 60, "counts": counts, "dtypes": dtypes},
        timeout=120)
    for rank, process in enumerate(results):
        outcome = last_json(process)
        assert outcome["error"] == "RemoteError", f"rank {rank}: {outcome}"
        assert outcome["elapsed"] < 5, outcome  # the frame check, not the 60 s timeout
        assert "called compressed_allreduce with count" in outcome["message"], outcome
