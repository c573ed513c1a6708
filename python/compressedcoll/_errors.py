"""One exception class per ``cc_result_t``, each carrying the library's message.

Every class derives from :class:`Error` and from the built-in exception a Python
caller would catch for that kind of failure, so ``except ValueError`` catches a
bad argument and ``except TimeoutError`` a timed-out collective.
"""

import builtins
from typing import Dict, Type

from . import _core

__all__ = [
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
]


class Error(Exception):
    """Base of every compressedcoll error; ``result`` is the ``cc_result_t`` code."""

    result: int = -1
    result_name: str = ""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(Error, ValueError):
    """CC_INVALID_ARGUMENT: a bad argument, spec, config value or environment variable."""

    result, result_name = 1, "CC_INVALID_ARGUMENT"


class InvalidUsageError(Error, RuntimeError):
    """CC_INVALID_USAGE: a call in the wrong state (closed or aborted communicator, ranks that
    disagree on the job, a group_end without group_start)."""

    result, result_name = 2, "CC_INVALID_USAGE"


class SystemCallError(Error, OSError):
    """CC_SYSTEM_ERROR: a socket, memory or device call failed."""

    result, result_name = 3, "CC_SYSTEM_ERROR"


class RemoteError(Error, ConnectionError):
    """CC_REMOTE_ERROR: a peer failed, disconnected, disagreed on the call or sent bad data."""

    result, result_name = 4, "CC_REMOTE_ERROR"


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - the asyncio convention
    """CC_TIMEOUT: a wait ran past the communicator's timeout."""

    result, result_name = 5, "CC_TIMEOUT"


class UnsupportedError(Error, NotImplementedError):
    """CC_UNSUPPORTED: the build or the algorithm cannot do what was asked."""

    result, result_name = 6, "CC_UNSUPPORTED"


class CudaError(Error, RuntimeError):
    """CC_CUDA_ERROR: a CUDA runtime or NCCL call failed."""

    result, result_name = 7, "CC_CUDA_ERROR"


class InternalError(Error, RuntimeError):
    """CC_INTERNAL_ERROR: a bug in the library; please report it with the message."""

    result, result_name = 8, "CC_INTERNAL_ERROR"


class InProgressError(Error, RuntimeError):
    """CC_IN_PROGRESS: the operation has not finished."""

    result, result_name = 9, "CC_IN_PROGRESS"


ERROR_CLASSES: Dict[int, Type[Error]] = {
    cls.result: cls
    for cls in (
        InvalidArgumentError,
        InvalidUsageError,
        SystemCallError,
        RemoteError,
        TimeoutError,
        UnsupportedError,
        CudaError,
        InternalError,
        InProgressError,
    )
}

_core._register_error_classes(ERROR_CLASSES)
