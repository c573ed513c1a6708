"""Helpers shared by the Python tests: ranks as threads, ranks as processes, free ports."""

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
# The job secret of every rank that meets through comm_id / CC_COMM_ID.
TEST_SECRET = "python-tests-secret-0123"
WORKERS = HERE / "workers.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_threads(nranks: int, target: Callable[[int], Any], timeout: float = 120.0) -> List[Any]:
    """Runs target(rank) on nranks threads; returns the results in rank order, or raises
    the first rank's exception."""
    results: List[Any] = [None] * nranks
    errors: List[Optional[BaseException]] = [None] * nranks

    def run(rank: int) -> None:
        try:
            results[rank] = target(rank)
        except BaseException as error:  # noqa: BLE001 - re-raised below
            errors[rank] = error

    threads = [threading.Thread(target=run, args=(rank,), daemon=True) for rank in range(nranks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        if thread.is_alive():
            pytest.fail(f"a rank thread did not finish within {timeout} s")
    for error in errors:
        if error is not None:
            raise error
    return results


def run_ranks(nranks: int, worker: str, args: Dict[str, Any], timeout: float = 300.0,
              env: Optional[Dict[str, str]] = None, expect_success: bool = True,
              command: Optional[List[str]] = None) -> List[subprocess.CompletedProcess]:
    """Runs `workers.py WORKER ARGS_JSON` (or `command`) as nranks processes with torchrun's
    rank variables and a fresh MASTER_PORT; returns the completed processes in rank order."""
    base = dict(os.environ)
    base.update({"WORLD_SIZE": str(nranks), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                 "CC_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "CC_COMM_SECRET": TEST_SECRET})
    if env:
        base.update(env)
    processes = []
    for rank in range(nranks):
        rank_env = dict(base, RANK=str(rank), LOCAL_RANK=str(rank))
        argv = command or [sys.executable, str(WORKERS), worker, json.dumps(args)]
        processes.append(subprocess.Popen(argv, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    completed = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout)
            completed.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        outputs = [process.communicate() for process in processes]
        pytest.fail(f"{worker}: ranks did not finish within {timeout} s; output:\n" +
                    "\n".join(f"rank {rank}: {out}\n{err}" for rank, (out, err) in enumerate(outputs)))
    if expect_success:
        for rank, process in enumerate(completed):
            assert process.returncode == 0, (
                f"{worker} rank {rank} exited {process.returncode}:\n{process.stdout}\n{process.stderr}")
    return completed


def last_json(process: subprocess.CompletedProcess) -> Any:
    """The last line of a worker's stdout, parsed as JSON (its report)."""
    lines = [line for line in process.stdout.splitlines() if line.strip()]
    assert lines, f"no output:\n{process.stderr}"
    return json.loads(lines[-1])
