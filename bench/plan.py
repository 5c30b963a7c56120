"""Size a run before running it: simulate the scheduler's event loop (env workers running episodes,
policy replicas answering batches the way nora_bench/batching.py does) from

- each env step's cost: `--step-ms` (and `--reset-ms`), or measured from an earlier run's records
  (`--records RUN`: their timings env_s/env_steps, reset_s, settle_s, and their episode lengths);
- the policy's per-batch latency curve: `--latency-ms A+B*b` (A ms per batch plus B ms per query in it);
- the chunk rule: `--exec K` actions executed per query (NORA 1; NORA-LONG's chunk of 5, all executed: 5);
- the harness's own cost per query (`--query-overhead-ms`, measured by bench_harness_scale.py).

It predicts the wall time of the episodes (Ray, worker and model start-up not included: a constant)
and, given `--gpus N --cpus M`, sweeps env workers per GPU (one replica per GPU, at most one env
worker per core) and recommends the fewest workers within 5% of the best time.

    .venv/bin/python bench/plan.py libero_spatial libero_object libero_goal libero_10 --policy nora-long \\
        --gpus 1 --cpus 32 --step-ms 15 --reset-ms 400 --latency-ms 60+2.5*b --exec 5 --success-rate 0.9
    .venv/bin/python bench/plan.py --validate     # predicted vs measured on this machine (fake env)

Episode lengths: successes stop early. With `--records` the recorded lengths are resampled; else an
episode runs `--success-steps` env steps with probability `--success-rate`, the suite's step limit otherwise.
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np


@dataclass(frozen=True)
class EpisodeCost:
    steps: int  # env steps the episode executes
    settle: int  # settle steps before the first query (num_steps_wait)
    step_s: float
    reset_s: float
    exec_per_query: int = 1


@dataclass(frozen=True)
class Latency:
    """Seconds per policy batch of size b: a + per_query * b."""

    a_s: float
    per_query_s: float

    @classmethod
    def parse(cls, text: str) -> "Latency":
        m = re.fullmatch(r"\s*([\d.]+)\s*(?:\+\s*([\d.]+)\s*\*\s*b)?\s*", text)
        if not m:
            raise SystemExit(f"--latency-ms {text!r}: write A or A+B*b (ms per batch, plus ms per query in it)")
        return cls(float(m.group(1)) / 1000, float(m.group(2) or 0) / 1000)

    def __call__(self, b: int) -> float:
        return self.a_s + self.per_query_s * b


def simulate(episodes: list[EpisodeCost], workers: int, replicas: int, latency: Latency, max_batch: int = 8,
             max_wait_s: float = 0.005, query_overhead_s: float = 0.0, starts: list[float] | None = None,
             build_s: float = 0.0) -> dict:
    """Wall seconds to run `episodes` on `workers` env workers pinned round-robin to `replicas` policy
    replicas; the batcher's rule: a batch goes when it holds every open episode of its replica or
    `max_batch` queries, or when its oldest query has waited `max_wait_s`. `starts`: when each worker
    is ready (default: all at 0); `build_s`: what a worker's first reset costs on top (building the env)."""
    queue = list(episodes)
    events: list = []  # (time, seq, kind, worker)
    seq = 0

    def push(t, kind, w):
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, w))
        seq += 1

    rep_of = [w % replicas for w in range(workers)]
    state = {}  # worker -> [episode, actions left in the episode]
    pending: list[list] = [[] for _ in range(replicas)]  # per replica: (arrival time, worker)
    busy_until = [0.0] * replicas
    open_eps = [0] * replicas
    timer_set = [None] * replicas
    batches: list[int] = []
    now = 0.0

    def start(w, t):
        if not queue:
            return
        ep = queue.pop(0)
        build = build_s if w not in state else 0.0
        state[w] = [ep, ep.steps]
        open_eps[rep_of[w]] += 1
        push(t + build + ep.reset_s + ep.settle * ep.step_s, "query", w)

    def try_batch(r, t):
        if not pending[r] or busy_until[r] > t + 1e-12:
            return
        enough = min(max_batch, max(1, open_eps[r]))
        oldest = pending[r][0][0]
        if len(pending[r]) < enough and t < oldest + max_wait_s - 1e-12:
            if timer_set[r] != oldest:
                timer_set[r] = oldest
                push(oldest + max_wait_s, "timer", r)
            return
        batch, pending[r] = pending[r][:max_batch], pending[r][max_batch:]
        done = t + latency(len(batch))
        busy_until[r] = done
        batches.append(len(batch))
        for _, w in batch:
            push(done + query_overhead_s, "answer", w)
        push(done, "free", r)

    for w in range(workers):
        push(starts[w] if starts else 0.0, "ready", w)
    while events:
        now, _, kind, x = heapq.heappop(events)
        if kind == "ready":
            start(x, now)
        elif kind == "query":
            pending[rep_of[x]].append((now, x))
            try_batch(rep_of[x], now)
        elif kind in ("timer", "free"):
            try_batch(x, now)
        elif kind == "answer":
            ep, left = state[x]
            k = min(ep.exec_per_query, left)
            state[x][1] = left - k
            t = now + k * ep.step_s
            if state[x][1] > 0:
                push(t, "query", x)
            else:
                open_eps[rep_of[x]] -= 1
                try_batch(rep_of[x], t)
                start(x, t)
    return {"wall_s": now, "mean_batch": float(np.mean(batches)) if batches else 0.0, "batches": len(batches)}


def suite_episodes(suites: list[str], args) -> list[EpisodeCost]:
    from nora_bench.config import load_suite

    rng = np.random.default_rng(0)
    recorded = records_costs(args.records) if args.records else None
    out = []
    rates = _per_suite(args.success_rate, len(suites), float, "--success-rate")
    success_steps = _per_suite(args.success_steps, len(suites), int, "--success-steps")
    for name, rate, ok_steps in zip(suites, rates, success_steps):
        s = load_suite(name)
        limit = args.fail_steps or s.max_steps
        n = s.num_tasks * (args.trials or s.trials)
        for _ in range(n):
            if recorded:
                steps, step_s, reset_s = recorded[rng.integers(len(recorded))]
            else:
                ok = rng.random() < rate
                steps = min(limit, ok_steps or limit // 2) if ok else limit
                step_s, reset_s = args.step_ms / 1000, args.reset_ms / 1000
            out.append(EpisodeCost(int(steps), s.num_steps_wait, step_s, reset_s, args.exec))
    return out


def _per_suite(text: str, n: int, kind, flag: str) -> list:
    values = [kind(v) for v in str(text).split(",")]
    if len(values) not in (1, n):
        raise SystemExit(f"{flag} {text}: give one value, or one per suite ({n})")
    return values * n if len(values) == 1 else values


def records_costs(run: str) -> list[tuple[int, float, float]]:
    """(env steps, seconds per step, reset+settle seconds) of each recorded episode of a run folder."""
    rows = []
    for line in (Path(run) / "episodes.jsonl").read_text().splitlines():
        r = json.loads(line)
        t = r.get("timings") or {}
        if r.get("env_steps"):
            rows.append((r["env_steps"], t.get("env_s", 0.0) / r["env_steps"], t.get("reset_s", 0.0) + t.get("settle_s", 0.0)))
    if not rows:
        raise SystemExit(f"--records {run}: no episode with env steps and timings")
    return rows


def plan(args) -> None:
    episodes = suite_episodes(args.suites, args)
    latency = Latency.parse(args.latency_ms)
    print(f"{len(episodes)} episodes of {', '.join(args.suites)}; mean {statistics.mean(e.steps for e in episodes):.0f} "
          f"env steps, {args.exec} action(s) per query; policy {args.policy}: {args.latency_ms} ms per batch; "
          f"{args.gpus} GPU(s), {args.cpus} cores; harness {args.query_overhead_ms:g} ms per query")
    rows, best = [], None
    per_gpu_options = [w for w in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64) if w * args.gpus <= args.cpus] or [1]
    for per_gpu in per_gpu_options:
        r = simulate(episodes, per_gpu * args.gpus, args.gpus, latency, args.max_batch, args.max_wait_ms / 1000,
                     args.query_overhead_ms / 1000)
        rows.append((per_gpu, per_gpu * args.gpus, f"{r['wall_s'] / 60:.1f}", f"{r['mean_batch']:.1f}"))
        best = r["wall_s"] if best is None else min(best, r["wall_s"])
    choice = next(row for row in rows if float(row[2]) * 60 <= best * 1.05)
    common.table(rows, ("workers/GPU", "workers", "predicted min", "mean batch"))
    print(f"\nrecommended: {choice[0]} env workers per GPU ({choice[1]} in all): {choice[2]} min predicted "
          "(Ray, worker and model start-up not included)")


def measured_fake_run(workers: int, step_ms: float, latency_s: float, episodes: int, steps: int) -> dict:
    """Run the fake env with the fixed-cost policy actor: seconds from the first episode's start to the
    last record, each worker's ready time (its first episode's start), the step cost and the harness's
    cost per query read from the records (timings env_s / env_steps, policy_s / queries - latency)."""
    import yaml

    from nora_bench.config import RunConfig
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    root = Path(common.__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as d:
        suite = yaml.safe_load((root / "suites/fake.yaml").read_text())
        suite["env_options"]["step_ms"] = step_ms
        (Path(d) / "s.yaml").write_text(yaml.safe_dump(suite))
        preset = yaml.safe_load((root / "policies/fixed-cost.yaml").read_text())
        (Path(d) / "p.yaml").write_text(yaml.safe_dump({**preset, "name": "fixed-cost", "latency_s": latency_s}))
        config = RunConfig.resolve(suite=str(Path(d) / "s.yaml"), policy=str(Path(d) / "p.yaml"), tasks="0",
                                   trials=episodes, max_steps=steps, video=False)
        done: list[tuple[float, object]] = []
        sched = Scheduler(config, RunDir(Path(d) / "run"), ExecOptions(workers=workers, progress=False))
        sched.run(on_result=lambda r: done.append((time.perf_counter(), r)))
    first = min(t - r.timings["wall_s"] for t, r in done)
    ready: dict[str, float] = {}
    for t, r in done:
        ready[r.worker] = min(ready.get(r.worker, 1e18), t - r.timings["wall_s"] - first)
    recs = [r for _, r in done]
    return {"wall_s": max(t for t, _ in done) - first, "starts": sorted(ready.values()),
            "step_s": statistics.mean(r.timings["env_s"] / r.env_steps for r in recs),
            "overhead_s": statistics.mean(r.timings["policy_s"] / r.queries for r in recs) - latency_s}


def measured_run(suite: str, policy: str, workers: int, episodes: int, steps: int) -> dict:
    """A real run (any suite and policy): the same facts as `measured_fake_run`, the policy's own time
    per query (timings policy_s / queries) included, and the reset + settle seconds."""
    from nora_bench.config import RunConfig
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    with tempfile.TemporaryDirectory() as d:
        config = RunConfig.resolve(suite=suite, policy=policy, tasks="0", trials=episodes, max_steps=steps, video=False)
        done: list[tuple[float, object]] = []
        Scheduler(config, RunDir(Path(d) / "run"), ExecOptions(workers=workers, progress=False)).run(
            on_result=lambda r: done.append((time.perf_counter(), r)))
    first = min(t - r.timings["wall_s"] for t, r in done)
    ready: dict[str, float] = {}
    for t, r in done:
        ready[r.worker] = min(ready.get(r.worker, 1e18), t - r.timings["wall_s"] - first)
    recs = [r for _, r in done]
    return {"wall_s": max(t for t, _ in done) - first, "starts": sorted(ready.values()), "records": recs,
            "step_s": statistics.mean(r.timings["env_s"] / r.env_steps for r in recs),
            "query_s": statistics.mean(r.timings["policy_s"] / r.queries for r in recs),
            "reset_s": statistics.mean(r.timings["reset_s"] + r.timings["settle_s"] for r in recs)}


def validate_scripted(args) -> None:
    """The scripted expert on LIBERO (policy in the worker): a 1-worker calibration run's records give
    step, reset and policy costs; predicted vs measured for 1 and 2 workers."""
    suite, episodes, steps = "libero_spatial", 2, 30
    cal = measured_run(suite, "scripted", 1, 2, steps)
    resets = [r.timings["reset_s"] + r.timings["settle_s"] for r in cal["records"]]
    build_s, reset_s = resets[0] - resets[1], resets[1]  # the first reset builds the env
    print(f"calibration (1 worker, 2 episodes): {cal['step_s'] * 1000:.0f} ms per env step, env build {build_s:.1f} s, "
          f"reset+settle {reset_s:.1f} s, {cal['query_s'] * 1000:.1f} ms policy per query")
    rows = []
    for workers in (1, 2):
        m = measured_run(suite, "scripted", workers, episodes, steps)
        eps = [EpisodeCost(r.env_steps, 0, cal["step_s"], reset_s, 1) for r in m["records"]]
        # A local policy: each worker has its own (one replica per worker, no batching).
        predicted = simulate(eps, workers, workers, Latency(cal["query_s"], 0.0), 1, 0.0, 0.0, m["starts"],
                             build_s)["wall_s"]
        rows.append((f"scripted, {suite}, {steps} steps", workers, episodes, " ".join(f"{s:.1f}" for s in m["starts"]),
                     f"{predicted:.1f}", f"{m['wall_s']:.1f}", f"{(predicted - m['wall_s']) / m['wall_s']:+.0%}",
                     f"{m['step_s'] * 1000:.0f}"))
    common.table(rows, ("run", "workers", "episodes", "worker ready s", "predicted s", "measured s", "error",
                        "measured ms/step"))


def validate(args) -> None:
    """Predicted vs measured wall time on this machine: the fake env (fixed step cost) with the
    fixed-cost policy actor, 1 and 2 workers."""
    step_ms, lat_s, episodes, steps = 20.0, 0.05, 4, 40
    # Calibration: a separate 1-worker run's records give this machine's real step cost (sleep
    # overshoot included) and the harness's cost per query (Ray call, batcher), as a planner reads
    # them from an earlier run.
    cal = measured_fake_run(1, step_ms, lat_s, 2, steps)
    print(f"calibration run: {cal['step_s'] * 1000:.1f} ms per env step (asked {step_ms:g}), "
          f"{cal['overhead_s'] * 1000:.1f} ms harness cost per query")
    rows = []
    for workers in (1, 2):
        m = measured_fake_run(workers, step_ms, lat_s, episodes, steps)
        eps = [EpisodeCost(steps, 0, cal["step_s"], 0.0, 1)] * episodes
        predicted = simulate(eps, workers, 1, Latency(lat_s, 0.0), 8, 0.005, cal["overhead_s"], m["starts"])["wall_s"]
        rows.append((f"fake {step_ms:g} ms/step, policy {lat_s * 1000:g} ms/batch", workers, episodes,
                     " ".join(f"{s:.1f}" for s in m["starts"]), f"{predicted:.1f}", f"{m['wall_s']:.1f}",
                     f"{(predicted - m['wall_s']) / m['wall_s']:+.0%}"))
    common.table(rows, ("run", "workers", "episodes", "worker ready s", "predicted s", "measured s", "error"))
    print("(target: within 15%; measured from the first episode's start to the last record; each worker's "
          "ready time is taken from the run, start-up is not what the planner predicts)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("suites", nargs="*")
    ap.add_argument("--policy", default="nora-long")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--cpus", type=int, default=32)
    ap.add_argument("--trials", type=int, default=None, help="trials per task (default: the suite's)")
    ap.add_argument("--step-ms", type=float, default=15.0)
    ap.add_argument("--reset-ms", type=float, default=500.0)
    ap.add_argument("--records", default=None, help="an earlier run folder: step costs and episode lengths")
    ap.add_argument("--latency-ms", default="50+2*b")
    ap.add_argument("--exec", type=int, default=1, help="actions executed per query (the chunk rule)")
    ap.add_argument("--success-rate", default="0.9", help="one, or one per suite (comma-separated)")
    ap.add_argument("--success-steps", default="0",
                    help="env steps of a success, one or one per suite (default: half the limit)")
    ap.add_argument("--fail-steps", type=int, default=0,
                    help="env steps of a failed episode (default: the suite's limit; NORA's recipes: 500 queries x exec)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--query-overhead-ms", type=float, default=2.0)
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--validate-scripted", action="store_true", help="the scripted expert on LIBERO, 1 and 2 workers")
    args = ap.parse_args()
    if args.validate_scripted:
        validate_scripted(args)
    elif args.validate:
        validate(args)
    elif not args.suites:
        ap.error("name the suites to plan (or --validate)")
    else:
        plan(args)


if __name__ == "__main__":
    main()
