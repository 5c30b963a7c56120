"""Where model files come from: a local folder, else the Hugging Face hub cache, else a download."""

from __future__ import annotations

import re
from pathlib import Path

from nora_bench import UserError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def resolve_folder(name: str, what: str, fix: str, allow_patterns: list[str] | None = None) -> Path:
    """A local folder for `name` (a path, or a hub repo id fetched into the hub cache).

    Fails with one line naming `what` could not be found and `fix` (how to pass a local copy).
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if not _REPO_ID.match(name) or path.exists():
        raise UserError(f"{what} {name!r} is not a folder here and not a hub repo id; {fix}")
    from huggingface_hub import snapshot_download

    try:
        # The cache first: no network round trip when the files are already here.
        return Path(snapshot_download(name, local_files_only=True, allow_patterns=allow_patterns))
    except Exception:  # noqa: BLE001 - any cache miss falls through to the download
        pass
    try:
        return Path(snapshot_download(name, allow_patterns=allow_patterns))
    except Exception as e:  # noqa: BLE001 - no network, no such repo, gated repo: all end here
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot download {what} {name!r} from the Hugging Face hub ({type(e).__name__}: {reason}); "
                        f"{fix}") from None
