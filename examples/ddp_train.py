"""Data-parallel training with compressed gradients: a small byte-level transformer
language model learns the Python standard library's sources under DDP, its gradient
buckets averaged by compressedcoll's communication hook.

    python3 -m torch.distributed.run --nproc_per_node 4 examples/ddp_train.py --codec nat

Every rank reads its own batches; DDP averages the gradients. ``--hook`` swaps in
PyTorch's own reductions for comparison (``default``: fp32 allreduce, ``fp16``:
``fp16_compress_hook``, ``powersgd``: ``powerSGD_hook``). The model, data and step are
importable (``perf/convergence`` trains the same model).
"""

import argparse
import json
import math
import os
import sysconfig
import time
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

VOCAB = 256  # bytes


# --------------------------------------------------------------------- data


def load_corpus(max_bytes: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) byte tensors from the standard library's top-level modules; every
    tenth file is validation. The same on every rank and machine with the same Python."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"))
    if not files:
        raise RuntimeError(f"no Python sources under {stdlib} to train on")
    train: List[bytes] = []
    validation: List[bytes] = []
    for number, path in enumerate(files):
        (validation if number % 10 == 9 else train).append(path.read_bytes())
    train_bytes = b"".join(train)
    validation_bytes = b"".join(validation)
    if max_bytes is not None:
        train_bytes = train_bytes[:max_bytes]
    to_tensor = lambda data: torch.frombuffer(bytearray(data), dtype=torch.uint8).long()  # noqa: E731
    return to_tensor(train_bytes), to_tensor(validation_bytes)


def sample_batch(data: torch.Tensor, batch: int, context: int, generator: torch.Generator
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random windows of `context` bytes and the bytes that follow each position."""
    starts = torch.randint(0, data.numel() - context - 1, (batch,), generator=generator)
    windows = torch.stack([data[start:start + context + 1] for start in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


# -------------------------------------------------------------------- model


class ByteTransformer(torch.nn.Module):
    """A pre-norm decoder-only transformer over bytes."""

    def __init__(self, width: int = 128, layers: int = 2, heads: int = 4, context: int = 64) -> None:
        super().__init__()
        self.context = context
        self.embed = torch.nn.Embedding(VOCAB, width)
        self.position = torch.nn.Parameter(torch.zeros(context, width))
        block = torch.nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                                 batch_first=True, norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(block, layers)
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, VOCAB)
        mask = torch.triu(torch.full((context, context), float("-inf")), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)
        torch.nn.init.normal_(self.position, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        hidden = self.embed(tokens) + self.position[:length]
        hidden = self.blocks(hidden, mask=self.causal_mask[:length, :length])
        return self.head(self.norm(hidden))


def loss_of(model: torch.nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(tokens)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: torch.Tensor, batches: int, batch: int, context: int,
             shard: Optional[Tuple[int, int]] = None) -> float:
    """Mean loss (nats per byte) over fixed windows of `data`: the same windows every time.
    With `shard=(rank, world)` each rank scores every world-th batch and the sum is
    allreduced over the default group: the same mean (to float rounding), a world-th of
    the work per rank. Every rank must call it then."""
    generator = torch.Generator().manual_seed(2024)
    model.eval()
    total = 0.0
    for number in range(batches):
        windows = sample_batch(data, batch, context, generator)
        if shard is None or number % shard[1] == shard[0]:
            total += loss_of(model, *windows).item()
    model.train()
    if shard is not None:
        summed = _EVALUATION_SUM
        summed.fill_(total)
        dist.all_reduce(summed)
        total = summed.item()
    return total / batches


# The tensor `evaluate` allreduces lives as long as the module: torch 1.13's gloo worker drops
# its reference after the collective, and were that the last one, it would need the GIL to
# free the tensor's Python object; at exit, with the main thread holding the GIL while it
# destroys the process group and joins that worker, the process would hang.
_EVALUATION_SUM = torch.zeros(1, dtype=torch.float64)


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """The learning rate of `step` (1-based): linear warmup over --warmup-steps, then
    constant or a cosine decay from --lr to --lr * --min-lr-ratio at the last step."""
    if step <= args.warmup_steps:
        return args.lr * step / args.warmup_steps
    if args.lr_schedule == "constant":
        return args.lr
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    floor = args.lr * args.min_lr_ratio
    return floor + (args.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------- hooks


def wrap(model: torch.nn.Module, args: argparse.Namespace) -> DDP:
    """DDP around the model, in one bucket for PowerSGD."""
    if args.hook != "powersgd":
        return DDP(model, bucket_cap_mb=args.bucket_cap_mb)
    # PowerSGD's callbacks issue collectives from gloo's threads: with two buckets in flight
    # the ranks' orders differ and the job hangs. After its first iteration DDP splits off a
    # first bucket of _DEFAULT_FIRST_BUCKET_BYTES whatever bucket_cap_mb says.
    first_bucket = dist._DEFAULT_FIRST_BUCKET_BYTES
    dist._DEFAULT_FIRST_BUCKET_BYTES = 1 << 40
    try:
        return DDP(model, bucket_cap_mb=1 << 20)
    finally:
        dist._DEFAULT_FIRST_BUCKET_BYTES = first_bucket


def register_hook(ddp: DDP, args: argparse.Namespace) -> Optional[object]:
    """Registers the hook `args.hook` asks for; returns its state (None for the default)."""
    if args.hook == "compressedcoll":
        import compressedcoll.torch as cct

        state = cct.CompressionState(codec=args.codec, algo=args.algo, error_feedback=args.ef,
                                     min_compress_bytes=args.min_compress_bytes, seed=args.comm_seed)
        ddp.register_comm_hook(state, cct.compressed_allreduce_hook)
        return state
    if args.hook == "fp16":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        return None
    if args.hook == "powersgd":
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook

        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=args.powersgd_rank,
                                            start_powerSGD_iter=2, use_error_feedback=True, warm_start=True,
                                            random_seed=args.seed)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
        return state
    return None


# ---------------------------------------------------------------------- main


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--hook", choices=["compressedcoll", "default", "fp16", "powersgd"],
                        default="compressedcoll", help="how DDP reduces the gradients")
    parser.add_argument("--codec", default="nat", help="compressedcoll codec spec (nat, dither_nat, none, ...)")
    parser.add_argument("--algo", default="auto", help="compressedcoll algorithm (auto, ring, direct, tree)")
    parser.add_argument("--ef", action="store_true", help="error feedback (a residual per bucket)")
    parser.add_argument("--min-compress-bytes", type=int, default=64 * 1024,
                        help="buckets smaller than this go exact")
    parser.add_argument("--powersgd-rank", type=int, default=1, help="PowerSGD's matrix approximation rank")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16, help="sequences per rank and step")
    parser.add_argument("--context", type=int, default=64, help="bytes per sequence")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                        help="after the warmup: constant, or cosine decay to lr * min-lr-ratio at the last step")
    parser.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warmup")
    parser.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine's final lr over --lr")
    parser.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP's bucket size")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and data order")
    parser.add_argument("--comm-seed", type=int, default=None, help="the codec's random key (default: random)")
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--shard-eval", action="store_true",
                        help="ranks share the eval batches (allreduced) instead of each scoring all of them")
    parser.add_argument("--json", default=None, help="rank 0 writes the losses and timings here")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(args.seed)
    model = ByteTransformer(args.width, args.layers, context=args.context)
    ddp = wrap(model, args)
    state = register_hook(ddp, args)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=args.lr)
    train, validation = load_corpus()
    generator = torch.Generator().manual_seed(1_000_003 * args.seed + rank)
    parameters = sum(p.numel() for p in model.parameters())
    if rank == 0:
        described = args.hook if args.hook != "compressedcoll" else (
            f"compressedcoll codec={args.codec} algo={args.algo}{' +EF' if args.ef else ''}")
        print(f"{world} ranks, {parameters / 1e6:.2f} M parameters, {train.numel() / 1e6:.1f} MB of text; "
              f"hook: {described}", flush=True)

    history = []
    training_seconds = 0.0  # evaluation is left out
    for step in range(1, args.steps + 1):
        tick = time.perf_counter()
        tokens, targets = sample_batch(train, args.batch, args.context, generator)
        lr = learning_rate(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(ddp, tokens, targets)
        loss.backward()
        optimizer.step()
        training_seconds += time.perf_counter() - tick
        if step % args.log_every == 0 or step == args.steps:
            validation_loss = evaluate(model, validation, args.eval_batches, args.batch, args.context,
                                       shard=(rank, world) if args.shard_eval else None)
            history.append({"step": step, "train_loss": loss.item(), "validation_loss": validation_loss,
                            "seconds": training_seconds, "lr": lr})
            if rank == 0:
                print(f"step {step:5d}  train {loss.item():.3f}  validation {validation_loss:.3f} nats/byte  "
                      f"({training_seconds / step * 1000:.0f} ms/step)", flush=True)
    if rank == 0:
        final = history[-1]
        print(f"final validation loss {final['validation_loss']:.4f} nats/byte "
              f"({final['validation_loss'] / math.log(2):.3f} bits/byte)", flush=True)
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"args": vars(args), "world_size": world, "parameters": parameters,
                           "history": history}, out, indent=1)
    if state is not None and hasattr(state, "close"):
        state.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
