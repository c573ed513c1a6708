"""The binding in one process: ranks as threads over the local and tcp transports."""

import builtins
import pickle
import threading
import time

import numpy as np
import pytest
import torch

import compressedcoll as cc
from conftest import run_threads

NRANKS = 3


def make_comms(nranks=NRANKS, **options):
    """One communicator per rank, created concurrently (init waits for every rank)."""
    unique_id = cc.get_unique_id()
    options.setdefault("transport", "local")
    return run_threads(nranks, lambda rank: cc.Comm(rank, nranks, unique_id=unique_id, **options))


def close_all(comms):
    for comm in comms:
        comm.close()


def rank_values(rank, count, dtype=np.float32, seed=0):
    rng = np.random.default_rng(1000 * seed + rank)
    return rng.standard_normal(count).astype(dtype)


def test_version_and_build_flags():
    assert cc.__version__.count(".") == 2
    major, minor, patch = (int(part) for part in cc.__version__.split("."))
    assert cc.library_version() == major * 10000 + minor * 100 + patch
    assert isinstance(cc.HAVE_CUDA, bool)


@pytest.mark.parametrize("transport", ["local", "tcp"])
@pytest.mark.parametrize("codec", ["nat", "dither_nat", "none"])
def test_numpy_float32_ranks_end_bit_identical_and_close_to_the_sum(transport, codec):
    comms = make_comms(transport=transport, codec=codec, algo="ring", seed=11)
    count = 10007
    inputs = [rank_values(rank, count) for rank in range(NRANKS)]
    outputs = [values.copy() for values in inputs]
    returned = run_threads(NRANKS, lambda rank: comms[rank].allreduce(outputs[rank], op="sum"))
    assert all(ret is out for ret, out in zip(returned, outputs))
    for out in outputs[1:]:
        assert out.tobytes() == outputs[0].tobytes()
    exact = np.sum(np.stack(inputs).astype(np.float64), axis=0)
    relative = np.linalg.norm(outputs[0] - exact) / np.linalg.norm(exact)
    assert relative < (1e-6 if codec == "none" else 0.5), relative
    close_all(comms)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_torch_tensors_in_place_including_ones_that_require_grad(dtype):
    comms = make_comms(codec="nat", algo="ring", seed=5)
    tensors = [torch.full((64, 33), float(rank + 1), dtype=dtype, requires_grad=(rank == 0))
               for rank in range(NRANKS)]
    pointers = [tensor.data_ptr() for tensor in tensors]
    run_threads(NRANKS, lambda rank: comms[rank].allreduce(tensors[rank], op="avg"))
    for tensor, pointer in zip(tensors, pointers):
        assert tensor.data_ptr() == pointer  # in place, no copy
        assert torch.equal(tensor.detach(), tensors[0].detach())
    # nat rounds each value to a neighbouring power of two: 2 averages to 1, 2 or 4.
    assert set(torch.unique(tensors[0].detach().float()).tolist()) <= {1.0, 2.0, 4.0}
    close_all(comms)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.float64])
def test_other_dtypes_are_exact(dtype):
    comms = make_comms(codec="nat", algo="ring")
    arrays = [(np.arange(257) % 50 + rank).astype(dtype) for rank in range(NRANKS)]
    expected = sum(np.arange(257, dtype=np.int64) % 50 + rank for rank in range(NRANKS))
    run_threads(NRANKS, lambda rank: comms[rank].allreduce(arrays[rank]))
    for array in arrays:
        np.testing.assert_array_equal(array.astype(np.int64), expected)
    maxima = [np.full(9, rank, dtype=np.int32) for rank in range(NRANKS)]
    run_threads(NRANKS, lambda rank: comms[rank].allreduce(maxima[rank], op="max"))
    assert all((m == NRANKS - 1).all() for m in maxima)
    close_all(comms)


def test_multidimensional_and_zero_size_buffers():
    comms = make_comms(codec="none", algo="ring")
    cubes = [np.ones((4, 5, 6), dtype=np.float32) for _ in range(NRANKS)]
    empties = [np.zeros(0, dtype=np.float32) for _ in range(NRANKS)]

    def run(rank):
        comms[rank].allreduce(cubes[rank])
        comms[rank].allreduce(empties[rank])

    run_threads(NRANKS, run)
    assert all((cube == NRANKS).all() for cube in cubes)
    close_all(comms)


def test_group_fuses_calls_and_keeps_the_buffers_alive():
    comms = make_comms(codec="none", algo="ring")
    sizes = [3, 1000, 77]

    def run(rank):
        arrays = [np.full(size, rank + 1, dtype=np.float32) for size in sizes]
        ids = [id(array) for array in arrays]
        with comms[rank].group():
            for array in arrays:
                comms[rank].allreduce(array)
            # Queued, not run: the values are untouched until the group ends.
            assert all((array == rank + 1).all() for array in arrays)
        del ids
        return arrays

    results = run_threads(NRANKS, run)
    total = sum(range(1, NRANKS + 1))
    for arrays in results:
        assert [array.size for array in arrays] == sizes
        assert all((array == total).all() for array in arrays)
    close_all(comms)


def test_residual_error_feedback_and_pickling():
    comms = make_comms(codec="nat_det", algo="ring")
    count = 1000
    residuals = [cc.Residual(count) for _ in range(NRANKS)]
    assert residuals[0].count == count and residuals[0].dtype == "float32"
    arrays = [rank_values(rank, count) for rank in range(NRANKS)]
    run_threads(NRANKS, lambda rank: comms[rank].allreduce(arrays[rank], residual=residuals[rank]))
    values = residuals[0].copy_to(np.empty(count, dtype=np.float32))
    assert np.abs(values).max() > 0  # nat_det loses something and the residual keeps it
    restored = pickle.loads(pickle.dumps(residuals[0]))
    assert restored.count == count
    np.testing.assert_array_equal(restored.copy_to(np.empty(count, dtype=np.float32)), values)
    restored.reset()
    assert not restored.copy_to(np.empty(count, dtype=np.float32)).any()
    torch_values = torch.empty(count)
    residuals[1].copy_to(torch_values)
    assert torch_values.abs().max() > 0
    with pytest.raises(cc.InvalidArgumentError, match="residual was created for 1000"):
        comms[0].allreduce(np.zeros(10, dtype=np.float32), residual=residuals[0])
    with pytest.raises(ValueError, match="1000 float32 values"):
        residuals[0].copy_to(np.empty(10, dtype=np.float32))
    with pytest.raises(cc.InvalidArgumentError, match="float32, float16 or bfloat16"):
        cc.Residual(10, "int32")
    # A spec whose variance bound omega is 1 or more would grow the residual without bound.
    wide = cc.Residual(4096)
    with pytest.raises(cc.InvalidArgumentError, match="error feedback with .* omega is 5.66"):
        comms[0].allreduce(np.zeros(4096, dtype=np.float32), codec="qsgd:s=4", residual=wide)
    close_all(comms)


def test_gil_is_released_while_a_call_waits():
    comms = make_comms(nranks=2, codec="nat", algo="ring")
    counter = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counter[0] += 1

    def run(rank):
        if rank == 1:
            time.sleep(0.5)  # rank 0 waits in the call meanwhile
        comms[rank].allreduce(np.ones(1000, dtype=np.float32))

    counting = threading.Thread(target=count)
    counting.start()
    start = counter[0]
    run_threads(2, run)
    stop.set()
    counting.join()
    assert counter[0] - start > 1000
    close_all(comms)


# ---------------------------------------------------------------- errors


def test_buffers_that_cannot_be_reduced_in_place_are_refused_clearly():
    comm = cc.Comm(0, 1, unique_id=cc.get_unique_id(), transport="local")
    frozen = np.zeros(8, dtype=np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        comm.allreduce(frozen)
    with pytest.raises(ValueError, match="not contiguous"):
        comm.allreduce(np.zeros((8, 8), dtype=np.float32)[:, 1])
    with pytest.raises(ValueError, match="not contiguous"):
        comm.allreduce(torch.zeros(8, 8).t())
    with pytest.raises(TypeError, match="not list"):
        comm.allreduce([1.0, 2.0])
    with pytest.raises(TypeError, match="element type bool"):
        comm.allreduce(np.zeros(4, dtype=bool))
    with pytest.raises(TypeError, match="element type complex64"):
        comm.allreduce(np.zeros(4, dtype=np.complex64))
    with pytest.raises(cc.InvalidArgumentError, match="unknown op 'mean'"):
        comm.allreduce(np.zeros(4, dtype=np.float32), op="mean")
    comm.close()


def test_every_result_code_has_its_class():
    expected = {
        1: (cc.InvalidArgumentError, ValueError),
        2: (cc.InvalidUsageError, RuntimeError),
        3: (cc.SystemCallError, OSError),
        4: (cc.RemoteError, ConnectionError),
        5: (cc.TimeoutError, builtins.TimeoutError),
        6: (cc.UnsupportedError, NotImplementedError),
        7: (cc.CudaError, RuntimeError),
        8: (cc.InternalError, RuntimeError),
        9: (cc.InProgressError, RuntimeError),
    }
    for code, (cls, builtin) in expected.items():
        assert cls.result == code and issubclass(cls, cc.Error) and issubclass(cls, builtin)
        assert cls.result_name.startswith("CC_")
        error = pickle.loads(pickle.dumps(cls("message")))
        assert type(error) is cls and str(error) == "message"


def test_invalid_argument_errors_carry_the_library_message():
    with pytest.raises(cc.InvalidArgumentError, match="unknown codec 'bogus'"):
        cc.Comm(0, 1, unique_id=cc.get_unique_id(), transport="local", codec="bogus")
    with pytest.raises(cc.InvalidArgumentError, match="unknown algorithm 'fastest'"):
        cc.Comm(0, 1, unique_id=cc.get_unique_id(), transport="local", algo="fastest")
    with pytest.raises(cc.InvalidArgumentError, match="rank 5 is outside"):
        cc.Comm(5, 2, unique_id=cc.get_unique_id(), transport="local")
    with pytest.raises(cc.InvalidArgumentError, match="is malformed"):
        cc.Comm(0, 1, comm_id="127.0.0.1", transport="local")
    with pytest.raises(cc.InvalidArgumentError, match="exactly one of"):
        cc.Comm(0, 1, transport="local")
    with pytest.raises(ValueError, match="128 bytes"):
        cc.Comm(0, 1, unique_id=b"short", transport="local")
    with pytest.raises(cc.InvalidArgumentError, match="not made by cc_get_unique_id"):
        cc.Comm(0, 1, unique_id=bytes(128), transport="local")
    comm = cc.Comm(0, 1, unique_id=cc.get_unique_id(), transport="local")
    with pytest.raises(cc.InvalidArgumentError, match="codec spec 'qsgd:s=0'"):
        comm.allreduce(np.zeros(4, dtype=np.float32), codec="qsgd:s=0")
    comm.close()


def test_compress_min_bytes_sends_smaller_calls_exact():
    comms = make_comms(codec="nat", algo="auto", seed=5, compress_min_bytes=64 * 1024)
    for count, exact_path in ((1000, True), (100000, False)):
        inputs = [rank_values(rank, count, seed=count) for rank in range(NRANKS)]
        outputs = [values.copy() for values in inputs]
        run_threads(NRANKS, lambda rank: comms[rank].allreduce(outputs[rank]))
        for out in outputs[1:]:
            assert out.tobytes() == outputs[0].tobytes()
        exact = np.sum(np.stack(inputs).astype(np.float64), axis=0)
        relative = np.linalg.norm(outputs[0] - exact) / np.linalg.norm(exact)
        # float32 rounding on the exact path; nat's error on these inputs is about 10%
        assert (relative < 1e-6) if exact_path else (relative > 1e-3), (count, relative)
    close_all(comms)
    for size in (-1, -5):
        with pytest.raises(cc.InvalidArgumentError, match="compress_min_bytes must be 0 or more"):
            cc.Comm(0, 1, unique_id=cc.get_unique_id(), transport="local", compress_min_bytes=size)


def test_invalid_usage_errors():
    comm = cc.Comm(0, 1, unique_id=cc.get_unique_id(), transport="local")
    comm.close()
    comm.close()  # idempotent
    assert comm.closed
    with pytest.raises(cc.InvalidUsageError, match="closed or aborted"):
        comm.allreduce(np.zeros(4, dtype=np.float32))
    with pytest.raises(cc.InvalidUsageError, match="cc_group_end without"):
        cc._core.group_end()
    finalized = cc.Comm(0, 1, unique_id=cc.get_unique_id(), transport="local")
    finalized.finalize()
    with pytest.raises(cc.InvalidUsageError, match="finalized"):
        finalized.allreduce(np.zeros(4, dtype=np.float32))
    finalized.close()


def test_unsupported_codec_and_algorithm_pair():
    comm = cc.Comm(0, 1, unique_id=cc.get_unique_id(), transport="local", algo="ring")
    with pytest.raises(cc.UnsupportedError, match="cannot run on ring"):
        comm.allreduce(np.zeros(64, dtype=np.float32), codec="topk:ratio=0.1+nat")
    comm.close()


def test_system_error_names_the_missing_interface(monkeypatch):
    monkeypatch.setenv("CC_SOCKET_IFNAME", "no-such-interface0")
    with pytest.raises(cc.SystemCallError, match="no interface named 'no-such-interface0'"):
        cc.get_unique_id()


def test_timeout_when_a_rank_never_joins():
    unique_id = cc.get_unique_id()
    start = time.monotonic()
    with pytest.raises(cc.TimeoutError) as caught:
        cc.Comm(0, 2, unique_id=unique_id, transport="tcp", timeout=0.5)
    assert isinstance(caught.value, builtins.TimeoutError)
    assert time.monotonic() - start < 10


def test_remote_error_when_a_peer_aborts_during_a_call():
    comms = make_comms(nranks=2, transport="tcp", codec="nat", algo="ring", timeout=30)

    def run(rank):
        if rank == 1:
            time.sleep(0.3)
            comms[1].abort()
            return None
        start = time.monotonic()
        with pytest.raises(cc.RemoteError) as caught:
            comms[0].allreduce(np.ones(1 << 16, dtype=np.float32))
        return time.monotonic() - start, str(caught.value)

    elapsed, message = run_threads(2, run)[0]
    assert elapsed < 10, message
    comms[0].close()


def test_from_env_reads_the_launcher_variables(monkeypatch):
    for name in ("CC_RANK", "CC_NRANKS", "RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                 "PMI_RANK", "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "CC_COMM_ID", "CC_COMM_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(cc.InvalidArgumentError, match="no rank in the environment"):
        cc.Comm.from_env()
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    with pytest.raises(cc.InvalidArgumentError, match="OMPI_COMM_WORLD_SIZE is not set"):
        cc.Comm.from_env()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    with pytest.raises(cc.InvalidArgumentError, match="CC_COMM_ID is not set"):
        cc.Comm.from_env()
    from conftest import free_port

    monkeypatch.setenv("CC_COMM_ID", f"127.0.0.1:{free_port()}")
    with pytest.raises(cc.InvalidArgumentError, match="CC_COMM_SECRET"):
        cc.Comm.from_env()
    monkeypatch.setenv("CC_COMM_SECRET", "a-secret-of-the-job-42")
    for rank_var, size_var in (("SLURM_PROCID", "SLURM_NTASKS"), ("RANK", "WORLD_SIZE")):
        monkeypatch.setenv(rank_var, "0")
        monkeypatch.setenv(size_var, "1")
        monkeypatch.setenv("CC_COMM_ID", f"127.0.0.1:{free_port()}")
        with cc.Comm.from_env(transport="tcp") as comm:
            assert (comm.rank, comm.size) == (0, 1)


def test_comm_id_ranks_need_the_same_secret():
    from conftest import free_port

    port = free_port()
    secrets = ["the-job-secret-0001", "not-the-job-secret!"]

    def run(rank):
        try:
            with cc.Comm(rank, 2, comm_id=f"127.0.0.1:{port}", secret=secrets[rank], transport="tcp", timeout=5):
                return None
        except cc.Error as error:
            return error

    errors = run_threads(2, run)
    assert isinstance(errors[1], cc.InvalidUsageError) and "secret does not match" in str(errors[1]), errors


def test_from_store_shares_the_id_through_a_torch_store():
    from conftest import free_port

    port = free_port()
    stores = run_threads(NRANKS, lambda rank: torch.distributed.TCPStore(
        "127.0.0.1", port, NRANKS, rank == 0, timeout=__import__("datetime").timedelta(seconds=30)))
    comms = run_threads(NRANKS, lambda rank: cc.Comm.from_store(stores[rank], rank, NRANKS, transport="tcp"))
    second = run_threads(NRANKS, lambda rank: cc.Comm.from_store(stores[rank], rank, NRANKS, transport="local"))
    arrays = [np.full(100, rank, dtype=np.float32) for rank in range(NRANKS)]
    run_threads(NRANKS, lambda rank: comms[rank].allreduce(arrays[rank], codec="none"))
    assert all((array == sum(range(NRANKS))).all() for array in arrays)
    close_all(comms)
    close_all(second)


def test_from_store_accepts_any_store_with_set_and_get():
    class DictStore:
        def __init__(self, values):
            self.values = values

        def set(self, key, value):
            self.values[key] = value

        def get(self, key):
            return self.values[key]  # KeyError until set: from_store waits

    shared = {}
    stores = [DictStore(shared), DictStore(shared)]  # one client per rank, as across processes
    comms = run_threads(2, lambda rank: cc.Comm.from_store(stores[rank], rank, 2, transport="local", timeout=10))
    assert [comm.rank for comm in comms] == [0, 1]
    close_all(comms)


def test_the_extension_stub_names_what_the_extension_has():
    import ast
    from pathlib import Path

    stub = ast.parse((Path(cc.__file__).parent / "_core.pyi").read_text())
    stubbed = {}
    for node in stub.body:
        if isinstance(node, ast.ClassDef):
            stubbed[node.name] = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            stubbed[node.name] = None
        elif isinstance(node, ast.AnnAssign):
            stubbed[node.target.id] = None
    public = {name for name in dir(cc._core) if not name.startswith("__") or name == "__version__"}
    public.discard("__doc__")
    assert set(stubbed) == public
    for cls in ("Comm", "Residual"):
        members = {name for name in dir(getattr(cc._core, cls)) if not name.startswith("_") or name == "__init__"}
        assert stubbed[cls] == members, cls
