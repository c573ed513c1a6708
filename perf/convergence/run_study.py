#!/usr/bin/env python3
"""The convergence study: the example's byte-level transformer trained under DDP with
each gradient reduction, several seeds, one command.

    build/venv/bin/python perf/convergence/run_study.py            # about an hour on 2 cores
    build/venv/bin/python perf/convergence/plot.py                 # plots and the table

Every run is `examples/ddp_train.py` under torch.distributed.run with 4 ranks on this
machine; its validation-loss history lands in --out as <config>-seed<s>.json, and a run
whose file exists is skipped, so an interrupted study resumes. --scale N multiplies the
steps (and --width / --layers / --batch make the model and batch larger) for a longer study.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ddp_train.py"
LOCK = Path("/tmp/cc-bench.lock")  # held while timing benchmarks run on this machine

# name -> the example's options. The control is a compressor known to hurt: top-k at 1%
# without error feedback drops 99% of every gradient for good.
CONFIGS = {
    "fp32": ["--hook", "default"],
    "fp16": ["--hook", "fp16"],
    "powersgd": ["--hook", "powersgd", "--powersgd-rank", "1"],
    "nat": ["--codec", "nat"],
    "nat+ef": ["--codec", "nat", "--ef"],
    "dither_nat": ["--codec", "dither_nat"],
    "topk1%+ef": ["--codec", "topk:ratio=0.01+nat", "--ef"],
    "control:topk1%": ["--codec", "topk:ratio=0.01+nat"],
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "data" / "convergence"))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="which of: " + ", ".join(CONFIGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies --steps")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="sequences per rank and step")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--log-every", type=int, default=25, help="steps between validation losses")
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--python-path", default=str(ROOT / "build" / "python"),
                        help="where compressedcoll is, when it is not installed")
    return parser.parse_args(argv)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_quiet_machine():
    announced = False
    while LOCK.exists():
        if not announced:
            print(f"run_study: waiting while {LOCK} exists (a benchmark is timing)", flush=True)
            announced = True
        time.sleep(30)


def run(name, seed, args, out):
    target = out / f"{name}-seed{seed}.json"
    if target.exists():
        return "skipped (done)"
    wait_for_quiet_machine()
    steps = max(1, int(round(args.steps * args.scale)))
    command = [sys.executable, "-m", "torch.distributed.run", "--redirects", "1", "--tee", "1",
               "--nproc_per_node", str(args.ranks), "--master_port", str(free_port()), str(EXAMPLE),
               "--steps", str(steps), "--seed", str(seed), "--comm-seed", str(1000 + seed),
               "--width", str(args.width), "--layers", str(args.layers), "--batch", str(args.batch),
               "--context", str(args.context), "--lr", str(args.lr), "--log-every", str(args.log_every),
               "--eval-batches", str(args.eval_batches), "--json", str(target) + ".partial"] + CONFIGS[name]
    env = dict(os.environ, CC_SOCKET_IFNAME=os.environ.get("CC_SOCKET_IFNAME", "lo"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [args.python_path, os.environ.get("PYTHONPATH")])))
    env.pop("CC_COMM_ID", None)
    started = time.time()
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        (out / f"{name}-seed{seed}.log").write_text(result.stdout)
        raise SystemExit(f"run_study: {name} seed {seed} failed (exit {result.returncode}); "
                         f"output in {out / f'{name}-seed{seed}.log'}")
    record = json.loads(Path(str(target) + ".partial").read_text())
    record.update({"config": name, "config_options": CONFIGS[name], "wall_seconds": time.time() - started})
    target.write_text(json.dumps(record, indent=1))
    Path(str(target) + ".partial").unlink()
    final = record["history"][-1]["validation_loss"]
    return f"validation {final:.4f} nats/byte in {record['wall_seconds']:.0f} s"


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [name for name in args.configs.split(",") if name]
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        raise SystemExit(f"run_study: unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    started = time.time()
    # Seeds outermost: a study cut short still has every config for its first seeds.
    for seed in seeds:
        for name in names:
            print(f"run_study: {name} seed {seed}: {run(name, seed, args, out)}", flush=True)
    print(f"run_study: done in {(time.time() - started) / 60:.1f} min; results in {out}", flush=True)


if __name__ == "__main__":
    main()
