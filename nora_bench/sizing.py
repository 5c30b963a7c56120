"""Size a run before running it: simulate the scheduler's event loop (env workers running episodes,
policy replicas answering batches the way nora_bench/batching.py does) and predict its wall time.

Inputs: each env step's cost (given, or read from an earlier run's records), the policy's per-batch
latency curve `A + B*b` ms (bench/bench_nora_serving.py measures it), the chunk rule (actions executed
per query), the harness's own cost per query (bench/bench_harness_scale.py), the env build at a
worker's first reset, and the cores the env workers share. `nora-bench plan` sweeps env workers per
GPU and recommends the fewest within 5% of the best time; bench/plan.py validates it against real runs.
"""

from __future__ import annotations

import heapq
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nora_bench import UserError


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
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(?:\+\s*(\d+(?:\.\d*)?)\s*\*\s*b)?\s*", str(text))
        if not m:
            raise UserError(f"--latency-ms {text!r}: write A or A+B*b (ms per batch, plus ms per query in it), "
                            "e.g. 60+2.5*b")
        return cls(float(m.group(1)) / 1000, float(m.group(2) or 0) / 1000)

    def __call__(self, b: int) -> float:
        return self.a_s + self.per_query_s * b


def simulate(episodes: list[EpisodeCost], workers: int, replicas: int, latency: Latency, max_batch: int = 8,
             max_wait_s: float = 0.005, query_overhead_s: float = 0.0, starts: list[float] | None = None,
             build_s: float = 0.0, cores: float | None = None, policy_on_cores: bool = False) -> dict:
    """Wall seconds to run `episodes` on `workers` env workers pinned round-robin to `replicas` policy
    replicas; the batcher's rule: a batch goes when it holds every open episode of its replica or
    `max_batch` queries, or when its oldest query has waited `max_wait_s`. `starts`: when each worker
    is ready (default: all at 0); `build_s`: what a worker's first reset costs on top (building the env).

    `cores`: the CPU cores the env workers share (None: one each). CPU work (env build, reset, settle,
    steps) is processor-shared: while n workers compute, each advances at min(1, cores / n).
    `policy_on_cores`: the policy computes in the workers (a local policy, one replica per worker) and
    its time is CPU work too."""
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
    jobs: dict[int, list] = {}  # processor sharing: worker -> [CPU seconds left, event when done]
    cpu = {"t": 0.0, "version": 0}

    def rate() -> float:
        return min(1.0, cores / len(jobs)) if jobs else 1.0

    def advance(t):
        r = rate()
        for job in jobs.values():
            job[0] -= (t - cpu["t"]) * r
        cpu["t"] = t

    def reschedule(t):
        cpu["version"] += 1  # earlier "cpu" events are stale
        if jobs:
            push(t + max(0.0, min(j[0] for j in jobs.values())) / rate(), "cpu", cpu["version"])

    def work(w, seconds, t, kind):
        """Worker w computes `seconds` of CPU work from t, then `kind` happens."""
        if cores is None or seconds <= 0:
            push(t + seconds, kind, w)
            return
        advance(t)
        jobs[w] = [seconds, kind]
        reschedule(t)

    def start(w, t):
        if not queue:
            return
        ep = queue.pop(0)
        build = build_s if w not in state else 0.0
        state[w] = [ep, ep.steps]
        open_eps[rep_of[w]] += 1
        work(w, build + ep.reset_s + ep.settle * ep.step_s, t, "query")

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
        batches.append(len(batch))
        if policy_on_cores and cores is not None:
            for _, w in batch:  # one worker per replica: its policy computes on the worker's share
                work(w, latency(len(batch)) + query_overhead_s, t, "answer")
            return
        done = t + latency(len(batch))
        busy_until[r] = done
        for _, w in batch:
            push(done + query_overhead_s, "answer", w)
        push(done, "free", r)

    def handle(kind, x, t):
        if kind == "ready":
            start(x, t)
        elif kind == "query":
            pending[rep_of[x]].append((t, x))
            try_batch(rep_of[x], t)
        elif kind in ("timer", "free"):
            try_batch(x, t)
        elif kind == "answer":
            ep, left = state[x]
            k = min(ep.exec_per_query, left)
            state[x][1] = left - k
            work(x, k * ep.step_s, t, "query" if state[x][1] > 0 else "ended")
        elif kind == "ended":
            open_eps[rep_of[x]] -= 1
            try_batch(rep_of[x], t)
            start(x, t)

    for w in range(workers):
        push(starts[w] if starts else 0.0, "ready", w)
    end = 0.0
    while events:
        now, _, kind, x = heapq.heappop(events)
        if kind == "cpu" and x != cpu["version"]:
            continue  # stale: the set of computing workers changed since it was scheduled
        end = now
        if kind != "cpu":
            handle(kind, x, now)
        else:
            advance(now)
            done = [w for w, j in jobs.items() if j[0] <= 1e-9]
            finished = [(w, jobs.pop(w)[1]) for w in done]
            reschedule(now)
            for w, then in finished:
                handle(then, w, now)
    return {"wall_s": end, "mean_batch": float(np.mean(batches)) if batches else 0.0, "batches": len(batches)}


def records_costs(run: str | Path) -> list[tuple[int, float, float]]:
    """(env steps, seconds per step, reset+settle seconds) of each recorded episode of a run folder."""
    path = Path(run) / "episodes.jsonl"
    if not path.is_file():
        raise UserError(f"--records {run}: no episodes.jsonl there; pass a nora-bench run folder")
    rows = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        t = r.get("timings") or {}
        if r.get("env_steps"):
            rows.append((r["env_steps"], t.get("env_s", 0.0) / r["env_steps"], t.get("reset_s", 0.0) + t.get("settle_s", 0.0)))
    if not rows:
        raise UserError(f"--records {run}: no episode with env steps and timings")
    return rows


def per_suite(text: str, n: int, kind, flag: str) -> list:
    try:
        values = [kind(v) for v in str(text).split(",")]
    except ValueError:
        raise UserError(f"{flag} {text!r}: give a number, or one per suite, comma-separated") from None
    if len(values) not in (1, n):
        raise UserError(f"{flag} {text}: give one value, or one per suite ({n})")
    return values * n if len(values) == 1 else values


# Preset fields that say how many actions a policy returns per query.
HORIZON_FIELDS = ("horizon", "time_horizon", "action_horizon")


def actions_per_query(preset: dict, chunk_exec: str) -> int | None:
    """Env steps per query under the chunk rule (None: the preset does not say its chunk length)."""
    from nora_bench.chunking import ChunkRule

    rule = ChunkRule.parse(chunk_exec)
    if rule.kind == "ensemble":
        return 1
    horizon = next((int(preset[f]) for f in HORIZON_FIELDS if f in preset), None)
    if rule.kind == "first":
        return rule.k if horizon is None else min(rule.k, horizon)
    return horizon


@dataclass
class PlanRequest:
    """What `nora-bench plan` sizes: suites, a policy preset and the machine."""

    suites: list[str]
    policy: str
    gpus: int = 1
    cpus: int = 32
    trials: int | None = None
    step_ms: float = 15.0
    reset_ms: float = 500.0
    build_s: float = 0.0
    records: str | None = None
    latency_ms: str | None = None
    exec_per_query: int | None = None
    chunk_exec: str | None = None
    success_rate: str = "0.9"
    success_steps: str = "0"
    fail_steps: int = 0
    max_batch: int = 32
    max_wait_ms: float = 5.0
    query_overhead_ms: float = 1.0
    seed: int = 0


def episodes_of(req: PlanRequest) -> tuple[list[EpisodeCost], dict]:
    """The planned episodes (their costs) and what was assumed; UserError on bad input."""
    from nora_bench.config import RunConfig

    if req.gpus < 1 or req.cpus < 1:
        raise UserError("--gpus and --cpus must be >= 1")
    if req.step_ms < 0 or req.reset_ms < 0 or req.build_s < 0:
        raise UserError("--step-ms, --reset-ms and --build-s must be >= 0")
    rates = per_suite(req.success_rate, len(req.suites), float, "--success-rate")
    if not all(0 <= r <= 1 for r in rates):
        raise UserError(f"--success-rate {req.success_rate}: rates are in [0, 1]")
    ok_steps = per_suite(req.success_steps, len(req.suites), int, "--success-steps")
    recorded = records_costs(req.records) if req.records else None
    rng = np.random.default_rng(req.seed)
    out, assumed = [], {}
    for name, rate, ok in zip(req.suites, rates, ok_steps):
        config = RunConfig.resolve(suite=name, policy=req.policy, trials=req.trials, chunk_exec=req.chunk_exec,
                                   video=False)
        per_query = req.exec_per_query or actions_per_query(config.policy, config.chunk_exec)
        if per_query is None:
            raise UserError(f"policy {config.policy.get('name', req.policy)} does not say how many actions a query "
                            f"returns (chunk rule {config.chunk_exec}): give --exec K (actions executed per query)")
        limit = config.max_steps * (per_query if config.step_unit == "queries" else 1)
        fail = req.fail_steps or limit
        assumed[name] = {"episodes": len(config.tasks) * len(config.trials), "actions/query": per_query,
                         "limit": limit, "fail steps": fail}
        for _ in range(len(config.tasks) * len(config.trials)):
            if recorded:
                steps, step_s, reset_s = recorded[rng.integers(len(recorded))]
            else:
                success = rng.random() < rate
                steps = min(fail, ok or limit // 2) if success else fail
                step_s, reset_s = req.step_ms / 1000, req.reset_ms / 1000
            out.append(EpisodeCost(int(steps), config.num_steps_wait, step_s, reset_s, per_query))
    return out, assumed


def policy_latency(req: PlanRequest) -> Latency:
    """The policy's batch latency: --latency-ms, else a fixed-cost preset's own `latency_s`."""
    from nora_bench.config import load_policy_preset

    if req.latency_ms is not None:
        return Latency.parse(req.latency_ms)
    preset = load_policy_preset(req.policy)
    if preset.get("kind") in ("zero", "random", "scripted"):
        return Latency(float(preset.get("latency_s", 0.0)), 0.0)
    raise UserError(f"policy {preset.get('name', req.policy)}: its per-batch latency is not known here: give "
                    "--latency-ms A+B*b (ms per batch plus ms per query; bench/bench_nora_serving.py measures it)")


WORKERS_PER_GPU = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


def sweep(req: PlanRequest) -> dict:
    """Predicted wall time for each env-worker count per GPU; the recommendation: the fewest workers
    within 5% of the best. Env workers beyond the cores share them (processor sharing)."""
    from nora_bench.config import load_policy_preset

    episodes, assumed = episodes_of(req)
    latency = policy_latency(req)
    local = load_policy_preset(req.policy).get("serve", "local") != "actor"
    rows = []
    for per_gpu in [w for w in WORKERS_PER_GPU if w * req.gpus <= 2 * req.cpus] or [1]:
        workers = per_gpu * req.gpus
        # A local policy lives in each worker (no batching); an actor policy: one replica per GPU.
        replicas, max_batch = (workers, 1) if local else (req.gpus, req.max_batch)
        r = simulate(episodes, workers, replicas, latency, max_batch, req.max_wait_ms / 1000,
                     req.query_overhead_ms / 1000, build_s=req.build_s, cores=req.cpus, policy_on_cores=local)
        rows.append({"workers/GPU": per_gpu, "workers": workers, "wall_s": r["wall_s"], "mean_batch": r["mean_batch"]})
    best = min(r["wall_s"] for r in rows)
    choice = next(r for r in rows if r["wall_s"] <= best * 1.05)
    return {"episodes": len(episodes), "mean_steps": float(np.mean([e.steps for e in episodes])),
            "assumed": assumed, "rows": rows, "choice": choice, "local_policy": local}
