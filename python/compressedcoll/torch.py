"""A DDP communication hook that averages gradient buckets with compressed allreduce.

Used the way PyTorch's own ``powerSGD_hook`` is::

    import compressedcoll.torch as cct
    state = cct.CompressionState(process_group=None, codec="nat", algo="auto")
    ddp_model.register_comm_hook(state, cct.compressed_allreduce_hook)

The state makes its communicator from the process group when it is created (the
unique id travels in a broadcast over the group), so under ``torchrun`` nothing
else is needed. Buckets are averaged like the default hook. Each state runs its
collectives on one worker thread in the order the hooks were called (the same
order on every rank), so backward goes on while a bucket is on the wire.

Works with torch 1.13 and 2.x (only API present in both).
"""

import queue
import threading
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from ._comm import Comm, Residual, get_unique_id

__all__ = ["CompressionState", "compressed_allreduce_hook"]


_COMPRESSIBLE_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_STATE_DICT_VERSION = 1


def _global_rank(group: Any, group_rank: int) -> int:
    if group is None or group is dist.group.WORLD:
        return group_rank
    get_global_rank = getattr(dist, "get_global_rank", None) or dist.distributed_c10d._get_global_rank
    return get_global_rank(group, group_rank)


class _BucketResidual:
    """A bucket's error-feedback residual and the parameters it covers, in buffer order."""

    __slots__ = ("residual", "layout")

    def __init__(self, residual: Residual, layout: Tuple[Tuple[str, int], ...]) -> None:
        self.residual = residual
        self.layout = layout  # ((parameter name, numel), ...)


class CompressionState:
    """State of :func:`compressed_allreduce_hook` for one DDP model.

    Args:
        process_group: the group DDP reduces over (``None``: the default group). Every rank
            of it must create the state, in the same order as its other states.
        codec: the codec spec for float buckets (``"nat"``, ``"dither_nat"``,
            ``"topk:ratio=0.01+nat"``, ``"none"`` for exact, ...).
        algo: ``"auto"``, ``"ring"``, ``"direct"`` or ``"tree"``.
        error_feedback: keep a residual per bucket (EF-SGD): what a bucket's encode lost is
            added to its next step's gradient. Needed by biased codecs (top-k, ``nat_det``).
        min_compress_bytes: buckets smaller than this go exact (codec ``"none"``): on small
            calls the codec costs more time than the bytes it saves.
        seed: the codec's random key (``None``: random, agreed at init).
        timeout: seconds for every wait of a collective.
        **comm_options: more :class:`compressedcoll.Comm` options (``transport``,
            ``chunk_bytes``, ``socket_ifname``, ``debug``, ...).
    """

    def __init__(
        self,
        process_group: Optional[Any] = None,
        codec: str = "nat",
        algo: str = "auto",
        error_feedback: bool = False,
        min_compress_bytes: int = 64 * 1024,
        seed: Optional[int] = None,
        timeout: Optional[float] = None,
        **comm_options: Any,
    ) -> None:
        if not dist.is_initialized():
            raise RuntimeError("CompressionState: torch.distributed is not initialized (init_process_group first)")
        if min_compress_bytes < 0:
            raise ValueError(f"CompressionState: min_compress_bytes must be >= 0, got {min_compress_bytes}")
        self.process_group = process_group
        self.codec = codec
        self.algo = algo
        self.error_feedback = bool(error_feedback)
        self.min_compress_bytes = int(min_compress_bytes)
        self.rank = dist.get_rank(process_group)
        self.world_size = dist.get_world_size(process_group)

        # Rank 0 of the group starts the bootstrap store; the id reaches the others in a
        # broadcast over the group itself, so no port is chosen by the user.
        id_holder: List[Optional[bytes]] = [get_unique_id() if self.rank == 0 else None]
        dist.broadcast_object_list(id_holder, src=_global_rank(process_group, 0), group=process_group)
        unique_id = id_holder[0]
        assert unique_id is not None
        self.comm = Comm(self.rank, self.world_size, unique_id=unique_id, codec=codec, algo=algo, seed=seed,
                         timeout=timeout, **comm_options)

        # Error feedback keeps one residual per bucket, but its values belong to parameters:
        # DDP rebuilds its buckets after the first iteration (parameters in the order their
        # gradients became ready), and a resumed job starts again from the first layout.
        # A parameter's name is where it sat when first seen, "bucket<i>.param<j>" of the
        # first layout, the same in every process that builds the same model.
        self._param_names: Dict[int, str] = {}  # data_ptr -> name; the hook thread's
        # The rest is touched only on the worker thread (or with the queue drained).
        self._residuals: Dict[int, _BucketResidual] = {}
        # Residual values per parameter name, until a bucket that holds the parameter
        # claims them: from a bucket whose layout changed, or from load_state_dict.
        self._orphans: Dict[str, torch.Tensor] = {}
        self.calls = 0
        self.exact_calls = 0

        self._queue: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self._worker = threading.Thread(target=self._run, name=f"compressedcoll-hook-rank{self.rank}", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                future, tensor, spec, layout, stream = item
                try:
                    residual = self._residual_for(tensor, layout) if layout is not None else None
                    if stream is not None:
                        with torch.cuda.stream(stream):
                            self.comm.allreduce(tensor, op="avg", codec=spec, residual=residual)
                            future.set_result(tensor)
                    else:
                        self.comm.allreduce(tensor, op="avg", codec=spec, residual=residual)
                        future.set_result(tensor)
                except BaseException as error:  # noqa: BLE001 - handed to DDP through the future
                    future.set_exception(error)
            finally:
                self._queue.task_done()

    def submit(self, bucket: Any) -> "torch.futures.Future[torch.Tensor]":
        """Queues the bucket's average; the future completes with the bucket's buffer."""
        tensor = bucket.buffer()
        future: "torch.futures.Future[torch.Tensor]" = (
            torch.futures.Future(devices=[tensor.device]) if tensor.is_cuda else torch.futures.Future())
        compressible = tensor.dtype in _COMPRESSIBLE_DTYPES
        exact = not compressible or tensor.numel() * tensor.element_size() < self.min_compress_bytes
        spec = "none" if exact else None
        layout = self._layout(bucket) if self.error_feedback else None
        if exact:
            layout = None
        stream = torch.cuda.current_stream(tensor.device) if tensor.is_cuda else None
        self.calls += 1
        self.exact_calls += int(exact)
        self._queue.put((future, tensor, spec, layout, stream))
        return future

    # ---------------------------------------------------------- error feedback

    def _layout(self, bucket: Any) -> Tuple[int, Tuple[Tuple[str, int], ...]]:
        """(bucket index, ((parameter name, numel), ...)); names every parameter of every
        bucket when first seen, exact buckets included, so names follow the first layout."""
        index = bucket.index()
        names = self._param_names
        layout = []
        for position, param in enumerate(bucket.parameters()):
            key = param.data_ptr()
            name = names.get(key)
            if name is None:
                name = names[key] = f"bucket{index}.param{position}"
            layout.append((name, param.numel()))
        return index, tuple(layout)

    def _residual_for(self, tensor: torch.Tensor, layout: tuple) -> Residual:
        index, params = layout
        dtype = _COMPRESSIBLE_DTYPES[tensor.dtype]
        entry = self._residuals.get(index)
        if entry is not None and entry.layout == params and entry.residual.dtype == dtype:
            return entry.residual
        # A new bucket, or one whose parameters changed: the residuals of buckets that held
        # any of its parameters are split per parameter, and this bucket's is assembled
        # from those pieces (zero for a parameter without one).
        names = {name for name, _ in params}
        for old_index, old in list(self._residuals.items()):
            if old_index == index or any(name in names for name, _ in old.layout):
                self._dissolve(old)
                del self._residuals[old_index]
        values = torch.zeros(tensor.numel(), dtype=torch.float32)
        offset = 0
        for name, numel in params:
            carried = self._orphans.pop(name, None)
            if carried is not None and carried.numel() == numel and offset + numel <= values.numel():
                values[offset:offset + numel].copy_(carried)
            elif carried is not None:
                warnings.warn(f"compressedcoll: the residual of parameter {name} has {carried.numel()} values, "
                              f"the parameter {numel}: it starts from zero", RuntimeWarning)
            offset += numel
        residual = Residual(tensor.numel(), dtype)
        if values.numel() != 0:
            residual.copy_from(values)
        self._residuals[index] = _BucketResidual(residual, params)
        return residual

    def _split(self, entry: _BucketResidual) -> Dict[str, torch.Tensor]:
        values = torch.empty(entry.residual.count, dtype=torch.float32)
        if values.numel() != 0:
            entry.residual.copy_to(values)
        if sum(numel for _, numel in entry.layout) != values.numel():
            # The buffer is not the parameters end to end: nothing to attribute.
            warnings.warn("compressedcoll: a bucket's buffer does not hold its parameters end to end; its "
                          "residual is dropped", RuntimeWarning)
            return {}
        pieces = {}
        offset = 0
        for name, numel in entry.layout:
            pieces[name] = values[offset:offset + numel].clone()
            offset += numel
        return pieces

    def _dissolve(self, entry: _BucketResidual) -> None:
        self._orphans.update(self._split(entry))

    # ------------------------------------------------------------- checkpoints

    def state_dict(self) -> Dict[str, Any]:
        """The error-feedback residuals per parameter (and the settings), for ``torch.save``."""
        self._queue.join()
        residuals: Dict[str, torch.Tensor] = {name: values.clone() for name, values in self._orphans.items()}
        for entry in self._residuals.values():
            residuals.update(self._split(entry))
        return {
            "version": _STATE_DICT_VERSION,
            "codec": self.codec,
            "error_feedback": self.error_feedback,
            "min_compress_bytes": self.min_compress_bytes,
            "residuals": residuals,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores the residuals saved by :meth:`state_dict` (of a job with the same model and
        bucket size); each parameter's is claimed by the bucket that holds it when it first runs."""
        if state.get("version") != _STATE_DICT_VERSION:
            raise ValueError(f"CompressionState.load_state_dict: unknown version {state.get('version')!r}")
        if state.get("codec") != self.codec:
            warnings.warn(f"compressedcoll: loading residuals saved with codec {state.get('codec')!r} into a "
                          f"state with codec {self.codec!r}", RuntimeWarning)
        self._queue.join()
        self._residuals.clear()
        self._orphans = {str(name): values.to(torch.float32).reshape(-1).clone()
                         for name, values in state["residuals"].items()}

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Stops the worker thread and frees the communicator."""
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()
        self.comm.close()

    def __del__(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None and worker.is_alive():
            self._queue.put(None)

    def __getstate__(self) -> Dict[str, Any]:
        raise TypeError("CompressionState holds a communicator and a thread: save state_dict() instead")


# DDP checks the annotations against these very objects (strings are refused).
def compressed_allreduce_hook(state: CompressionState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: averages the bucket over the state's process group with
    compressed allreduce (exact for small and non-float buckets). Register with
    ``ddp_model.register_comm_hook(state, compressed_allreduce_hook)``."""
    return state.submit(bucket)
