"""Communicators, residuals and group calls over the C API."""

import contextlib
import datetime
import os
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from . import _core
from ._errors import InvalidArgumentError, TimeoutError

__all__ = [
    "Comm",
    "Residual",
    "group",
    "get_unique_id",
    "get_unique_id_from_address",
    "DATATYPES",
    "OPS",
]

# cc_red_op_t, numbered like ncclRedOp_t.
OPS: Dict[str, int] = {"sum": 0, "prod": 1, "max": 2, "min": 3, "avg": 4}
# cc_datatype_t, numbered like ncclDataType_t.
DATATYPES: Dict[str, int] = {
    "int8": 0,
    "uint8": 1,
    "int32": 2,
    "uint32": 3,
    "int64": 4,
    "uint64": 5,
    "float16": 6,
    "float32": 7,
    "float64": 8,
    "bfloat16": 9,
}
_DATATYPE_NAMES = {code: name for name, code in DATATYPES.items()}

Timeout = Union[float, int, datetime.timedelta, None]


def _timeout_ms(timeout: Timeout) -> Optional[int]:
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)
    if not seconds > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    milliseconds = int(round(seconds * 1000))
    if milliseconds > 2**31 - 1:
        raise ValueError(f"timeout {timeout!r} is longer than the library's limit of {(2**31 - 1) / 1000:.0f} s")
    return max(milliseconds, 1)


def get_unique_id() -> bytes:
    """``cc_get_unique_id``: 128 bytes naming a bootstrap store.

    Without ``CC_COMM_ID`` this starts the store in the calling process, which must
    stay alive until every rank has created its :class:`Comm`. Pass the bytes to the
    other ranks (a file, ``mpi4py``'s ``bcast``, a key-value store)."""
    return _core.get_unique_id()


def get_unique_id_from_address(address: str, secret: Optional[str] = None) -> bytes:
    """The id every rank computes from the same ``"host:port"`` text and secret (as with
    ``CC_COMM_ID`` and ``CC_COMM_SECRET``); rank 0 serves the store there when it creates its
    communicator. ``secret``: a token of 16 characters or more that every rank of the job
    shares and nobody else knows (``None``: ``CC_COMM_SECRET``); ranks without it cannot join."""
    return _core.get_unique_id_from_address(address, secret)


# Group calls are per thread in the library; the buffers of queued calls must
# stay alive until the outermost group ends.
_group_state = threading.local()


def _group_pending() -> Optional[List[Any]]:
    stack = getattr(_group_state, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def group() -> Iterator[None]:
    """Queues the calls made inside (on any communicator, from this thread) and runs them
    at the end as ``cc_group_start``/``cc_group_end``: calls with the same datatype, op and
    codec on one communicator fuse into one collective. Groups nest."""
    stack = getattr(_group_state, "stack", None)
    if stack is None:
        stack = _group_state.stack = []
    _core.group_start()
    stack.append([])
    try:
        yield
    except BaseException:
        kept = stack.pop()
        # The queued calls still run: every rank must issue the same collectives.
        try:
            _core.group_end()
        except Exception:
            pass
        del kept
        raise
    kept = stack.pop()
    if stack:
        stack[-1].extend(kept)
    try:
        _core.group_end()
    finally:
        del kept


class Residual:
    """Error-feedback state (EF-SGD) for one tensor or bucket: what this rank's encodes
    have lost so far, float32 whatever the datatype. Keep one per tensor across steps and
    pass it to :meth:`Comm.allreduce`. Pickles (with its values)."""

    def __init__(self, count: int, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float16", "bfloat16"):
            raise InvalidArgumentError(
                f"Residual: error feedback needs float32, float16 or bfloat16, not {dtype!r}")
        if count < 0:
            raise ValueError(f"Residual: count must be non-negative, got {count}")
        self._residual = _core.Residual(int(count), DATATYPES[dtype])

    @property
    def count(self) -> int:
        return self._residual.count

    @property
    def dtype(self) -> str:
        return _DATATYPE_NAMES[self._residual.datatype]

    def copy_to(self, out: Any) -> Any:
        """Copies the values into ``out`` (``count`` float32 values, CPU, contiguous); returns it."""
        self._residual.copy_to(out)
        return out

    def copy_from(self, values: Any) -> None:
        """Sets the values from ``count`` float32 values (CPU, contiguous)."""
        self._residual.copy_from(values)

    def reset(self) -> None:
        """Zeroes the values."""
        self._residual.reset()

    def to_bytes(self) -> bytes:
        """The values as little-endian float32 bytes."""
        import array
        import sys

        values = array.array("f", bytes(4 * self.count))
        self._residual.copy_to(values)
        if sys.byteorder != "little":
            values.byteswap()
        return values.tobytes()

    @classmethod
    def from_bytes(cls, count: int, dtype: str, data: bytes) -> "Residual":
        import array
        import sys

        if len(data) != 4 * count:
            raise ValueError(f"Residual.from_bytes: {len(data)} bytes for {count} float32 values")
        residual = cls(count, dtype)
        values = array.array("f")
        values.frombytes(data)
        if sys.byteorder != "little":
            values.byteswap()
        residual._residual.copy_from(values)
        return residual

    def __getstate__(self) -> Dict[str, Any]:
        return {"count": self.count, "dtype": self.dtype, "values": self.to_bytes()}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        restored = Residual.from_bytes(state["count"], state["dtype"], state["values"])
        self._residual = restored._residual

    def __repr__(self) -> str:
        return f"Residual(count={self.count}, dtype={self.dtype!r})"


def _env_rank_and_size() -> Tuple[int, int, str]:
    """(rank, world size, which launcher's variables) from the environment."""
    families = [
        ("CC_RANK", "CC_NRANKS", "compressedcoll (CC_RANK, CC_NRANKS)"),
        ("RANK", "WORLD_SIZE", "torchrun (RANK, WORLD_SIZE)"),
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE)"),
        ("PMI_RANK", "PMI_SIZE", "MPICH/PMI (PMI_RANK, PMI_SIZE)"),
        ("SLURM_PROCID", "SLURM_NTASKS", "Slurm (SLURM_PROCID, SLURM_NTASKS)"),
    ]
    for rank_var, size_var, name in families:
        rank_text, size_text = os.environ.get(rank_var), os.environ.get(size_var)
        if rank_text is None and size_text is None:
            continue
        if rank_text is None or size_text is None:
            missing = rank_var if rank_text is None else size_var
            raise InvalidArgumentError(f"Comm.from_env: {name}: {missing} is not set")
        try:
            return int(rank_text), int(size_text), name
        except ValueError:
            raise InvalidArgumentError(
                f"Comm.from_env: {name}: {rank_var}={rank_text!r}, {size_var}={size_text!r} are not integers"
            ) from None
    raise InvalidArgumentError(
        "Comm.from_env: no rank in the environment: set RANK and WORLD_SIZE (torchrun), "
        "OMPI_COMM_WORLD_RANK/SIZE (mpirun), SLURM_PROCID/SLURM_NTASKS (srun) or CC_RANK/CC_NRANKS")


# How many communicators this process has made from each store, so that every
# rank's n-th communicator of a store reads the n-th id.
_store_generations: Dict[int, int] = {}
_store_lock = threading.Lock()


class Comm:
    """A communicator over ``world_size`` ranks (``cc_comm_t``).

    Every rank passes the same ``comm_id`` (``"host:port"``: rank 0 serves the bootstrap
    store there) with the same ``secret`` (``None``: ``CC_COMM_SECRET``), or the same
    ``unique_id`` (:func:`get_unique_id` on one rank, shared out of band: it carries a random
    secret). Options left ``None`` come from the environment (``CC_CODEC``, ``CC_ALGO``,
    ``CC_SEED``, ``CC_TIMEOUT_MS``, ...), then the library's defaults.

    ``codec``: a codec spec (``"nat"``, ``"dither_nat:s=8"``, ``"topk:ratio=0.01+nat"``,
    ``"none"``); ``algo``: ``"ring"``, ``"direct"``, ``"tree"``, ``"allgather"`` or ``"auto"``;
    ``timeout``: seconds (or a ``timedelta``) for every wait; ``transport``: ``"tcp"``,
    ``"ibverbs"`` or ``"local"`` (ranks as threads of this process); ``compress_min_bytes``:
    under ``algo="auto"``, calls of the communicator's codec smaller than this many bytes run
    exact and larger ones compressed (``0``: compress every call; ``None``:
    ``CC_COMPRESS_MIN_BYTES``, else auto times both paths where its model cannot tell them
    apart); every rank must pass the same."""

    def __init__(
        self,
        rank: int,
        world_size: int,
        comm_id: Optional[str] = None,
        unique_id: Optional[bytes] = None,
        *,
        secret: Optional[str] = None,
        codec: Optional[str] = None,
        algo: Optional[str] = None,
        seed: Optional[int] = None,
        timeout: Timeout = None,
        transport: Optional[str] = None,
        debug: Optional[str] = None,
        chunk_bytes: Optional[int] = None,
        socket_ifname: Optional[str] = None,
        ib_device: Optional[str] = None,
        master_codec: Optional[str] = None,
        compress_min_bytes: Optional[int] = None,
    ) -> None:
        if (comm_id is None) == (unique_id is None):
            raise InvalidArgumentError(
                "Comm: pass exactly one of comm_id='host:port' and unique_id=bytes (from get_unique_id())")
        if comm_id is not None:
            unique_id = get_unique_id_from_address(comm_id, secret)
        elif secret is not None:
            raise InvalidArgumentError("Comm: secret goes with comm_id (a unique_id carries its own)")
        if seed is not None and not 0 <= seed < 2**64:
            raise InvalidArgumentError(f"Comm: seed must be in [0, 2**64), got {seed}")
        # The C config reads -1 as "unset": a negative size must not pass for None.
        for name, size in (("chunk_bytes", chunk_bytes), ("compress_min_bytes", compress_min_bytes)):
            if size is not None and size < 0:
                raise InvalidArgumentError(f"Comm: {name} must be 0 or more, got {size}")
        self._comm = _core.Comm(
            int(world_size),
            bytes(unique_id),  # type: ignore[arg-type]
            int(rank),
            codec=codec,
            algo=algo,
            transport=transport,
            seed=seed,
            timeout_ms=_timeout_ms(timeout),
            debug=debug,
            chunk_bytes=chunk_bytes,
            socket_ifname=socket_ifname,
            ib_device=ib_device,
            master_codec=master_codec,
            compress_min_bytes=compress_min_bytes,
        )
        self.codec = codec

    # ------------------------------------------------------------------ creation

    @classmethod
    def from_env(cls, **options: Any) -> "Comm":
        """Rank and world size from the launcher's variables (``CC_RANK``/``CC_NRANKS``,
        torchrun's ``RANK``/``WORLD_SIZE``, Open MPI's ``OMPI_COMM_WORLD_*``, ``PMI_*``,
        Slurm's ``SLURM_PROCID``/``SLURM_NTASKS``), the store's address from ``CC_COMM_ID`` and
        the job's secret from ``CC_COMM_SECRET``."""
        rank, world_size, _ = _env_rank_and_size()
        comm_id = os.environ.get("CC_COMM_ID")
        if not comm_id:
            raise InvalidArgumentError(
                "Comm.from_env: CC_COMM_ID is not set: set it to host:port of rank 0 (a port other than "
                "torchrun's MASTER_PORT), or use Comm.from_store(store, rank, world_size)")
        return cls(rank, world_size, comm_id=comm_id, **options)

    @classmethod
    def from_store(
        cls,
        store: Any,
        rank: int,
        world_size: int,
        *,
        prefix: str = "compressedcoll",
        timeout: Timeout = None,
        **options: Any,
    ) -> "Comm":
        """Shares the unique id through ``store`` (anything with ``set(key, bytes)`` and
        ``get(key)``, e.g. a ``torch.distributed`` store): rank 0 makes it, the others read
        it. Every rank must create its communicators from a store in the same order."""
        with _store_lock:
            generation = _store_generations.get(id(store), 0)
            _store_generations[id(store)] = generation + 1
        key = f"{prefix}/unique_id/{generation}"
        if rank == 0:
            unique_id = get_unique_id()
            store.set(key, unique_id)
        else:
            unique_id = _store_get(store, key, _timeout_ms(timeout))
        return cls(rank, world_size, unique_id=unique_id, timeout=timeout, **options)

    # ---------------------------------------------------------------- collectives

    def allreduce(
        self,
        buffer: Any,
        op: str = "sum",
        codec: Optional[str] = None,
        residual: Optional[Residual] = None,
    ) -> Any:
        """Reduces ``buffer`` over all ranks in place and returns it.

        ``buffer``: a C-contiguous, writable numpy array or torch tensor (CPU; CUDA in a
        build with CUDA, enqueued on the current stream). float32, float16 and bfloat16
        with ``op`` ``"sum"`` or ``"avg"`` are compressed with the communicator's codec (or
        ``codec``, a spec every rank passes alike); other dtypes and ops are exact.
        ``residual``: a :class:`Residual` of the buffer's size for error feedback. Inside
        :func:`group` the call is queued and runs at the group's end."""
        try:
            op_code = OPS[op]
        except (KeyError, TypeError):
            raise InvalidArgumentError(f"allreduce: unknown op {op!r} (valid: {', '.join(OPS)})") from None
        target = buffer
        stream = 0
        if type(buffer).__module__ == "torch":
            # DLPack refuses tensors that require grad; the values are the same storage.
            if buffer.requires_grad:
                target = buffer.detach()
            if buffer.is_cuda:
                import torch

                stream = torch.cuda.current_stream(buffer.device).cuda_stream
        native_residual = None
        if residual is not None:
            if not isinstance(residual, Residual):
                raise TypeError(f"allreduce: residual must be a compressedcoll.Residual, not {type(residual).__name__}")
            native_residual = residual._residual
        pending = _group_pending()
        self._comm.allreduce(target, op_code, codec, native_residual, stream)
        if pending is not None:
            pending.append((buffer, target, residual))
        return buffer

    def group(self) -> "contextlib.AbstractContextManager[None]":
        """Same as :func:`compressedcoll.group` (groups are per thread, across communicators)."""
        return group()

    # ------------------------------------------------------------------ lifetime

    @property
    def rank(self) -> int:
        return self._comm.rank

    @property
    def size(self) -> int:
        return self._comm.size

    @property
    def closed(self) -> bool:
        return self._comm.closed

    def finalize(self) -> None:
        """Waits for outstanding work; the communicator accepts no more collectives."""
        self._comm.finalize()

    def close(self) -> None:
        """Frees the communicator (``cc_comm_destroy``). Idempotent."""
        self._comm.destroy()

    def abort(self) -> None:
        """Stops all work and breaks the connections so that peers fail instead of waiting
        (``cc_comm_abort``). Safe from another thread while a call runs."""
        self._comm.abort()

    def async_error(self) -> Optional[Exception]:
        """The error that broke the communicator, as an exception object, or ``None``."""
        from ._errors import ERROR_CLASSES

        code = self._comm.async_error()
        if code == 0:
            return None
        return ERROR_CLASSES[code](_core.error_string(code))

    def __enter__(self) -> "Comm":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "Comm(closed)"
        return f"Comm(rank={self.rank}, size={self.size})"


def _store_get(store: Any, key: str, timeout_ms: Optional[int]) -> bytes:
    """``store.get(key)``, waiting for the key where the store raises instead of blocking."""
    deadline = time.monotonic() + (timeout_ms if timeout_ms is not None else 300000) / 1000.0
    while True:
        try:
            value = store.get(key)
        except (KeyError, LookupError):
            value = None
        if value is not None:
            return bytes(value)
        if time.monotonic() > deadline:
            raise TimeoutError(f"Comm.from_store: rank 0 did not set {key!r} in the store before the timeout")
        time.sleep(0.01)
