"""Atomic file writes: the data goes to a hidden temporary file beside the target (``.NAME.<pid>.<tag>.part``),
which is renamed over the target only once it is complete; on any error it is removed. A reader never sees a
half-written file under the final name, and a killed writer leaves only ``.*.part`` files (which
``audio-repr embed`` removes when it resumes)."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

__all__ = ["atomic_write", "part_name", "make_dirs", "remove_empty", "RUN_RECORD", "MissingExtraError", "require"]

#: what made an output folder of ``audio-repr embed`` (compared when a run resumes); the leading "_" makes
#: Parquet readers (pyarrow, pandas, Spark) skip it, as ``_failures.log``
RUN_RECORD = "_audio-repr-run.json"


def part_name(path: Path) -> Path:
    """The temporary name a write of ``path`` goes through (unique per process and call)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")


@contextmanager
def atomic_write(path: Union[str, os.PathLike], mode: str = "wb", *, encoding: Optional[str] = None,
                 check: Optional[Callable[[Path], None]] = None) -> Iterator:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` appears complete or not at all.

    ``check(tmp)`` (optional) runs on the finished temporary file before it is renamed; raising refuses
    it (nothing is left). The file gets the permissions of any file the user creates (the umask's). An
    ``OSError`` that names no file (a full disk) is raised again naming ``path``."""
    path = Path(path)
    tmp = part_name(path)
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None and e.errno is not None:   # a full disk, a file-size limit: say which file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def make_dirs(folder: Path) -> List[Path]:
    """``mkdir -p folder``; returns the folders this call created itself, outermost first."""
    missing = []
    p = Path(os.path.abspath(folder))
    while not p.is_dir() and p.parent != p:
        missing.append(p)
        p = p.parent
    created: List[Path] = []
    try:
        for d in reversed(missing):
            try:
                d.mkdir()
                created.append(d)
            except FileExistsError:  # another process made it meanwhile: it is not ours to remove
                if not d.is_dir():
                    raise
    except BaseException:
        remove_empty(created)
        raise
    return created


def remove_empty(created: List[Path]) -> None:
    """Remove the folders a failed call created, innermost first, each only if empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty: someone else is using it (and so its parents)
            break


class MissingExtraError(ImportError):
    """An optional dependency a feature needs is not installed (the message names the extra to install)."""


def require(module: str, extra: str, package: Optional[str] = None) -> None:
    """Import ``module`` or raise :class:`MissingExtraError` with ``pip install 'audio-repr[extra]'``."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"this needs {package or module}, which is not installed or does not "
                                f"load ({e}): pip install 'audio-repr[{extra}]'") from e
