"""`kind: remote`: a policy served by another process, over openpi's or vla-eval's protocol.

Each episode gets a websocket connection of its own (idle ones are reused), so a server that
batches across connections batches nora-bench's env workers. What goes on the wire is the
preset's layout (`nora_bench.wire.layout`); only msgpack, never pickle.

Failures, as the record shows them:
- the server is down at start: `check_preset` says so in one line (exit 2, nothing recorded);
- a connection drops or a reply does not come within `reply_timeout_s`: `InfrastructureError`,
  the episode is re-run (attempts recorded), the next episode reconnects with backoff;
- the server answers with an error (openpi: a text frame and a close; vla-eval: an `error`
  message): `policy_error` with the server's own message;
- a reply without actions, of the wrong shape, or with NaN: `policy_error` with the reason.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from nora_bench import UserError, __version__
from nora_bench.policies.config import PolicyConfig
from nora_bench.types import ActionChunk, ActionSpec, EpisodeInfo, InfrastructureError, Observation, Requirements
from nora_bench.wire import openpi as openpi_wire
from nora_bench.wire import vlaeval as vla_wire
from nora_bench.wire.layout import Layout, ReplyError

# vla-eval's import string for its LIBERO benchmark: what its orchestrator sends in `hello`.
VLA_EVAL_LIBERO = "vla_eval.benchmarks.libero.benchmark:LIBEROBenchmark"


class RemotePolicyError(RuntimeError):
    """The server reported an error for a query (its message is the record's reason)."""


@dataclass(frozen=True, kw_only=True)
class RemoteConfig(PolicyConfig):
    """The preset fields of `kind: remote`. The images and state sent follow `layout` (no `cameras`
    or `state` keys: the layout names them)."""

    url: str
    protocol: str = "openpi"
    layout: Any = None  # a name in wire.layout.LAYOUTS or a mapping; None: the protocol's default
    gripper: str | None = None  # the convention the server's actions are in (None: the env's)
    api_key_env: str | None = None  # openpi: send `Authorization: Api-Key $VAR` (the key is never recorded)
    # vla-eval: image encoding (png is vla-eval's default) and its LIBERO observation options
    image_format: str = "png"
    # None: not said, so not sent; a vla-eval server that asks for one is then refused before the run
    # until the preset says true (send it) or false (run without it).
    send_wrist_image: bool | None = None
    send_state: bool | None = None
    benchmark: str = VLA_EVAL_LIBERO
    connect_timeout_s: float = 10.0
    reply_timeout_s: float = 120.0  # a JAX server compiles on its first query
    reconnect_attempts: int = 5
    backoff_s: float = 1.0  # waits backoff_s * 2**i between reconnect attempts

    def check(self) -> None:
        if self.protocol not in SESSIONS:
            raise UserError(f"unknown protocol {self.protocol!r}; known: {', '.join(SESSIONS)}")
        if urlsplit(self.url).scheme not in ("ws", "wss"):
            raise UserError(f"url {self.url!r} must start with ws:// or wss://")
        if self.image_format not in vla_wire.IMAGE_FORMATS:
            raise UserError(f"image_format must be one of {', '.join(vla_wire.IMAGE_FORMATS)}")
        if self.reconnect_attempts < 1 or self.connect_timeout_s <= 0 or self.reply_timeout_s <= 0 or self.backoff_s < 0:
            raise UserError("reconnect_attempts must be >= 1, the timeouts > 0 and backoff_s >= 0")
        if self.api_key_env and self.api_key_env not in os.environ:
            raise UserError(f"api_key_env names ${self.api_key_env}, which is not set")
        self.layout_for_run()

    def requirements(self) -> Requirements:
        layout = self.layout_for_run()
        return Requirements(cameras=layout.cameras, state=bool(layout.state), gripper=self.gripper)

    def layout_for_run(self, source: str = "layout") -> Layout:
        options = {"send_wrist_image": bool(self.send_wrist_image), "send_state": bool(self.send_state)}
        return Layout.resolve(self.layout, self.protocol, source).select(options)


def public_url(url: str) -> str:
    """The URL as records show it: no user, password or query (they may hold credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def plain(value: Any, depth: int = 0) -> Any:
    """A JSON-able copy of server metadata (arrays summarized, bytes counted)."""
    if depth > 6:
        return repr(value)[:200]
    if isinstance(value, dict):
        return {str(k.decode() if isinstance(k, bytes) else k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value[:100]]
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 32 else f"<array {value.dtype} {list(value.shape)}>"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)[:200]


# -- sessions: one websocket connection, one protocol ------------------------------------------
class _Session:
    """One connection to a policy server; `server_info` is what the server said on connect."""

    protocol = ""

    def __init__(self, config: RemoteConfig, timeout: float):
        import websockets.sync.client

        self.config = config
        self.url = public_url(config.url)
        headers = {"Authorization": f"Api-Key {os.environ[config.api_key_env]}"} if config.api_key_env else None
        # As both published clients connect: no compression, no frame-size limit.
        self.ws = websockets.sync.client.connect(config.url, compression=None, max_size=None, open_timeout=timeout,
                                                 close_timeout=1, additional_headers=headers, legacy=True)
        self.healthy = True
        try:
            self.server_info = self._handshake(timeout)
        except BaseException:
            self.close()
            raise

    def _recv(self, timeout: float):
        from websockets.exceptions import ConnectionClosed

        try:
            return self.ws.recv(timeout=timeout)
        except TimeoutError:
            self.close()
            raise InfrastructureError(f"the {self.protocol} policy server at {self.url} did not answer within "
                                      f"{timeout:g} s") from None
        except ConnectionClosed as e:
            self.close()
            raise InfrastructureError(f"the {self.protocol} policy server at {self.url} closed the connection "
                                      f"({e})") from None

    def _send(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self.ws.send(data)
        except (ConnectionClosed, OSError) as e:
            self.close()
            raise InfrastructureError(f"lost the connection to the {self.protocol} policy server at {self.url} "
                                      f"({e})") from None

    def close(self) -> None:
        self.healthy = False
        try:
            self.ws.close()
        except Exception:
            pass

    # What each protocol implements.
    def _handshake(self, timeout: float) -> dict: ...

    def start(self, info: EpisodeInfo) -> None: ...

    def send(self, request: dict) -> None: ...

    def receive(self) -> tuple[dict, dict]:
        """(reply, server timings in ms)."""
        ...

    def end(self, queries: int, elapsed_s: float) -> None: ...


class OpenpiSession(_Session):
    """openpi's protocol, as `openpi_client.websocket_client_policy.WebsocketClientPolicy` speaks it."""

    protocol = "openpi"

    def _handshake(self, timeout: float) -> dict:
        frame = self._recv(timeout)
        if isinstance(frame, str):
            raise InfrastructureError(f"the openpi server at {self.url} sent text instead of its metadata: {frame[:300]}")
        return openpi_wire.unpack(frame)

    def start(self, info: EpisodeInfo) -> None:
        pass  # openpi has no episode messages: its LIBERO client just sends observations

    def send(self, request: dict) -> None:
        self._send(openpi_wire.pack(request))

    def receive(self) -> tuple[dict, dict]:
        frame = self._recv(self.config.reply_timeout_s)
        if isinstance(frame, str):  # openpi's server sends the error as text (a traceback), then closes
            self.close()
            lines = [line.strip() for line in frame.splitlines() if line.strip()]
            raise RemotePolicyError(f"openpi server error: {lines[-1][:2000] if lines else '(empty message)'}")
        reply = openpi_wire.unpack(frame)
        timing = reply.get("server_timing", {}) if isinstance(reply, dict) else {}
        return reply, {k: float(v) for k, v in timing.items() if isinstance(v, (int, float, np.number))}

    def end(self, queries: int, elapsed_s: float) -> None:
        pass


class VlaEvalSession(_Session):
    """vla-eval's protocol, as `vla_eval.connection.Connection` and its SyncEpisodeRunner speak it."""

    protocol = "vla-eval"

    def __init__(self, config: RemoteConfig, timeout: float):
        self.seq = 0
        self.pending: list[int] = []
        super().__init__(config, timeout)

    def _message(self, kind: str, payload: dict) -> int:
        self.seq += 1
        self._send(vla_wire.pack(vla_wire.Message(kind, payload, self.seq), self.config.image_format))
        return self.seq

    def _handshake(self, timeout: float) -> dict:
        self._message(vla_wire.HELLO, {"harness_version": f"nora-bench {__version__}",
                                       "protocol_version": vla_wire.PROTOCOL_VERSION,
                                       "benchmark": self.config.benchmark})
        reply = self._read(timeout)
        if reply.type != vla_wire.HELLO:
            raise InfrastructureError(f"the vla-eval server at {self.url} answered hello with {reply.type!r}")
        return reply.payload

    def _read(self, timeout: float) -> vla_wire.Message:
        frame = self._recv(timeout)
        try:
            return vla_wire.unpack(frame)
        except ValueError as e:
            self.close()
            raise RemotePolicyError(f"vla-eval server sent a malformed frame: {e}") from None

    def start(self, info: EpisodeInfo) -> None:
        # As vla-eval's orchestrator and SyncEpisodeRunner: the task's plain fields, no reply.
        task = {"name": info.instruction, "suite": info.suite, "task_id": info.task_id, "episode_idx": info.trial}
        self._message(vla_wire.EPISODE_START, {"task": task})

    def send(self, request: dict) -> None:
        self.pending.append(self._message(vla_wire.OBSERVATION, request))

    def receive(self) -> tuple[dict, dict]:
        seq = self.pending.pop(0)
        reply = self._read(self.config.reply_timeout_s)
        if reply.type == vla_wire.ERROR:
            detail = reply.payload.get("error", reply.payload) if isinstance(reply.payload, dict) else reply.payload
            raise RemotePolicyError(f"vla-eval server error: {detail}")
        if reply.type != vla_wire.ACTION:
            self.close()
            raise RemotePolicyError(f"vla-eval server answered an observation with {reply.type!r}")
        if reply.seq != seq:  # vla-eval's client only warns; a reply to another query is unusable here
            self.close()
            raise InfrastructureError(f"the vla-eval server at {self.url} answered seq {reply.seq}, expected {seq}")
        payload = reply.payload if isinstance(reply.payload, dict) else {}
        timing = payload.get("server_timing", {})
        return payload, {k: float(v) for k, v in timing.items() if isinstance(v, (int, float))}

    def end(self, queries: int, elapsed_s: float) -> None:
        # vla-eval sends the episode's metrics; the policy does not know the outcome when its
        # episode ends, so `metrics` is empty (vla-eval's own model servers do not read it).
        self._message(vla_wire.EPISODE_END, {"metrics": {}, "steps": queries, "elapsed_sec": round(elapsed_s, 3)})


SESSIONS: dict[str, type[_Session]] = {"openpi": OpenpiSession, "vla-eval": VlaEvalSession}


@dataclass
class _Episode:
    session: _Session
    started: float
    queries: int = 0
    reconnects: int = 0


class RemotePolicy:
    """A policy server behind a websocket URL (openpi or vla-eval protocol)."""

    config_class = RemoteConfig

    def __init__(self, config: RemoteConfig, action_spec: ActionSpec):
        self.config = config
        self.action_spec = action_spec
        self.layout = config.layout_for_run()
        self.requirements = config.requirements()
        self.url = public_url(config.url)
        self._idle: list[_Session] = []
        self._episodes: dict[str, _Episode] = {}
        self.server_info: dict = {}

    # -- what the harness asks before building ------------------------------------------------
    @classmethod
    def check_config(cls, config: RemoteConfig) -> dict:
        """Reach the server once before anything runs; its metadata goes into config.yaml."""
        url = public_url(config.url)
        try:
            session = SESSIONS[config.protocol](config, config.connect_timeout_s)
        except (OSError, TimeoutError, InfrastructureError, RemotePolicyError) as e:
            reason = str(e) or type(e).__name__
            raise UserError(f"cannot reach the {config.protocol} policy server at {url}: {reason}; start the server "
                            f"or fix `url` in the policy preset") from None
        except Exception as e:  # the websockets handshake's own errors (bad status, wrong protocol)
            raise UserError(f"cannot reach the {config.protocol} policy server at {url}: {type(e).__name__}: {e}; "
                            f"check that it speaks the {config.protocol} protocol") from None
        info = plain(session.server_info)
        session.close()
        if config.protocol == "vla-eval":
            asked = info.get("observation_params") or {} if isinstance(info, dict) else {}
            for option in ("send_wrist_image", "send_state"):
                if asked.get(option) and getattr(config, option) is None:
                    raise UserError(f"the vla-eval server at {url} asks for {option}: true (its observation_params); "
                                    f"set `{option}: true` (or false, to refuse) in the policy preset")
        return {"protocol": config.protocol, "url": url, "server": info}

    # -- the Policy contract ------------------------------------------------------------------
    def start_episode(self, info: EpisodeInfo) -> None:
        self.end_episode(info.key)  # a re-run episode starts afresh
        session, reconnects = self._session()
        episode = _Episode(session, time.perf_counter(), reconnects=reconnects)
        self._episodes[info.key] = episode
        try:
            session.start(info)
        except InfrastructureError:
            self._episodes.pop(info.key, None)
            raise

    def act(self, observations: list[Observation]) -> list[ActionChunk]:
        # Send every query first, then read the replies: a batching server sees them together.
        sent = []
        for obs in observations:
            episode = self._episodes.get(obs.episode)
            if episode is None or not episode.session.healthy:
                raise InfrastructureError(f"no open connection to {self.url} for episode {obs.episode!r}")
            request = self.layout.request(obs, self._camera)
            t = time.perf_counter()
            episode.session.send(request)
            sent.append((episode, t))
        chunks = []
        for episode, t in sent:
            reply, timing = episode.session.receive()
            roundtrip_ms = (time.perf_counter() - t) * 1000
            chunks.append(self._chunk(episode, reply, timing, roundtrip_ms))
        return chunks

    def end_episode(self, key: str) -> None:
        episode = self._episodes.pop(key, None)
        if episode is None:
            return
        session = episode.session
        if session.healthy:
            try:
                session.end(episode.queries, time.perf_counter() - episode.started)
                self._idle.append(session)
            except InfrastructureError:
                pass  # the next episode reconnects

    def close(self) -> None:
        for episode in self._episodes.values():
            episode.session.close()
        for session in self._idle:
            session.close()
        self._episodes.clear()
        self._idle.clear()

    # -- helpers ------------------------------------------------------------------------------
    def _camera(self, name: str) -> str:
        return self.action_spec.resolve_camera(name) or name

    def _session(self) -> tuple[_Session, int]:
        """An open connection: an idle one, else a new one, retried with exponential backoff."""
        while self._idle:
            session = self._idle.pop()
            if session.healthy:
                return session, 0
        cls = SESSIONS[self.config.protocol]
        last = None
        for attempt in range(self.config.reconnect_attempts):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                session = cls(self.config, self.config.connect_timeout_s)
                self.server_info = plain(session.server_info)
                return session, attempt
            except Exception as e:  # refused, timed out, bad handshake: try again
                last = e
        raise InfrastructureError(f"cannot reach the {self.config.protocol} policy server at {self.url} after "
                                  f"{self.config.reconnect_attempts} attempts: {type(last).__name__}: {last}")

    def _chunk(self, episode: _Episode, reply: dict, timing: dict, roundtrip_ms: float) -> ActionChunk:
        first = episode.queries == 0
        episode.queries += 1
        info: dict[str, Any] = {"roundtrip_ms": round(roundtrip_ms, 3)}
        info.update({f"server_{k}": round(v, 3) for k, v in timing.items()})
        if first:  # once per episode: who answered
            info["remote"] = {"protocol": self.config.protocol, "url": self.url, "server": self.server_info,
                              "reconnects": episode.reconnects}
        extra = reply.get("nora_bench") if isinstance(reply, dict) else None
        extra = extra if isinstance(extra, dict) else {}
        failures = [str(f) for f in extra.get("failures", [])]
        if extra.get("stop"):  # a nora-bench server's policy ended the episode
            return ActionChunk(np.zeros((0, self.action_spec.dim)), failures, stop=str(extra["stop"]), info=info)
        try:
            actions = self.layout.parse_actions(reply, self.action_spec.dim)
        except ReplyError as e:
            raise RemotePolicyError(str(e)) from None
        return ActionChunk(actions, failures, info=info)
