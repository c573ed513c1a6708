"""Rank processes of the multi-process Python tests.

    python workers.py WORKER ARGS_JSON

Each rank reads RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT like a torchrun child and
prints its report as one JSON line last.
"""

import hashlib
import json
import os
import sys
import time

import numpy as np


def rank_and_size():
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def report(value):
    print(json.dumps(value), flush=True)


# ------------------------------------------------------------------ binding


def allreduce_file(args):
    """One allreduce of the values in args['input'] % rank, written to args['output'] % rank."""
    import compressedcoll as cc

    rank, world = rank_and_size()
    dtype = args["dtype"]
    values = np.fromfile(args["input"] % rank, dtype=np.uint8)
    import torch

    if dtype == "bfloat16":
        buffer = torch.frombuffer(bytearray(values.tobytes()), dtype=torch.bfloat16)
    else:
        buffer = values.view(dtype).copy()
    comm = cc.Comm(rank, world, comm_id=args["comm_id"], seed=args["seed"], codec=args["codec"], algo=args["algo"],
                   transport="tcp")
    comm.allreduce(buffer, op=args["op"])
    comm.close()
    data = buffer.view(torch.int16).numpy().tobytes() if dtype == "bfloat16" else buffer.tobytes()
    with open(args["output"] % rank, "wb") as out:
        out.write(data)
    report({"rank": rank})


def mismatched_calls(args):
    """Ranks call with different counts (or dtypes): every rank must fail, none hang."""
    import compressedcoll as cc

    rank, world = rank_and_size()
    comm = cc.Comm(rank, world, comm_id=args["comm_id"], codec="nat", algo=args["algo"], transport="tcp",
                   timeout=args["timeout"])
    count = args["counts"][rank]
    dtype = args["dtypes"][rank]
    start = time.monotonic()
    try:
        comm.allreduce(np.ones(count, dtype=dtype))
        outcome = {"error": None}
    except cc.Error as error:
        outcome = {"error": type(error).__name__, "message": str(error)}
    outcome["elapsed"] = time.monotonic() - start
    comm.abort()
    report(outcome)


# --------------------------------------------------------------------- DDP


def _torch_setup(args):
    import torch
    import torch.distributed as dist

    rank, world = rank_and_size()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    return torch, dist, rank, world


# Wide enough for several DDP buckets: the first bucket takes 1 MiB, the others bucket_cap_mb.
WIDTH = 384


def _model(torch, seed, width=WIDTH, depth=3):
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    layers.append(torch.nn.Linear(width, 4))
    return torch.nn.Sequential(*layers)


def _batch(torch, rank, step, width=WIDTH, batch=16):
    """Inputs of this rank and step, and the targets of a fixed linear teacher."""
    teacher = torch.randn(width, 4, generator=torch.Generator().manual_seed(12345)) / width ** 0.5
    generator = torch.Generator().manual_seed(7919 * step + rank)
    inputs = torch.randn(batch, width, generator=generator)
    return inputs, inputs @ teacher


def _params_digest(model):
    digest = hashlib.sha256()
    for param in model.parameters():
        digest.update(param.detach().numpy().tobytes())
    return digest.hexdigest()


def _train(torch, ddp, rank, steps, first_step=0, lr=0.05):
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    losses = []
    for step in range(first_step, first_step + steps):
        inputs, targets = _batch(torch, rank, step)
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return optimizer, losses


def ddp_hook(args):
    """DDP with the hook: parameters' digest after training, losses, hook counters."""
    torch, dist, rank, world = _torch_setup(args)
    from torch.nn.parallel import DistributedDataParallel as DDP

    import compressedcoll.torch as cct

    model = _model(torch, seed=1)
    ddp = DDP(model, bucket_cap_mb=args.get("bucket_cap_mb", 25))
    state = cct.CompressionState(codec=args["codec"], algo=args["algo"], error_feedback=args.get("ef", False),
                                 min_compress_bytes=args.get("min_compress_bytes", 0), seed=args.get("seed"))
    ddp.register_comm_hook(state, cct.compressed_allreduce_hook)
    _, losses = _train(torch, ddp, rank, args["steps"])
    residual_norm = 0.0
    if state.error_feedback:
        for entry in state.state_dict()["residuals"].values():
            residual_norm += float(entry.double().pow(2).sum())
    report({"digest": _params_digest(model), "losses": losses, "calls": state.calls,
            "exact_calls": state.exact_calls, "buckets": sorted(state.state_dict()["residuals"]),
            "residual_norm": residual_norm})
    state.close()
    dist.destroy_process_group()


def ddp_none_against_default(args):
    """The same training with the default DDP reduction and with the hook at codec none."""
    torch, dist, rank, world = _torch_setup(args)
    from torch.nn.parallel import DistributedDataParallel as DDP

    import compressedcoll.torch as cct

    default_model = _model(torch, seed=3)
    hooked_model = _model(torch, seed=3)
    default_ddp = DDP(default_model, bucket_cap_mb=0.01)
    hooked_ddp = DDP(hooked_model, bucket_cap_mb=0.01)
    state = cct.CompressionState(codec="none", algo=args["algo"])
    hooked_ddp.register_comm_hook(state, cct.compressed_allreduce_hook)
    _, default_losses = _train(torch, default_ddp, rank, args["steps"])
    _, hooked_losses = _train(torch, hooked_ddp, rank, args["steps"])
    max_difference = max(float((a - b).abs().max()) for a, b in zip(default_model.parameters(),
                                                                     hooked_model.parameters()))
    max_magnitude = max(float(a.abs().max()) for a in default_model.parameters())
    report({"max_difference": max_difference, "max_magnitude": max_magnitude, "default_losses": default_losses,
            "hooked_losses": hooked_losses, "calls": state.calls})
    state.close()
    dist.destroy_process_group()


def ddp_resume(args):
    """Checkpoints (model, optimizer, hook state) after some steps. The job then goes on
    under a new DDP wrapper with the same hook state (the first bucket layout again, as
    in any restarted job); a fresh model, optimizer and hook state loaded from the
    checkpoint must then train to the same bits, and without the hook state to others."""
    torch, dist, rank, world = _torch_setup(args)
    from torch.nn.parallel import DistributedDataParallel as DDP

    import compressedcoll.torch as cct

    def wrap(model, state):
        ddp = DDP(model, bucket_cap_mb=0.01)
        ddp.register_comm_hook(state, cct.compressed_allreduce_hook)
        return ddp

    def new_state():
        return cct.CompressionState(codec=args["codec"], algo="ring", error_feedback=True, min_compress_bytes=0)

    def steps(ddp, optimizer, first, count):
        for step in range(first, first + count):
            inputs, targets = _batch(torch, rank, step)
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(ddp(inputs), targets).backward()
            optimizer.step()

    model = _model(torch, seed=5)
    state = new_state()
    ddp = wrap(model, state)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    steps(ddp, optimizer, 0, args["before"])
    path = args["checkpoint"] % rank
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "hook": state.state_dict()}, path)
    steps(wrap(model, state), optimizer, args["before"], args["after"])
    results = {"continued": _params_digest(model), "residual_params": len(state.state_dict()["residuals"]),
               "calls": state.calls, "steps": args["before"] + args["after"]}
    state.close()

    for load_hook in (True, False):
        model2 = _model(torch, seed=99)
        state2 = new_state()
        checkpoint = torch.load(path)
        model2.load_state_dict(checkpoint["model"])
        ddp2 = wrap(model2, state2)
        optimizer2 = torch.optim.SGD(ddp2.parameters(), lr=0.01, momentum=0.9)
        optimizer2.load_state_dict(checkpoint["optimizer"])
        if load_hook:
            state2.load_state_dict(checkpoint["hook"])
        steps(ddp2, optimizer2, args["before"], args["after"])
        results["resumed" if load_hook else "resumed_without_residuals"] = _params_digest(model2)
        state2.close()
    report(results)
    dist.destroy_process_group()


WORKERS = {
    "allreduce_file": allreduce_file,
    "mismatched_calls": mismatched_calls,
    "ddp_hook": ddp_hook,
    "ddp_none_against_default": ddp_none_against_default,
    "ddp_resume": ddp_resume,
}

if __name__ == "__main__":
    WORKERS[sys.argv[1]](json.loads(sys.argv[2]))
