"""What only a LIBERO episode reads: `LiberoOptions`, carried in `EpisodeSpec.env_options`.

`LiberoEnv.episode_options` puts the run's LIBERO settings there (benchmark, distractors, scene); a
suite's own env_options may set `instruction`. Everything else in an `EpisodeSpec` is shared by every
env kind. A leaf of envs/: envs/libero.py and envs/distractors.py both read it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nora_bench import UserError
from nora_bench.envs.libero_scenes import REFERENCE


@dataclasses.dataclass(frozen=True)
class LiberoOptions:
    benchmark: str = ""  # the LIBERO benchmark the task ids index (a LIBERO-PRO suite: its own name)
    distractors: int = 0  # distractor objects added to the scene (envs/distractors.py)
    distractor_names: tuple[str, ...] = ()  # exactly these catalog objects
    # Fixture placement (envs/libero_scenes.py): `reference` = the published scripts' scene for this
    # trial after env.seed(scene_seed); `episode` = NumPy seeded from the episode's seed before the reset.
    scene: str = REFERENCE
    scene_seed: int = 0
    instruction: str = "benchmark"  # where the task's language comes from: the benchmark, or the BDDL file

    @classmethod
    def from_items(cls, items: Any) -> "LiberoOptions":
        """From an episode's env_options (a `task` entry, a task_list's, is not LIBERO's)."""
        given = dict(items)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - known - {"task"})
        if unknown:
            raise UserError(f"libero env: unknown env_options {', '.join(unknown)}; it takes {', '.join(sorted(known))}")
        opts = cls(**{k: v for k, v in given.items() if k in known})
        return dataclasses.replace(opts, distractor_names=tuple(opts.distractor_names))


def options_of(spec) -> LiberoOptions:
    """An episode's LIBERO options."""
    return LiberoOptions.from_items(spec.env_options)


def libero_spec_fields(**fields: Any) -> dict[str, Any]:
    """EpisodeSpec keyword arguments with LiberoOptions' fields folded into `env_options`, for scripts
    and tests that build a LIBERO episode by hand: EpisodeSpec(**libero_spec_fields(benchmark=..., ...))."""
    names = {f.name for f in dataclasses.fields(LiberoOptions)}
    options = {k: fields.pop(k) for k in list(fields) if k in names}
    fields["env_options"] = tuple(sorted({**dict(fields.get("env_options", ())), **options}.items()))
    return fields
