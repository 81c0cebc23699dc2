"""Files replaced whole (`.env` by `digest init`, a profile by the preferences page): a reader
sees the old file or the new one, never half of one, and never a copy readable by more people
than the file itself."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def replace_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` by a file holding `text`, with permissions `mode` at every moment.

    The new file is made with `mode` by `open` itself (never wider, then narrowed), set to
    exactly `mode` whatever the umask took away, written, synced and renamed over `path`; a
    failure half-way leaves the old file (or none) and no temporary copy."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
