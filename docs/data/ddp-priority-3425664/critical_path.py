"""Medians over the timed steps of a `perf/ddp_bench.py --timeline` directory, scheme nat-switch:
when the last rank handed each bucket to the hook, when call 0 ended and call 1 started on
the last rank, and when the last rank's optimizer step ended. Times are ms from the first
rank's step start (all ranks log on one clock).

    python3 critical_path.py tl-base-1 tl-wneg-1 ...
"""
import json
import statistics
import sys


def steps_of(events):
    steps = []
    for name, t, index in events:
        if name == "step":
            steps.append({"step": t, "submit": {}, "call_start": [], "call_end": []})
        elif name == "submit":
            steps[-1]["submit"][index] = t
        elif name in ("call_start", "call_end"):
            steps[-1][name].append(t)
        else:
            steps[-1][name] = t
    return steps


def medians(directory, ranks=4, scheme="nat-switch"):
    per_rank = [steps_of(json.load(open(f"{directory}/rank{r}.json"))[scheme]) for r in range(ranks)]
    rows = []
    for k in range(min(len(steps) for steps in per_rank)):
        start = min(steps[k]["step"] for steps in per_rank)

        def last(pick):
            return max(pick(steps[k]) for steps in per_rank) / 1e6 - start / 1e6

        rows.append([last(lambda s, b=b: s["submit"][b]) for b in (0, 1, 2)] + [
            last(lambda s: s["call_end"][0]),
            last(lambda s: s["call_start"][1]),
            last(lambda s: s["optimizer_end"]),
        ])
    return [statistics.median(column) for column in zip(*rows)]


for directory in sys.argv[1:]:
    print(directory, "last submit b0 %.0f b1 %.0f b2 %.0f | call0 end %.0f call1 start %.0f | step end %.0f"
          % tuple(medians(directory)))
