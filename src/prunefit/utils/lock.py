"""One run per output folder: ``with output_lock(dir):`` holds ``dir/.prunefit.lock`` (pid, host, start time).

A second run into the folder is refused with a one-line ``OutputError`` naming the holder; a lock whose process
is gone (killed, crashed, rebooted) is taken over with a warning, so ``resume=latest`` after a SIGKILL just
works. Under several processes (``RANK`` / ``LOCAL_RANK`` set) only rank 0 takes the lock: the ranks of one
launch share the folder by design.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

from prunefit.errors import OutputError

LOCK_NAME = ".prunefit.lock"


def _start_ticks(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (/proc), to tell a reused pid apart; None if unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, ticks: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    now = _start_ticks(pid)
    return ticks is None or now is None or now == ticks


def _holder(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # being written, or garbage: treated as stale below


def _is_secondary_rank() -> bool:
    return any(os.environ.get(k, "0") not in ("0", "") for k in ("RANK", "LOCAL_RANK"))


def _describe(h: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("started", 0)))
    return f"pid {h.get('pid')} on {h.get('host')} (since {since}: {h.get('command', '?')})"


def _claim(path: Path, me: dict) -> bool:
    """Create the lock file exclusively; False if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(me) + "\n")
    return True


def acquire(directory: str | os.PathLike) -> Path:
    """Take ``directory``'s lock (creating the folder); raise OutputError if a live process holds it."""
    d = Path(directory)
    path = d / LOCK_NAME
    try:
        d.mkdir(parents=True, exist_ok=True)
        path.with_name(LOCK_NAME + ".probe").touch()
        path.with_name(LOCK_NAME + ".probe").unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {d} ({exc.strerror or exc}); choose a writable "
                          "output_dir") from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "ticks": _start_ticks(os.getpid()),
          "started": time.time(), "command": " ".join(sys.argv[:3])[:120]}
    for _ in range(3):
        if _claim(path, me):
            return path
        h = _holder(path)
        if h is not None and h.get("host") != me["host"]:
            raise OutputError(f"{d} is in use by {_describe(h)}; wait for it, use another output_dir, or delete "
                              f"{path} if that run is gone")
        if h is not None and _alive(int(h.get("pid", -1)), h.get("ticks")):
            raise OutputError(f"{d} is in use by {_describe(h)}; wait for it or use another output_dir")
        if h is None and time.time() - path.stat().st_mtime < 2:  # another run is writing it right now
            time.sleep(0.2)
            continue
        if _holder(path) != h:  # someone took it over meanwhile: look again
            continue
        print(f"prunefit: warning: taking over the stale lock of {_describe(h or {})} in {d}", file=sys.stderr)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    raise OutputError(f"{d} is being locked by another run; try again")


def release(path: Path) -> None:
    """Remove the lock if it is still ours."""
    h = _holder(path)
    if h is not None and h.get("pid") == os.getpid() and h.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _missing_ancestors(d: Path) -> list[Path]:
    """``d`` and its parents that do not exist yet, deepest first."""
    out = []
    while not d.exists() and d != d.parent:
        out.append(d)
        d = d.parent
    return out


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike) -> Iterator[Optional[Path]]:
    """Hold ``directory``'s lock for the block (rank 0 only under several processes). If the block fails while
    the folders the lock created hold no file, they are removed: a failed run leaves no empty output."""
    if _is_secondary_rank():
        yield None
        return
    created = _missing_ancestors(Path(directory).absolute())
    path = acquire(directory)
    ok = False
    try:
        yield path
        ok = True
    finally:
        release(path)
        if not ok and created and not any(files for _, _, files in os.walk(created[0])):
            shutil.rmtree(created[0], ignore_errors=True)  # nothing but empty folders the run made
            for d in created[1:]:
                with contextlib.suppress(OSError):
                    d.rmdir()  # only succeeds while empty
