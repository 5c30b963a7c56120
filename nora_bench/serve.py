"""`nora-bench serve`: any policy preset behind openpi's or vla-eval's websocket protocol.

Every connection's queries go through one `Batcher` (the loop the Ray policy actor uses), so
concurrent clients share batched `policy.act` calls. Each connection holds its own episode; the
episode ends (`policy.end_episode`) when the client says so or the connection closes.

- openpi (`openpi_server.websocket_policy_server`): the metadata map on connect, then one reply
  map per request: `actions` (H, D) plus `server_timing`; an error goes back as a text frame,
  then a close (1011). openpi has no episode messages: a connection's first query starts an
  episode, a query with another prompt starts the next.
- vla-eval (`vla_eval.model_servers.serve`): `hello` handshake, `episode_start` / `episode_end`,
  one `action` (one row, (D,)) per `observation`, with the chunk buffered here by the preset's
  chunk rule (as vla-eval's `PredictModelServer` buffers `chunk_size` actions); an error goes back
  as an `error` message and the connection stays open.
HTTP `GET /healthz` (openpi) and `/health` (vla-eval) answer 200 once the policy is loaded.
"""

from __future__ import annotations

import asyncio
import http
import itertools
import logging
import os
import time
import traceback
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import typer

from nora_bench import UserError, __version__
from nora_bench.batching import Batcher, BatchOptions
from nora_bench.chunking import ChunkRule
from nora_bench.types import ActionChunk, ActionSpec, EpisodeInfo
from nora_bench.wire import openpi as openpi_wire
from nora_bench.wire import vlaeval as vla_wire
from nora_bench.wire.layout import Layout

log = logging.getLogger("nora_bench.serve")
PROTOCOLS = ("openpi", "vla-eval")


@dataclass(frozen=True)
class ServeOptions:
    protocol: str = "openpi"
    host: str = "127.0.0.1"
    port: int = 8000
    layout: Any = None  # a layout name or mapping; None: the protocol's default
    batch: BatchOptions = BatchOptions()
    seed: int = 7


def chunk_problem(chunk: ActionChunk, dim: int) -> str | None:
    """Why a chunk cannot be sent as actions (None if it can)."""
    a = np.asarray(chunk.actions)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != dim:
        return f"the policy's action chunk has shape {a.shape}, expected (T>=1, {dim})"
    if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
        return "the policy's action chunk holds NaN, infinite or non-numeric values"
    return None


class PolicyServer:
    """One policy, one batcher, many connections."""

    def __init__(self, policy, preset: dict, action_spec: ActionSpec, options: ServeOptions):
        if options.protocol not in PROTOCOLS:
            raise UserError(f"unknown --protocol {options.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        self.policy, self.preset, self.action_spec, self.options = policy, preset, action_spec, options
        # The server accepts every optional field of its layout (the client chooses what to send).
        self.layout = Layout.resolve(options.layout, options.protocol, "--layout").select(
            {"send_wrist_image": True, "send_state": True})
        if policy.requirements.state:
            raise UserError(f"policy {preset.get('name')!r} needs the simulator's privileged state, which no wire "
                            "protocol carries: it cannot be served")
        self.required = tuple(action_spec.resolve_camera(c) or c for c in policy.requirements.cameras)
        carried = {action_spec.resolve_camera(c) or c for c in self.layout.cameras}
        missing = [c for c in self.required if c not in carried]
        if missing:
            raise UserError(f"policy {preset.get('name')!r} needs camera(s) {', '.join(missing)}, which layout "
                            f"{self.layout.name} does not carry: use a layout with them (--layout)")
        self.chunk_rule = ChunkRule.parse(str(preset.get("chunk_exec", "all")))
        self.batcher = Batcher(policy, options.batch, callers=lambda: len(self.open_episodes))
        self._connections = itertools.count()
        self.open_episodes: set[str] = set()

    # -- episodes and queries, shared by the protocols ----------------------------------------
    async def start_episode(self, key: str, instruction: str, suite: str = "", task_id: int = -1,
                            trial: int = 0) -> None:
        seed = (self.options.seed * 1_000_003 + zlib.crc32(key.encode())) % (2**31)
        info = EpisodeInfo(key=key, suite=suite, task_id=task_id, trial=trial, init_state=trial, seed=seed,
                           instruction=instruction, chunk_exec=str(self.chunk_rule))
        await self.batcher.call(self.policy.start_episode, info)
        self.open_episodes.add(key)

    async def end_episode(self, key: str | None) -> None:
        if key is not None and key in self.open_episodes:
            self.open_episodes.discard(key)
            await self.batcher.call(self.policy.end_episode, key)

    async def query(self, observation) -> tuple[ActionChunk, dict]:
        chunk, timing = await self.batcher.submit(observation)
        if chunk.stop is None:
            problem = chunk_problem(chunk, self.action_spec.dim)
            if problem:
                raise ValueError(problem)
        return chunk, {"infer_ms": timing.infer_ms, "queue_ms": timing.queue_ms, "batch_size": timing.batch_size}

    def metadata(self) -> dict:
        return {"server": "nora-bench", "version": __version__, "policy": self.preset.get("name", ""),
                "kind": self.preset.get("kind", ""), "action_dim": self.action_spec.dim,
                "gripper": self.action_spec.gripper.name, "cameras": list(self.required), "layout": self.layout.name,
                "max_batch_size": self.options.batch.max_batch_size, "max_wait_ms": self.options.batch.max_wait_ms}

    # -- running ------------------------------------------------------------------------------
    async def serve(self, ready: Callable[[int], None] | None = None, stop: asyncio.Event | None = None) -> None:
        from websockets.asyncio.server import serve

        handler = HANDLERS[self.options.protocol]
        try:
            server = await serve(lambda ws: handler(self, ws), self.options.host, self.options.port,
                                 compression=None, max_size=None, ping_interval=None, process_request=_health)
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise UserError(f"cannot listen on {self.options.host}:{self.options.port}: {reason}; "
                            "pick another --port") from None
        async with server:
            port = server.sockets[0].getsockname()[1]
            if ready is not None:
                ready(port)
            await (stop.wait() if stop is not None else asyncio.Future())
        self.batcher.close()

    def next_connection(self) -> int:
        return next(self._connections)


def _health(connection, request):
    if request.path in ("/healthz", "/health"):
        return connection.respond(http.HTTPStatus.OK, '{"status": "ok"}\n' if request.path == "/health" else "OK\n")
    return None


def _reply_extras(chunk: ActionChunk) -> dict:
    """What nora-bench's own client reads back (decode failures, a stop); other clients ignore it."""
    extra: dict = {}
    if chunk.failures:
        extra["failures"] = list(chunk.failures)
    if chunk.stop:
        extra["stop"] = chunk.stop
    return {"nora_bench": extra} if extra else {}


# -- openpi --------------------------------------------------------------------------------------
async def handle_openpi(server: PolicyServer, ws) -> None:
    from websockets.exceptions import ConnectionClosed

    connection = server.next_connection()
    episodes = itertools.count()
    key, prompt = None, None
    prev_total_ms = None
    try:
        await ws.send(openpi_wire.pack(server.metadata()))
        async for frame in ws:
            started = time.monotonic()
            try:
                if isinstance(frame, str):
                    raise ValueError("expected a binary msgpack frame, got text")
                obs = server.layout.observation(openpi_wire.unpack(frame), "", server.required,
                                                server.action_spec.resolve_camera)
                if obs.instruction != prompt:  # openpi sends no episode messages: a new prompt is a new episode
                    await server.end_episode(key)
                    key, prompt = f"openpi/{connection}/{next(episodes)}", obs.instruction
                    await server.start_episode(key, prompt)
                obs.episode = key
                chunk, timing = await server.query(obs)
                reply: dict = {**_reply_extras(chunk)}
                if chunk.stop is None:
                    reply["actions"] = np.asarray(chunk.actions)
                reply["server_timing"] = {**timing, **({"prev_total_ms": prev_total_ms} if prev_total_ms else {})}
                await ws.send(openpi_wire.pack(reply))
                prev_total_ms = (time.monotonic() - started) * 1000
            except ConnectionClosed:
                raise
            except Exception:
                # As openpi's server: the traceback as a text frame, then close with 1011.
                await ws.send(traceback.format_exc())
                await ws.close(1011, "Internal server error. Traceback included in previous frame.")
                return
    except ConnectionClosed:
        pass
    finally:
        await server.end_episode(key)


# -- vla-eval ------------------------------------------------------------------------------------
def _action_spec_payload(spec: ActionSpec) -> dict:
    """vla-eval DimSpec dicts (vla_eval/specs.py) for a LIBERO-style 7-D delta action."""
    if spec.dim != 7 or spec.gripper.name != "libero":
        return {}
    return {"position": {"name": "position", "dims": 3, "format": "delta_xyz", "range": [-1, 1]},
            "rotation": {"name": "rotation", "dims": 3, "format": "axis_angle", "range": [-3.15, 3.15]},
            "gripper": {"name": "gripper", "dims": 1, "format": "binary_close_positive", "range": [-1, 1]}}


async def handle_vla_eval(server: PolicyServer, ws) -> None:
    from websockets.exceptions import ConnectionClosed

    session = uuid.uuid4().hex[:8]
    episodes = itertools.count()
    key = None
    executor = None

    async def send(kind: str, payload: dict, seq: int) -> None:
        await ws.send(vla_wire.pack(vla_wire.Message(kind, payload, seq), "raw"))

    async def begin(instruction: str, task: dict) -> None:
        nonlocal key, executor
        await server.end_episode(key)
        key = f"vla-eval/{session}/{next(episodes)}"
        trial = task.get("episode_idx", 0)
        await server.start_episode(key, instruction, suite=str(task.get("suite", "")),
                                   task_id=int(task.get("task_id", -1)), trial=int(trial if isinstance(trial, int) else 0))
        executor = server.chunk_rule.executor()

    try:
        async for frame in ws:
            try:
                msg = vla_wire.unpack(frame)
            except ValueError as e:
                await send(vla_wire.ERROR, {"error": f"malformed message: {e}"}, 0)
                continue
            if msg.type == vla_wire.HELLO:
                obs_params = {k: True for k, on in (("send_wrist_image", "wrist" in server.required),
                                                     ("send_state", server.policy.requirements.state)) if on}
                payload = {"harness_version": f"nora-bench {__version__}", "protocol_version": vla_wire.PROTOCOL_VERSION,
                           "model_server": f"nora-bench:{server.preset.get('name', '')}", "capabilities": {},
                           **({"observation_params": obs_params} if obs_params else {})}
                spec = _action_spec_payload(server.action_spec)
                if spec:
                    payload["action_spec"] = spec
                await send(vla_wire.HELLO, payload, msg.seq)
            elif msg.type == vla_wire.EPISODE_START:
                task = msg.payload.get("task") or {}
                try:
                    await begin(str(task.get("name", "")), task)
                except Exception as e:
                    await send(vla_wire.ERROR, {"error": f"episode_start_failed: {type(e).__name__}: {e}"}, msg.seq)
            elif msg.type == vla_wire.OBSERVATION:
                try:
                    obs = server.layout.observation(msg.payload, "", server.required, server.action_spec.resolve_camera)
                    if key is None:  # an observation before any episode_start starts one
                        await begin(obs.instruction, {})
                    obs.episode = key
                    payload: dict = {}
                    if executor.needs_query():
                        chunk, timing = await server.query(obs)
                        payload.update(_reply_extras(chunk), server_timing=timing)
                        if chunk.stop is not None:
                            await send(vla_wire.ACTION, payload, msg.seq)
                            continue
                        executor.push(np.asarray(chunk.actions, dtype=np.float64))
                    else:
                        payload["server_timing"] = {"buffered": 1}
                    payload["actions"] = np.asarray(executor.pop(), dtype=np.float32)
                    await send(vla_wire.ACTION, payload, msg.seq)
                except ConnectionClosed:
                    raise
                except Exception as e:
                    log.debug("observation failed", exc_info=True)
                    await send(vla_wire.ERROR, {"error": f"observation_failed: {type(e).__name__}: {e}"}, msg.seq)
            elif msg.type == vla_wire.EPISODE_END:
                await server.end_episode(key)
                key, executor = None, None
            elif msg.type == vla_wire.ERROR:
                log.warning("client error: %s", msg.payload)
    except ConnectionClosed:
        pass
    finally:
        await server.end_episode(key)


HANDLERS: dict[str, Callable] = {"openpi": handle_openpi, "vla-eval": handle_vla_eval}



# -- the command ---------------------------------------------------------------------------------
def command(
    policy: str = typer.Option(..., "--policy", "-p", help="Policy preset (see `nora-bench policies`) or YAML file."),
    protocol: str = typer.Option("openpi", help="Wire protocol: openpi or vla-eval."),
    port: int = typer.Option(8000, help="TCP port (0: any free port; the chosen one is printed)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; loopback unless you ask for another."),
    layout: Optional[str] = typer.Option(None, help="Observation layout (default: the protocol's LIBERO layout)."),
    env: str = typer.Option("libero", help="The env kind whose action convention and cameras the policy serves."),
    max_batch: int = typer.Option(8, help="Largest batch formed from concurrent queries."),
    max_wait_ms: float = typer.Option(5.0, help="How long a batch waits to fill."),
    seed: int = typer.Option(7, help="Seed; each served episode's seed derives from it and the episode key."),
    checkpoint: Optional[str] = typer.Option(None, help="Model checkpoint: a local folder or hub id (default: the preset's)."),
    device: Optional[str] = typer.Option(None, help="Model device: auto, cpu, cuda, cuda:N."),
    dtype: Optional[str] = typer.Option(None, help="Model dtype: auto, bf16, fp16, fp32."),
    attn: Optional[str] = typer.Option(None, help="Attention: auto, sdpa, eager."),
) -> None:
    """Serve a policy preset over openpi's or vla-eval's websocket protocol (batching concurrent clients)."""
    from nora_bench.config import load_policy_preset
    from nora_bench.envs import action_spec as env_action_spec
    from nora_bench.policies import check_preset, make_policy, override_preset

    try:
        if protocol not in PROTOCOLS:
            raise UserError(f"unknown --protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if max_batch < 1 or max_wait_ms < 0 or not 0 <= port < 65536:
            raise UserError("--max-batch must be >= 1, --max-wait-ms >= 0, --port 0-65535")
        preset = load_policy_preset(policy)
        preset = check_preset(override_preset(preset, checkpoint=checkpoint, device=device, dtype=dtype, attn=attn))
        spec = env_action_spec(env)
        options = ServeOptions(protocol=protocol, host=host, port=port, layout=layout,
                               batch=BatchOptions(max_batch, max_wait_ms), seed=seed)
        Layout.resolve(layout, protocol, "--layout")  # a bad layout fails before the model loads
        server = PolicyServer(make_policy(preset, spec), preset, spec, options)

        def ready(bound: int) -> None:
            print(f"serving {preset.get('name', policy)} over {protocol} on ws://{host}:{bound} "
                  f"(batches of up to {max_batch}, {max_wait_ms:g} ms wait); Ctrl-C stops", flush=True)

        asyncio.run(server.serve(ready))
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        pass
