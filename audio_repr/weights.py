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
under the final name. ``download()`` (``audio-repr download``) copies from the mirror when the file
is there, verified the same way. Checkpoints are read with ``torch.load(weights_only=True)`` (or safetensors).
"""

from __future__ import annotations

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
from typing import Any, Dict, Optional

import torch

log = logging.getLogger("audio_repr")

__all__ = ["manifest", "manifest_entry", "cache_dir", "resolve", "download", "load_checkpoint",
           "sha256_file", "WeightsError", "WeightsNotFoundError", "HashMismatchError"]


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


def manifest_entry(model: str) -> Dict[str, Any]:
    models = manifest()["models"]
    if model not in models:
        raise WeightsError(f"no weights are known for model {model!r}")
    return models[model]


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


def _check_file(path: Path, entry: Dict[str, Any]) -> None:
    size, digest = entry.get("size"), entry.get("sha256")
    if size is not None and path.stat().st_size != size:
        raise HashMismatchError(f"{path}: size {path.stat().st_size} bytes, expected {size} for {entry['filename']}")
    prefix = entry.get("sha256_prefix")
    if digest or prefix:
        got = sha256_file(path)
        if digest and got != digest:
            raise HashMismatchError(f"{path}: SHA-256 {got} does not match the manifest's {digest} "
                                    f"for {entry['filename']}")
        if prefix and not got.startswith(prefix):
            raise HashMismatchError(f"{path}: SHA-256 {got} does not start with {prefix}, the prefix the "
                                    f"official file name {entry['filename']} carries")


def _where_to_put(model: str, entry: Dict[str, Any]) -> str:
    src = entry.get("url") or (f"https://huggingface.co/{entry['hf_repo']}/resolve/main/{entry['hf_filename']}"
                                if entry.get("hf_repo") else "(no public source)")
    return (f"weights for {model!r} ({entry['filename']}) were not found. Get them from\n  {src}\n"
            f"and either pass weights='path/to/{entry['filename']}', put the file in the cache folder "
            f"{cache_dir()} (AUDIO_REPR_CACHE), or in a mirror folder named by AUDIO_REPR_MIRROR. "
            f"Licence: {entry.get('licence', 'see the source')}")


def resolve(model: str, weights: Optional[os.PathLike | str] = None, *, download_missing: bool = True) -> Path:
    """Find (or fetch) the weights file of ``model`` following the resolution order above."""
    if weights is not None:
        p = Path(weights).expanduser()
        if p.is_dir():
            entry = manifest()["models"].get(model, {})
            cand = p / entry.get("filename", "")
            if entry and cand.is_file():
                return cand
            return p  # a folder in another format (e.g. a transformers save): the family decides
        if not p.is_file():
            raise WeightsNotFoundError(f"weights file not found: {p}")
        return p
    entry = manifest_entry(model)
    cached = cache_dir() / entry["filename"]
    if cached.is_file():
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
    A copy in the mirror folder (``AUDIO_REPR_MIRROR``) is used before the network."""
    entry = manifest_entry(model)
    dest = cache_dir() / entry["filename"]
    if dest.is_file() and not force:
        return dest
    found = _mirror_file(model, entry)
    if found is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _atomic_copy_verified(found, dest, entry)
        return dest
    if is_offline():
        raise WeightsNotFoundError(_where_to_put(model, entry) + "\n(offline mode is on)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if entry.get("licence"):
        print(f"audio-repr: {model}: downloading {entry['filename']} under the licence: {entry['licence']}",
              file=sys.stderr)
    if entry.get("hf_repo"):
        try:
            from huggingface_hub import hf_hub_download

            got = Path(hf_hub_download(entry["hf_repo"], entry["hf_filename"], revision=entry.get("revision")))
        except Exception as e:
            raise WeightsNotFoundError(_where_to_put(model, entry) + f"\n(download failed: {e})") from e
        _atomic_copy_verified(got, dest, entry)
        return dest
    url = entry.get("url")
    if not url:
        raise WeightsNotFoundError(_where_to_put(model, entry))
    fetch_url(url, dest, sha256=entry.get("sha256"), size=entry.get("size"), what=f"{model!r}",
              sha256_prefix=entry.get("sha256_prefix"))
    return dest


def _publish(tmp: str, dest: Path) -> None:
    """Rename a verified temporary file into place with ordinary permissions (the umask's, as any
    file the user writes; ``mkstemp`` creates it readable by its owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)


def _atomic_copy_verified(src: Path, dest: Path, entry: Dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        _check_file(Path(tmp), entry)
        _publish(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_url(url: str, dest: Path, *, sha256: Optional[str], size: Optional[int] = None, what: str = "",
              timeout: float = 60.0, sha256_prefix: Optional[str] = None) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, renamed only when the hash matches
    (``sha256``, else at least ``sha256_prefix``, as torch.hub checks the digits in hub file names)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    h = hashlib.sha256()
    n = 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    for block in iter(lambda: r.read(1 << 20), b""):
                        out.write(block)
                        h.update(block)
                        n += len(block)
            except OSError as e:  # URLError, HTTPError, timeouts
                raise WeightsNotFoundError(f"could not download {what or dest.name} from {url}: {e}") from e
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
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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


def load_checkpoint(path: os.PathLike | str) -> Any:
    """Read a checkpoint without running pickled code (``weights_only=True`` / safetensors)."""
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
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read checkpoint {path} safely (torch.load weights_only=True): "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
                           "The file is corrupt, truncated, or not a PyTorch checkpoint.") from e
