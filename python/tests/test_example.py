"""examples/ddp_train.py under torchrun, as the README runs it (fewer steps)."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_example_trains_under_torchrun(tmp_path):
    # The README's command; --redirects 1 --tee 1 because torch 1.13's launcher maps its
    # default "0" to no stream under Python 3.11 and fails before starting a worker.
    command = [sys.executable, "-m", "torch.distributed.run", "--redirects", "1", "--tee", "1",
               "--nproc_per_node", "2", "--master_port", str(free_port()),
               str(ROOT / "examples" / "ddp_train.py"), "--codec", "nat",
               "--steps", "6", "--log-every", "3", "--eval-batches", "1", "--json", str(tmp_path / "run.json")]
    result = subprocess.run(command, env=dict(os.environ, CC_SOCKET_IFNAME="lo"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "hook: compressedcoll codec=nat algo=auto" in result.stdout
    assert "final validation loss" in result.stdout
    import json

    history = json.loads((tmp_path / "run.json").read_text())["history"]
    assert [entry["step"] for entry in history] == [3, 6]
