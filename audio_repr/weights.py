"""Weights: manifest, cache, mirror, verified downloads, safe loading.

Resolution order for a model's weights (first hit wins):

1. an explicit ``weights=`` path (a file in the original format, or a folder holding it);
2. the cache: ``$AUDIO_REPR_CACHE`` (default ``$XDG_CACHE_HOME/audio-repr`` or ``~/.cache/audio-repr``);
3. a local mirror folder: ``$AUDIO_REPR_MIRROR`` (air-gapped sites copy the files there);
4. a download from the official source (Hugging Face Hub or a pinned URL), unless offline
   (``AUDIO_REPR_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``).

Downloads go to a temporary file in the cache folder and are renamed into place only after
their SHA-256 (and size) match the manifest (where only the 8-digit prefix that torchvggish's
file names carry is known, that prefix, as torch.hub checks it); nothing half-written is ever left
under the final name, and a failed download removes the folders it created (when still empty).
``download()`` (``audio-repr download``) copies from the mirror when the file is there, verified the
same way, and replaces a cached file that fails verification. A failed download says why in one line,
then where to get the file and where to put it, as the offline error does.

The cache is verified, not trusted: a cached file whose size or hash the manifest pins is checked
when resolved (``resolve``, ``cache_status``): its size every time, its SHA-256 once, remembered in a
hidden record beside it (``.NAME.sha256.json``, replaced atomically, valid while the file's path,
size, mtime_ns, ctime_ns and inode are unchanged). A file that fails raises ``HashMismatchError``
naming it and the fix (``audio-repr download NAME --force``, or delete it). Mirror files are hashed
on every use. Checkpoints are read with ``torch.load(weights_only=True)`` (or safetensors).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ._io import atomic_write, make_dirs, remove_empty

log = logging.getLogger("audio_repr")

__all__ = ["manifest", "manifest_entry", "companion_files", "select_tensors", "cache_dir", "resolve", "download", "cache_status", "cached_ok",
           "load_checkpoint", "sha256_file", "WeightsError", "WeightsNotFoundError", "HashMismatchError"]


class WeightsError(RuntimeError):
    """Weights that cannot be used: corrupt, mismatched with the model, unsafe."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    pass


class HashMismatchError(WeightsError):
    pass


@lru_cache(maxsize=1)
def manifest() -> Dict[str, Any]:
    here = Path(__file__).resolve().parent
    for p in (here / "weights_manifest.json", here.parent / "weights_manifest.json"):
        if p.is_file():
            with open(p, encoding="utf-8") as f:
                return json.load(f)
    raise WeightsError("weights_manifest.json is missing from the installation")


def manifest_entry(name: str) -> Dict[str, Any]:
    """The manifest's entry for a model's weights file (its card names the file; models sharing a file share
    the entry), a companion file by its alias (``vggish-pca``) or a file by its name, with ``filename`` and
    the ``licence`` (from the card of the model the file belongs to: the one place it is stated) added."""
    from .registry import UnknownModelError, get_card

    files = manifest()["files"]
    key, owner = None, None
    try:
        card = get_card(name)
        key, owner = card.weights, card
    except UnknownModelError:
        if name in files:
            key = name
        else:
            key = next((k for k, e in files.items() if e.get("alias") == name), None)
    if key is None or key not in files:
        raise WeightsError(f"no weights are known for {name!r}")
    entry = dict(files[key], filename=key)
    if owner is None and entry.get("for"):
        owner = get_card(entry["for"])
    if owner is not None:
        entry["licence"] = owner.licence
    return entry


def companion_files() -> Dict[str, Dict[str, Any]]:
    """Files of the manifest that are not a model's weights but that some models can use, by alias
    (e.g. ``vggish-pca``: VGGish's PCA postprocessor)."""
    return {e["alias"]: manifest_entry(e["alias"]) for e in manifest()["files"].values() if e.get("alias")}


def cache_dir() -> Path:
    env = os.environ.get("AUDIO_REPR_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "audio-repr"


def is_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return (os.environ.get("AUDIO_REPR_OFFLINE", "").lower() in truthy
            or os.environ.get("HF_HUB_OFFLINE", "").lower() in truthy)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _digest_problem(got: str, entry: Dict[str, Any]) -> Optional[str]:
    """What is wrong with a file of SHA-256 ``got`` for ``entry``; None when it matches the manifest."""
    digest, prefix = entry.get("sha256"), entry.get("sha256_prefix")
    if digest and got != digest:
        return f"SHA-256 {got} does not match the manifest's {digest} for {entry['filename']}"
    if prefix and not got.startswith(prefix):
        return (f"SHA-256 {got} does not start with {prefix}, the prefix the official file name "
                f"{entry['filename']} carries")
    return None


def _check_file(path: Path, entry: Dict[str, Any]) -> None:
    size = entry.get("size")
    if size is not None and path.stat().st_size != size:
        raise HashMismatchError(f"{path}: size {path.stat().st_size} bytes, expected {size} for {entry['filename']}")
    if entry.get("sha256") or entry.get("sha256_prefix"):
        problem = _digest_problem(sha256_file(path), entry)
        if problem:
            raise HashMismatchError(f"{path}: {problem}")


# --- the cache: verified once, remembered ----------------------------------------------------------------------

def _pinned(entry: Dict[str, Any]) -> bool:
    return any(entry.get(k) is not None for k in ("size", "sha256", "sha256_prefix"))


def _record_path(path: Path) -> Path:
    return path.parent / f".{path.name}.sha256.json"


def _stat_key(path: Path, st: os.stat_result) -> Dict[str, Any]:
    """What identifies one version of a file: a rewrite changes ctime (which no tool sets back) even
    when size and mtime are restored; a replacement changes the inode."""
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def _recorded_sha256(path: Path, st: os.stat_result) -> Optional[str]:
    try:
        with open(_record_path(path), encoding="utf-8") as f:
            rec = json.load(f)
        if isinstance(rec, dict) and rec.get("file") == _stat_key(path, st) and isinstance(rec.get("sha256"), str):
            return rec["sha256"]
    except (OSError, ValueError):
        pass
    return None


def _remember_sha256(path: Path, st: os.stat_result, digest: str) -> None:
    """Write the record through a temporary file renamed into place (concurrent writers each write a
    whole, equivalent record; readers never see half of one). A read-only cache just goes unrecorded."""
    try:
        with atomic_write(_record_path(path), "w", encoding="utf-8") as f:
            json.dump({"file": _stat_key(path, st), "sha256": digest}, f)
    except OSError:
        pass


def _cached_problem(path: Path, entry: Dict[str, Any]) -> Optional[str]:
    """What is wrong with the cached ``path`` for ``entry`` (None: it matches all that the manifest pins).
    The size is checked every time, the SHA-256 once per version of the file (see the module docstring)."""
    st = path.stat()
    size = entry.get("size")
    if size is not None and st.st_size != size:
        return f"size {st.st_size} bytes, expected {size}"
    if not (entry.get("sha256") or entry.get("sha256_prefix")):
        return None
    got = _recorded_sha256(path, st)
    if got is None:
        got = sha256_file(path)
        problem = _digest_problem(got, entry)
        after = path.stat()
        if problem is None and _stat_key(path, after) == _stat_key(path, st):  # unchanged while hashed
            _remember_sha256(path, st, got)
        return problem
    return _digest_problem(got, entry)


def _corrupt_message(model: str, path: Path, problem: str) -> str:
    return (f"the cached file at {path} is corrupt or incomplete ({problem}). Run "
            f"`audio-repr download {model} --force` (Python: audio_repr.weights.download({model!r}, force=True)) "
            f"to fetch it again, or delete it.")


def cache_status(model: str) -> str:
    """The state of ``model``'s file in the cache: ``"absent"``; ``"verified"`` (it matches the size and
    hash the manifest pins; hashed once per version of the file, then remembered); ``"unpinned"`` (present,
    and the manifest pins nothing to check it against); ``"corrupt"`` (it fails the check)."""
    entry = manifest_entry(model)
    path = cache_dir() / entry["filename"]
    if not path.is_file():
        return "absent"
    if not _pinned(entry):
        return "unpinned"
    return "corrupt" if _cached_problem(path, entry) else "verified"


def cached_ok(model: str) -> bool:
    """True when the cache holds a usable file for ``model`` (``cache_status`` is verified or unpinned)."""
    return cache_status(model) in ("verified", "unpinned")


# --- where to get the files ---------------------------------------------------------------------------------------

def _source_url(entry: Dict[str, Any]) -> str:
    return entry.get("url") or (f"https://huggingface.co/{entry['hf_repo']}/resolve/main/{entry['hf_filename']}"
                                if entry.get("hf_repo") else "(no public source)")


def _guidance(entry: Dict[str, Any]) -> str:
    return (f"Get {entry['filename']} from\n  {_source_url(entry)}\n"
            f"and either pass it with --weights PATH (command line) or weights='path/to/{entry['filename']}' (Python), "
            f"put it in the cache folder {cache_dir()} (AUDIO_REPR_CACHE), or in a mirror folder named by "
            f"AUDIO_REPR_MIRROR. Licence: {entry.get('licence', 'see the source')}")


def _where_to_put(model: str, entry: Dict[str, Any]) -> str:
    return f"weights for {model!r} ({entry['filename']}) were not found.\n" + _guidance(entry)


def _reason(e: BaseException) -> str:
    """One line: the exception and, where they add something, its causes (huggingface_hub's own message
    is generic; the 404 or the refused connection is in its cause)."""
    parts: List[str] = []
    seen = set()
    while e is not None and id(e) not in seen and len(parts) < 4:
        seen.add(id(e))
        text = " ".join(str(e).split())
        if not parts or (text and text not in " ".join(parts)):
            parts.append(f"{type(e).__name__}: {text}" if text else type(e).__name__)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return "; caused by ".join(parts)


# --- resolution and downloads ---------------------------------------------------------------------------------------

def resolve(model: str, weights: Optional[os.PathLike | str] = None, *, download_missing: bool = True) -> Path:
    """Find (or fetch) the weights file of ``model`` following the resolution order above."""
    if weights is not None:
        p = Path(weights).expanduser()
        if p.is_dir():
            try:
                cand = p / manifest_entry(model)["filename"]
            except WeightsError:
                cand = None
            if cand is not None and cand.is_file():
                return cand
            return p  # a folder in another format (e.g. a transformers save): the family decides
        if not p.is_file():
            raise WeightsNotFoundError(f"weights file not found: {p}")
        return p
    entry = manifest_entry(model)
    cached = cache_dir() / entry["filename"]
    if cached.is_file():
        problem = _cached_problem(cached, entry)
        if problem:
            raise HashMismatchError(_corrupt_message(model, cached, problem))
        return cached
    found = _mirror_file(model, entry)
    if found is not None:
        return found
    if not download_missing or is_offline():
        raise WeightsNotFoundError(_where_to_put(model, entry) + ("\n(offline mode is on)" if is_offline() else ""))
    return download(model)


def _mirror_file(model: str, entry: Dict[str, Any]) -> Optional[Path]:
    """The file in the ``AUDIO_REPR_MIRROR`` folder (flat or under ``model/``), hash-checked; None if absent."""
    mirror = os.environ.get("AUDIO_REPR_MIRROR")
    if mirror:
        for cand in (Path(mirror) / entry["filename"], Path(mirror) / model / entry["filename"]):
            if cand.is_file():
                _check_file(cand, entry)
                return cand
    return None


def download(model: str, *, force: bool = False) -> Path:
    """Fetch ``model``'s weights into the cache, verified; returns the cached path.
    A copy in the mirror folder (``AUDIO_REPR_MIRROR``) is used before the network. A cached file is
    returned as it is only when it passes verification; one that fails is replaced."""
    entry = manifest_entry(model)
    dest = cache_dir() / entry["filename"]
    note = ""
    if dest.is_file() and not force:
        problem = _cached_problem(dest, entry)
        if not problem:
            return dest
        note = f"the cached file at {dest} is corrupt or incomplete ({problem})"
        print(f"audio-repr: {model}: {note}; replacing it", file=sys.stderr)
        note += "\n"
    found = _mirror_file(model, entry)
    if found is not None:
        _atomic_copy_verified(found, dest, entry)
        return dest
    if is_offline():
        raise WeightsNotFoundError(note + _where_to_put(model, entry) + "\n(offline mode is on)")
    url = entry.get("url")
    if not url and not entry.get("hf_repo"):
        raise WeightsNotFoundError(note + _where_to_put(model, entry))
    if entry.get("licence"):
        print(f"audio-repr: {model}: downloading {entry['filename']} under the licence: {entry['licence']}",
              file=sys.stderr)
    if entry.get("hf_repo"):
        try:
            from huggingface_hub import hf_hub_download

            got = Path(hf_hub_download(entry["hf_repo"], entry["hf_filename"], revision=entry.get("revision")))
        except Exception as e:
            raise WeightsNotFoundError(
                f"could not download {model!r} ({entry['hf_repo']}/{entry['hf_filename']}) from the Hugging Face "
                f"Hub: {_reason(e)}\n{note}{_guidance(entry)}") from e
        _atomic_copy_verified(got, dest, entry)
        return dest
    try:
        fetch_url(url, dest, sha256=entry.get("sha256"), size=entry.get("size"), what=f"{model!r}",
                  sha256_prefix=entry.get("sha256_prefix"))
    except WeightsNotFoundError as e:  # the network failed (a bad download is a HashMismatchError)
        raise WeightsNotFoundError(f"{e}\n{note}{_guidance(entry)}") from e
    return dest


def _publish(tmp: str, dest: Path) -> None:
    """Rename a verified temporary file into place with ordinary permissions (the umask's, as any
    file the user writes; ``mkstemp`` creates it readable by its owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)


@contextlib.contextmanager
def _temp_beside(dest: Path) -> Iterator[Tuple[int, str]]:
    """An open temporary file (fd, path) in ``dest``'s folder, which is created when missing. The temporary
    file never outlives the block; when the block fails, the folders created here are removed again (if empty)."""
    created: List[Path] = []
    try:
        for attempt in range(3):
            created += make_dirs(dest.parent)
            try:
                fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
                break
            except FileNotFoundError:  # a failing process removed the folder it had just made: make it again
                if attempt == 2:
                    raise
    except BaseException:
        remove_empty(created)
        raise
    ok = False
    try:
        yield fd, tmp
        ok = True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if not ok:
            remove_empty(created)


def _atomic_copy_verified(src: Path, dest: Path, entry: Dict[str, Any]) -> None:
    with _temp_beside(dest) as (fd, tmp):
        os.close(fd)
        shutil.copyfile(src, tmp)
        _check_file(Path(tmp), entry)
        _publish(tmp, dest)


def fetch_url(url: str, dest: Path, *, sha256: Optional[str], size: Optional[int] = None, what: str = "",
              timeout: float = 60.0, sha256_prefix: Optional[str] = None) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, renamed only when the hash matches
    (``sha256``, else at least ``sha256_prefix``, as torch.hub checks the digits in hub file names).
    On failure nothing is kept, not even the folders created for ``dest``."""
    dest = Path(dest)
    h = hashlib.sha256()
    n = 0
    with _temp_beside(dest) as (fd, tmp):
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    for block in iter(lambda: r.read(1 << 20), b""):
                        out.write(block)
                        h.update(block)
                        n += len(block)
            except OSError as e:  # URLError, HTTPError, timeouts
                raise WeightsNotFoundError(f"could not download {what or dest.name} from {url}: {_reason(e)}") from e
        if size is not None and n != size:
            raise HashMismatchError(f"download of {url} gave {n} bytes, expected {size}; nothing was kept")
        digest = h.hexdigest()
        if sha256 and digest != sha256:
            raise HashMismatchError(f"download of {url} has SHA-256 {digest}, expected {sha256}; nothing was kept")
        if sha256_prefix and not digest.startswith(sha256_prefix):
            raise HashMismatchError(f"download of {url} has SHA-256 {digest}, which does not start with "
                                    f"{sha256_prefix}; nothing was kept")
        if not sha256:
            log.warning("%s: no full SHA-256 pinned in the manifest; downloaded file has %s", dest.name, digest)
        _publish(tmp, dest)
    return dest


def unwrap_state_dict(obj: Any, keys=("state_dict", "model")) -> Dict[str, Any]:
    """The state dict inside a checkpoint: ``obj`` itself, or what it holds under ``keys`` (in order,
    each unwrapped when present), as training scripts save them. Raises ``TypeError`` for a non-mapping."""
    from collections.abc import Mapping

    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a checkpoint dict, got {type(obj).__name__}")
    for key in keys:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    return obj


def select_tensors(obj: Any, keep: Tuple[str, ...], strip: str = r"^(?:module\.|model\.)+") -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint (unwrapped as :func:`unwrap_state_dict` does) whose names, once the prefix
    matching ``strip`` (DDP's ``module.``, a wrapper's ``model.``) is removed, start with one of ``keep``."""
    import re

    prefix = re.compile(strip)
    out: Dict[str, torch.Tensor] = {}
    for k, v in unwrap_state_dict(obj).items():
        if isinstance(k, str) and torch.is_tensor(v):
            name = prefix.sub("", k)
            if name.startswith(keep):
                out[name] = v
    return out


class _Inert:
    """Stands in for an object a training script pickled beside the tensors (its argparse ``args``, paths,
    ...): built without running any of the checkpoint's code, never used."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def load_checkpoint(path: os.PathLike | str, *, allow: Sequence = (), inert_others: bool = False,
                    hint: str = "") -> Any:
    """Read a checkpoint without running pickled code: safetensors, or ``torch.load(weights_only=True)``.

    ``allow``: further globals the file may name (``torch.serialization.safe_globals`` entries, e.g. numpy's
    array reconstruction for arrays pickled in a torch file). ``inert_others``: every other global the file
    names is read as an inert placeholder instead of refusing the file (training checkpoints that pickle
    their ``args``; needs torch >= 2.6). ``hint`` is added to the error."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - safetensors comes with huggingface stacks
            raise WeightsError("reading .safetensors needs the 'safetensors' package") from e
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise WeightsError(f"{path} is not a readable safetensors file: {e}") from e
    ser = torch.serialization
    extra = list(allow)
    if inert_others and hasattr(ser, "get_unsafe_globals_in_checkpoint"):
        try:
            others = ser.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # not a zip-format checkpoint: let torch.load report what is wrong
            others = []
        extra += [(type("Inert", (_Inert,), {}), name) for name in others]
    try:
        if extra and hasattr(ser, "safe_globals"):
            try:
                ctx = ser.safe_globals(extra)
            except (AttributeError, TypeError):                  # pragma: no cover - torch < 2.6: no (obj, name)
                ctx = ser.safe_globals([a for a in extra if not isinstance(a, tuple)])
            with ctx:
                return torch.load(str(path), map_location="cpu", weights_only=True)
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read checkpoint {path} safely (torch.load weights_only=True): "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
                           f"The file is corrupt, truncated, or not a PyTorch checkpoint{hint}.") from e