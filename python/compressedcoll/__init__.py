"""compressedcoll: compressed allreduce for data-parallel training.

A binding of libcompressedcoll's C API. Ranks reduce gradients as 9-bit
natural-compression codes (or another codec) instead of 32-bit floats, with ring,
direct or tree algorithms, and every rank ends with the same bits::

    import compressedcoll as cc
    comm = cc.Comm(rank, world_size, comm_id="10.0.0.1:29600", codec="nat")
    comm.allreduce(grads, op="avg")          # numpy array or torch tensor, in place

For PyTorch DDP, :mod:`compressedcoll.torch` has a communication hook.
"""

from . import _core
from ._comm import DATATYPES, OPS, Comm, Residual, get_unique_id, get_unique_id_from_address, group
from ._errors import (
    CudaError,
    Error,
    InProgressError,
    InternalError,
    InvalidArgumentError,
    InvalidUsageError,
    RemoteError,
    SystemCallError,
    TimeoutError,
    UnsupportedError,
)

__version__: str = _core.__version__
#: True when the library was built with CUDA (device tensors go over NCCL).
HAVE_CUDA: bool = _core.HAVE_CUDA

__all__ = [
    "Comm",
    "Residual",
    "group",
    "get_unique_id",
    "get_unique_id_from_address",
    "library_version",
    "DATATYPES",
    "OPS",
    "HAVE_CUDA",
    "Error",
    "InvalidArgumentError",
    "InvalidUsageError",
    "SystemCallError",
    "RemoteError",
    "TimeoutError",
    "UnsupportedError",
    "CudaError",
    "InternalError",
    "InProgressError",
    "__version__",
]


def library_version() -> int:
    """``cc_get_version``: major * 10000 + minor * 100 + patch of the linked library."""
    return _core.library_version()
