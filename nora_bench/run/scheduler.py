"""The scheduler: runs a run's planned episodes (run/planning.py) on Ray env workers or in process.

Every finished episode is appended to the run folder at once. A worker that dies is replaced
and its episode re-run from the start, up to `max_attempts`; an episode that keeps failing is
recorded as errored with its reasons, and the run goes on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Protocol

import ray
from ray.exceptions import RayActorError, RayError

from nora_bench import UserError, __version__
from nora_bench.config import RunConfig
from nora_bench.envs import env_class
from nora_bench.episode import ERROR, EpisodeOutcome, EpisodeResult, EpisodeSpec
from nora_bench.run.planning import ORDER_RULE, episode_seed, expand, ordered, pick_episode, plan_order, retries, task_of  # noqa: F401 (re-exported)
from nora_bench.run.policy_actor import BatchOptions, PolicyActor
from nora_bench.run.rundir import RunDir, now, package_versions
from nora_bench.run.setup_gate import SetupGate
from nora_bench.run.workers import ENV_WORKER_MEMORY, EnvWorker, RemoteEnvWorker, await_built

log = logging.getLogger(__name__)


@dataclass
class ExecOptions:
    """How a run executes; none of this changes its results (so it is not part of config.yaml)."""

    workers: int | None = None  # None: as many as CPUs and memory allow
    ray_address: str | None = None
    max_attempts: int = 3
    progress: bool = True
    verbose: bool = False
    # Run episodes one by one in this process, without Ray: for envs that talk to an operator
    # on this terminal (the real WidowX) and for debugging.
    in_process: bool = False
    # Where the policy runs: "local" (inside each env worker), "actor" (batching policy actors),
    # "auto" (the preset's `serve` field, default local).
    policy_mode: str = "auto"
    policy_replicas: int = 1
    policy_gpus: float = 0.0
    # CPU slots a replica reserves. 0 by default: a restarting replica must never wait for a CPU
    # slot that env workers hold while they wait for the replica.
    policy_cpus: float = 0.0
    policy_resources: dict = field(default_factory=dict)  # custom Ray resources, e.g. {"gpu_node": 1}
    max_batch_size: int = 8
    max_wait_ms: float = 5.0
    # llvmpipe threads per env worker (None: Mesa's default, one per core)
    render_threads: int | None = None
    # On resume, run again the episodes recorded as `error` (the env or worker failed, not the policy)
    retry_errors: bool = False
    # Envs (concurrent episodes) per Ray env worker; > 1 coalesces their policy-actor queries into
    # one call (run/coalescing.py): Ray's per-call cost, not the envs, caps fast envs otherwise.
    envs_per_worker: int = 1
    coalesce_wait_ms: float = 2.0
    # Ray's placement of env workers: DEFAULT (fill a node, then the next) or SPREAD (over the nodes).
    worker_placement: str = "DEFAULT"

    def uses_policy_actor(self, preset: dict) -> bool:
        mode = preset.get("serve", "local") if self.policy_mode == "auto" else self.policy_mode
        if mode not in ("local", "actor"):
            raise UserError(f"unknown policy mode {mode!r}: use local or actor")
        return mode == "actor"


def _baseline(rule) -> tuple[list[str], dict]:
    """A --versus baseline: its episode order and each scored episode's outcome (key -> bool/None)."""
    base = RunDir(rule.versus)
    if not base.exists():
        raise UserError(f"--versus {rule.versus}: no nora-bench run there (no {RunDir.CONFIG})")
    outcomes = {r["key"]: r.get("success") for r in base.latest()}
    if not outcomes:
        raise UserError(f"--versus {rule.versus} holds no finished episode: run the baseline first")
    recorded = base.read_json(RunDir.ORDER)
    keys = recorded["keys"] if recorded else sorted(outcomes)  # runs before orders: task-then-trial order
    return [k for k in keys if k in outcomes], outcomes


def default_workers(n_episodes: int) -> int:
    """As many workers as CPU cores allow within memory (about 1.5 GB per LIBERO env)."""
    cpus = os.cpu_count() or 1
    try:
        import psutil

        mem_workers = int(psutil.virtual_memory().available // ENV_WORKER_MEMORY) - 1
    except ImportError:
        mem_workers = cpus
    return max(1, min(cpus, mem_workers, n_episodes))


SETUP_GATE_EPISODES = 3  # episodes in a row in which the policy never acted make a setup error
RAY_CONNECT_TIMEOUT_S = 10.0  # to reach the head's port
RAY_JOIN_TIMEOUT_S = 120.0  # for ray.init to join once the port answers (Ray itself retries for minutes)
RAY_START_ATTEMPTS = 3  # local start-ups tried before giving up (Ray waits a fixed 30 s for its raylet)


def join_ray(address: str, verbose: bool) -> None:
    """ray.init(address), every step bounded: a clear UserError instead of minutes of silent retries."""
    fix = "start one with `ray start --head` (and pass its HOST:PORT), or leave out --ray-address to run locally"
    hostport = address.removeprefix("ray://")
    if address != "auto":
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--ray-address {address!r} is not HOST:PORT (or auto): {fix}")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
        except OSError as e:
            why = (f"no answer within {RAY_CONNECT_TIMEOUT_S:.0f} s" if isinstance(e, TimeoutError)
                   else (e.strerror or type(e).__name__))
            raise UserError(f"cannot reach the Ray cluster at {address} ({why}): {fix}") from None
    outcome: list = []

    def join() -> None:
        try:
            ray.init(address=address, log_to_driver=verbose, logging_level=logging.WARNING)
            outcome.append(None)
        except Exception as e:  # handed to the caller's thread
            outcome.append(e)

    thread = threading.Thread(target=join, daemon=True, name="ray-join")
    thread.start()
    thread.join(RAY_JOIN_TIMEOUT_S)
    if not outcome:
        raise UserError(f"{address} answers but no Ray cluster joined within {RAY_JOIN_TIMEOUT_S:.0f} s "
                        f"(is it a Ray head's GCS port, 6379 by default?): {fix}")
    if outcome[0] is not None:
        e = outcome[0]
        raise UserError(f"cannot join the Ray cluster at {address!r} ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}): {fix}")


def init_ray(address: str | None, cpus_wanted: int, verbose: bool) -> bool:
    """Start a local Ray (or join `address`). Returns True if this call started Ray."""
    if ray.is_initialized():
        return False
    # Ray's start-up notices (the token-authentication default on every local start) are not a run's
    # business: shown with -v only.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.INFO if verbose else logging.ERROR)
    if address:
        join_ray(address, verbose)
        return True
    # Keep every Ray server on loopback for a local run.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            # address="local": a run of its own, never the latest cluster another process started on this
            # machine (`ray start`, a test's Cluster), which refuses num_cpus.
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, cpus_wanted), include_dashboard=False,
                     object_store_memory=512 * 2**20, log_to_driver=verbose, logging_level=logging.WARNING,
                     _system_config={"max_direct_call_object_size": 1 << 20})
            return True
        except Exception as e:  # Ray's own start-up timeouts (an overloaded machine): one line, not a traceback
            # Ray gives its raylet a fixed 30 s to register; a busy machine can need longer, so try again.
            ray.shutdown()
            if attempt < RAY_START_ATTEMPTS and "timed out" in str(e):
                continue
            raise UserError(f"Ray could not start on this machine ({type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}): run the same "
                            "command again to resume (nothing is lost), with fewer --workers if the machine is busy"
                            ) from None
    return True


@dataclass
class _Pending:
    spec: EpisodeSpec
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(self, config: RunConfig, run_dir: RunDir, options: ExecOptions, rule=None):
        self.config, self.run_dir, self.options = config, run_dir, options
        self.rule = rule  # a stopping.StopRule (--until / --versus) or None: run every episode
        self.stopper = None
        self.finished = 0  # episodes this call ran to a record
        self.env_cls = env_class(config.suite["env"])
        self.versions = package_versions(self.env_cls.versions())
        self.policy_stats: list[dict] = []
        self.coalesce_stats: list[dict] = []  # per env worker with several envs: actor calls, queries

    def run(self, on_result=None) -> int:
        """Run the episodes missing from the run folder (until the stopping rule, if any, says stop).
        Returns how many were run."""
        resumed = self.run_dir.open(self.config, self.versions)
        baseline = _baseline(self.rule) if self.rule and self.rule.versus else None
        specs = expand(self.config)
        if baseline is not None:
            specs = [s for s in specs if s.key in baseline[1]]
        specs = ordered(specs, self.run_dir, self.config.seed, resumed, baseline[0] if baseline else None)
        latest = {r["key"]: r for r in self.run_dir.latest()} if resumed else {}
        done = self.run_dir.done_keys(self.options.retry_errors) if resumed else set()
        if self.rule is not None:
            self._start_stopper(specs, latest, done, baseline[1] if baseline else None)
            if self.stopper.status != "running":
                return 0
        todo = [_Pending(s) for s in specs if s.key not in done and not self._skip(s)]
        if not todo:
            return 0
        # A policy that never gets to act is a setup error (reported, not recorded as 0%), unless
        # earlier records of this run show it acting.
        self._gate = SetupGate(limit=min(len(todo), SETUP_GATE_EPISODES), policy=self.config.policy.get("name", ""),
                               proven=resumed and any(r.get("env_steps") for r in self.run_dir.records()))
        # An env that talks to an operator on this terminal (real robot) runs in this process, never on Ray.
        if self.options.in_process or self.env_cls.operator_driven:
            backend: Backend = InProcessBackend(self.config.policy, self.env_cls, self.options)
        else:
            n_workers = self.options.workers or default_workers(len(todo))
            per = max(1, self.options.envs_per_worker)
            backend = RayBackend(self.config.policy, self.env_cls, self.options, max(1, min(n_workers, -(-len(todo) // per))))
        clean = False
        try:
            self._drive(backend, todo, on_result)
            clean = True
        finally:
            backend.close(clean)
            self.policy_stats += backend.policy_stats
            self.coalesce_stats += backend.coalesce_stats
        self._gate.finish()
        return self.finished

    # -- internals ----------------------------------------------------------------------------
    def _start_stopper(self, specs: list[EpisodeSpec], latest: dict, done: set, baseline: dict | None) -> None:
        """The stopping rule, fed the outcomes already recorded (a resumed run), in the run's order."""
        from nora_bench.run.stopping import Stopper, StopRule

        recorded = self.run_dir.read_json(RunDir.STOPPING)
        if recorded and not StopRule.from_dict(recorded["rule"]).same_as(self.rule):
            raise UserError(f"{self.run_dir.path} was run with --until {recorded['rule']['text']!r} "
                            f"(alpha {recorded['rule']['alpha']}): resume it with the same rule, or use a new --out folder")
        self.stopper = Stopper(self.rule, [s.key for s in specs], {s.key: s.task_id for s in specs}, baseline)
        for spec in specs:
            if spec.key in done and spec.key in latest:
                self.stopper.observe(spec.key, latest[spec.key].get("success"))
        self.run_dir.write_json(RunDir.STOPPING, self.stopper.report())

    def _skip(self, spec: EpisodeSpec) -> bool:
        return self.stopper is not None and self.stopper.skip(spec.key)

    def _drive(self, backend: "Backend", todo: list[_Pending], on_result) -> None:
        """Episodes to free workers until none is left: the affinity rule picks which episode a worker
        takes, the retry rule whether an errored attempt runs again (both in run/planning.py)."""
        queue = list(todo)
        slots = backend.start()
        worker_task: dict[int, tuple | None] = {i: None for i in slots}  # the env each worker has built
        inflight: dict[int, _Pending] = {}
        # Under a stopping rule, stay close to the run's order (episodes far ahead of it are wasted
        # when the rule stops): look only a few episodes ahead for one whose env is built.
        window = len(slots) if self.stopper is not None else None
        if backend.lookahead is not None:
            window = min(window or backend.lookahead, backend.lookahead)

        def submit(i: int) -> None:
            queue[:] = [p for p in queue if not self._skip(p.spec)]
            if not queue:
                return
            busy = {task_of(p.spec) for p in inflight.values()}
            p = queue.pop(pick_episode([p.spec for p in queue], worker_task[i], busy, window))
            p.attempts += 1
            worker_task[i] = task_of(p.spec)
            inflight[i] = p
            backend.submit(i, p.spec)

        for i in slots:
            if queue:
                submit(i)
        while inflight:
            done = backend.wait()
            p = inflight.pop(done.slot)
            if done.replaced:  # a new worker in that slot: no env built yet
                worker_task[done.slot] = None
            if self._retry(p, done.outcome):
                queue.insert(0, p)
            else:
                self._finish(p, done.outcome, done.video, on_result)
            if queue:
                submit(done.slot)

    def _retry(self, p: _Pending, outcome: EpisodeOutcome) -> bool:
        """Note an errored attempt; True if the episode gets another one."""
        return retries(p.errors, p.attempts, outcome, self.options.max_attempts)

    def _finish(self, p: _Pending, outcome: EpisodeOutcome, video: bytes | None, on_result) -> None:
        for p, outcome, video in self._gate.admit(outcome, (p, outcome, video)):
            record = self._record(p, outcome, video)
            self.run_dir.append(record.to_dict())
            self.finished += 1
            if self.stopper is not None and self.stopper.observe(record.key, record.success):
                self.run_dir.write_json(RunDir.STOPPING, self.stopper.report())
            if on_result:
                on_result(record)

    def _record(self, p: _Pending, outcome: EpisodeOutcome, video: bytes | None) -> EpisodeResult:
        spec, policy = p.spec, self.config.policy
        rel = self.run_dir.write_video(spec.key, video) if video else None
        return EpisodeResult.from_outcome(
            spec, outcome, attempts=p.attempts,
            # An errored record's own error is its last attempt's: the list keeps the earlier ones.
            attempt_errors=p.errors[:-1] if outcome.termination == ERROR else list(p.errors),
            distractors=self.config.distractors, perturbation=self.config.suite_spec.perturbation(self.config.distractors),
            policy=policy.get("name", ""), checkpoint=policy.get("checkpoint"), video=rel,
            finished_at=now(), harness_version=__version__, versions=self.versions)


# -- where episodes run -------------------------------------------------------------------------------
@dataclass
class Done:
    """A finished attempt: the slot it ran in (free again), how it ended, its video.
    `replaced`: the slot's worker died and a new one (no env built) took its place."""

    slot: int
    outcome: EpisodeOutcome
    video: bytes | None = None
    replaced: bool = False


class Backend(Protocol):
    """Where episodes run: numbered worker slots, one episode at a time each. The scheduler decides
    which episode goes to which slot and whether to run it again; a backend only runs them."""

    lookahead: int | None  # how far ahead of the run's order a free slot may pick (None: any)
    policy_stats: list[dict]  # per policy actor, filled by close()
    coalesce_stats: list[dict]  # per env worker running several envs, filled by close()

    def start(self) -> list[int]:
        """Build the workers (a broken policy fails here, in one line); the slot numbers."""

    def submit(self, slot: int, spec: EpisodeSpec) -> None:
        """Start `spec` in a free slot."""

    def wait(self) -> Done:
        """Block until one submitted episode ends; errors of the machinery become ERROR outcomes."""

    def close(self, clean: bool) -> None:
        """Free everything; `clean` False after an exception (no waiting on busy workers)."""


class InProcessBackend:
    """One env worker in this process: for an operator at this terminal (real robot) and for debugging.
    Episodes run in the run's order, each when `wait` is called."""

    lookahead = 1

    def __init__(self, preset: dict, env_cls, options: ExecOptions):
        self.preset, self.env_cls, self.options = preset, env_cls, options
        self.worker: EnvWorker | None = None
        self.pending: EpisodeSpec | None = None
        self.policy_stats: list[dict] = []
        self.coalesce_stats: list[dict] = []

    def start(self) -> list[int]:
        self.worker = EnvWorker(self.preset, self.env_cls.kind, "driver", render_threads=self.options.render_threads)
        return [0]

    def submit(self, slot: int, spec: EpisodeSpec) -> None:
        self.pending = spec

    def wait(self) -> Done:
        spec, self.pending = self.pending, None
        outcome, video = self.worker.run(spec)
        return Done(0, outcome, video)

    def close(self, clean: bool) -> None:
        if self.worker is not None:
            self.worker.shutdown()


class RayBackend:
    """Env workers as Ray actors (a dead one is replaced), with batching policy actors when the policy
    is served (restarted by Ray if their process dies). Starts a local Ray, or joins --ray-address.

    With `envs_per_worker` K, worker w holds K slots (w * K ... w * K + K - 1): K episodes at once."""

    lookahead = None

    def __init__(self, preset: dict, env_cls, options: ExecOptions, n_workers: int):
        self.preset, self.env_cls, self.options, self.n_workers = preset, env_cls, options, n_workers
        self.per = max(1, options.envs_per_worker)
        self.replicas: list = []
        self.workers: dict[int, object] = {}  # worker number -> actor
        self.inflight: dict = {}  # ObjectRef -> (slot, actor, spec)
        self.names = 0  # workers built so far: each gets a new name
        self.started_ray = False
        self.policy_stats: list[dict] = []
        self.coalesce_stats: list[dict] = []

    def start(self) -> list[int]:
        self.started_ray = init_ray(self.options.ray_address, self.n_workers, self.options.verbose)
        self.replicas = self._policy_actors()
        await_built(self.replicas[:1], "policy actor")  # the first: others may wait for resources
        self.workers = {w: self._new_worker() for w in range(self.n_workers)}
        await_built([self.workers[0]], "env worker")  # before any episode: a broken policy is one line
        # One episode per env, spread over the workers: every worker's first slot, then every second one ...
        return [w * self.per + k for k in range(self.per) for w in range(self.n_workers)]

    def submit(self, slot: int, spec: EpisodeSpec) -> None:
        actor = self.workers[slot // self.per]
        self.inflight[actor.run.remote(spec)] = (slot, actor, spec)

    def wait(self) -> Done:
        ready, _ = ray.wait(list(self.inflight), num_returns=1)
        slot, actor, spec = self.inflight.pop(ready[0])
        try:
            outcome, video = ray.get(ready[0])
            return Done(slot, outcome, video)
        except RayActorError as e:
            # The worker process died (segfault, OOM, kill -9): replace it; the scheduler re-runs the
            # episode. Its other episodes in flight come back as errors later, into the replacement's slots.
            cause = f"env worker died: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            log.warning("%s on %s", cause, spec.key)
            w = slot // self.per
            if self.workers[w] is actor:  # the first of its episodes to come back: replace it
                ray.kill(actor, no_restart=True)
                self.workers[w] = self._new_worker()
            return Done(slot, EpisodeOutcome.errored(cause), None, replaced=True)
        except RayError as e:
            return Done(slot, EpisodeOutcome.errored(f"{type(e).__name__}: {e}"))

    def close(self, clean: bool) -> None:
        if not ray.is_initialized():
            return
        try:
            for w in self.workers.values():
                if clean:
                    try:
                        if self.per > 1:
                            self.coalesce_stats.append(ray.get(w.coalesce_stats.remote(), timeout=30))
                        ray.get(w.shutdown.remote(), timeout=30)
                    except RayError:
                        pass
                ray.kill(w, no_restart=True)
            for actor in self.replicas:
                try:
                    self.policy_stats.append(ray.get(actor.stats.remote(), timeout=30))
                except RayError:
                    pass
                ray.kill(actor, no_restart=True)
        finally:
            if self.started_ray:
                ray.shutdown()

    def _policy_actors(self) -> list:
        """Batching policy replicas, restarted by Ray if their process dies."""
        o = self.options
        if not o.uses_policy_actor(self.preset):
            return []
        have = ray.cluster_resources()
        need = {"GPU": o.policy_gpus, "CPU": o.policy_cpus, **(o.policy_resources or {})}
        short = [f"{v:g} {k} (the cluster has {have.get(k, 0):g})" for k, v in need.items() if v and have.get(k, 0) < v]
        if short:  # Ray would wait for it forever
            raise UserError(f"a policy replica needs {', '.join(short)}: it could never start; lower --policy-gpus "
                            "or join a cluster that has it (--ray-address)")
        cls = ray.remote(PolicyActor).options(num_cpus=o.policy_cpus, num_gpus=o.policy_gpus, resources=o.policy_resources or None,
                                              max_restarts=-1, max_concurrency=1000)
        batch = BatchOptions(o.max_batch_size, o.max_wait_ms)
        return [cls.remote(self.preset, self.env_cls.action_spec, batch) for _ in range(o.policy_replicas)]

    def _new_worker(self):
        index, self.names = self.names, self.names + 1
        actor = self.replicas[index % len(self.replicas)] if self.replicas else None
        # K envs: K episodes at once on K threads of one actor (K = 1: a plain, one-call-at-a-time actor).
        concurrency = {"max_concurrency": self.per} if self.per > 1 else {}
        return RemoteEnvWorker.options(
            num_cpus=self.env_cls.worker_cpus * self.per, memory=self.env_cls.worker_memory * self.per,
            max_restarts=0, scheduling_strategy=self.options.worker_placement, **concurrency,
        ).remote(self.preset, self.env_cls.kind, f"worker{index}", actor, self.options.render_threads, True,
                 self.per, self.options.coalesce_wait_ms)
