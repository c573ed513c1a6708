"""The DDP communication hook with 4 ranks as processes (gloo process group, CPU)."""

import pytest
import torch

from conftest import last_json, run_ranks

NRANKS = 4


@pytest.mark.parametrize("codec,algo,ef", [("nat", "ring", False), ("nat", "auto", True),
                                           ("topk:ratio=0.1+nat", "auto", True)])
def test_training_with_the_hook_keeps_every_rank_bit_identical(codec, algo, ef):
    results = [last_json(p) for p in run_ranks(NRANKS, "ddp_hook", {
        "codec": codec, "algo": algo, "ef": ef, "steps": 24, "bucket_cap_mb": 0.01})]
    digests = {result["digest"] for result in results}
    assert len(digests) == 1, "ranks' parameters differ"
    losses = [sum(result["losses"][i] for result in results) for i in range(24)]
    assert sum(losses[-6:]) < 0.9 * sum(losses[:6]), losses  # it trains
    assert results[0]["calls"] > 12  # several buckets per step
    if ef:
        assert results[0]["residual_norm"] > 0


def test_small_buckets_go_exact():
    results = [last_json(p) for p in run_ranks(2, "ddp_hook", {
        "codec": "nat", "algo": "ring", "steps": 3, "bucket_cap_mb": 0.01, "min_compress_bytes": 1 << 30})]
    assert results[0]["exact_calls"] == results[0]["calls"] > 0
    assert results[0]["digest"] == results[1]["digest"]


def test_codec_none_through_the_hook_matches_the_default_reduction():
    results = [last_json(p) for p in run_ranks(NRANKS, "ddp_none_against_default", {"algo": "ring", "steps": 8})]
    for result in results:
        # Averaging rounds differently from the default hook's divide-then-sum, nothing more.
        assert result["max_difference"] <= 1e-5 * max(1.0, result["max_magnitude"]), result
        for default, hooked in zip(result["default_losses"], result["hooked_losses"]):
            assert abs(default - hooked) <= 1e-5 * max(1.0, abs(default))


def test_state_dict_round_trip_resumes_identically(tmp_path):
    # nat_det is deterministic, so a resumed job can repeat the uninterrupted one bit for
    # bit. The checkpoint is taken after DDP's bucket rebuild; both the resumed job and
    # the one that goes on start from the first bucket layout again (a compressed
    # reduction's rounding depends on where a value sits in its bucket).
    results = [last_json(p) for p in run_ranks(2, "ddp_resume", {
        "codec": "nat_det", "before": 4, "after": 4, "checkpoint": str(tmp_path / "checkpoint%d.pt")})]
    for result in results:
        # every parameter's residual; more than one bucket per step after the rebuild
        assert result["residual_params"] == 8 and result["calls"] > result["steps"]
        assert result["resumed"] == result["continued"]
        # Without the residuals the run differs: the test can see a lost state.
        assert result["resumed_without_residuals"] != result["continued"]
    assert results[0]["continued"] == results[1]["continued"]


class FakeBucket:
    """What the hook reads of a dist.GradBucket."""

    def __init__(self, index, params):
        self._index = index
        self._params = params
        self._buffer = torch.zeros(sum(p.numel() for p in params))

    def index(self):
        return self._index

    def parameters(self):
        return self._params

    def buffer(self):
        return self._buffer


def test_residuals_follow_their_parameters_into_rebuilt_buckets():
    import torch.distributed as dist

    import compressedcoll.torch as cct
    from conftest import free_port

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        state = cct.CompressionState(codec="nat_det", algo="ring", error_feedback=True, min_compress_bytes=0)
        params = [torch.zeros(n) for n in (3, 5, 7, 11)]
        first = [FakeBucket(0, params[:2]), FakeBucket(1, params[2:])]
        known = {}
        for bucket in first:
            index, layout = state._layout(bucket)
            residual = state._residual_for(bucket.buffer(), (index, layout))
            values = torch.arange(residual.count, dtype=torch.float32) + 100 * index
            residual.copy_from(values)
            offset = 0
            for name, numel in layout:
                known[name] = values[offset:offset + numel].clone()
                offset += numel
        assert sorted(known) == ["bucket0.param0", "bucket0.param1", "bucket1.param0", "bucket1.param1"]

        # DDP's rebuild: other buckets, other orders, one parameter moved across.
        rebuilt = [FakeBucket(0, [params[3], params[2], params[0]]), FakeBucket(1, [params[1]])]
        for bucket in rebuilt:
            index, layout = state._layout(bucket)
            residual = state._residual_for(bucket.buffer(), (index, layout))
            values = torch.empty(residual.count)
            residual.copy_to(values)
            assert torch.equal(values, torch.cat([known[name] for name, _ in layout]))
        saved = state.state_dict()["residuals"]
        assert sorted(saved) == sorted(known)
        assert all(torch.equal(saved[name], known[name]) for name in known)
        state.close()
    finally:
        dist.destroy_process_group()
