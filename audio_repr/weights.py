"""Weights: manifest, cache, mirror, verified downloads, safe loading.

Resolution order for a model's weights (first hit wins):

1. an explicit ``weights=`` path (a file in the original format, or a folder holding it);
2. the cache: ``$AUDIO_REPR_CACHE`` (default ``$XDG_CACHE_HOME/audio-repr`` or ``~/.cache/audio-repr``);
3. a mirror, ``$AUDIO_REPR_MIRROR``: a local folder (used in place) or an ``http(s)://`` URL of a folder
   (an internal server; copied into the cache), holding the files under their manifest names, flat or
   under ``<model>/``;
4. a download from the official source (a pinned URL; Hugging Face files from
   ``$HF_ENDPOINT``/``<repo>/resolve/<revision>/<file>``, or from the local Hugging Face cache when it
   already holds them), unless offline (``AUDIO_REPR_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``: then no
   official source is contacted at all; an http mirror, named explicitly, still is).

Downloads go to a temporary file in the cache folder and are renamed into place only after their
size and digests match the manifest (full SHA-256; MD5 where only an MD5 is published; the 8-digit
SHA-256 prefix torchvggish's file names carry, as torch.hub checks it, except where the manifest
marks that prefix unconfirmed: then a mismatch is reported, not refused). A dropped connection is
resumed with an HTTP ``Range`` request (the digests cover the whole file, so a bad resume is caught),
transient failures (timeouts, resets, 5xx) are retried with exponential backoff, a refused connection
or a 4xx fails at once. A progress bar in bytes goes to stderr when it is a terminal. Nothing
half-written or unverified is ever left under the final name, and a failed download removes the
folders it created (when still empty). A file the manifest pins nothing for gets its SHA-256 and
size recorded at its first download (trust on first use), and is checked against that record from
then on; ``pin_summary`` says which (``info`` shows it: "not pinned" for those).
``download()`` (``audio-repr download``) copies from the mirror when the file is there, verified the
same way, and replaces a cached file that fails verification; ``download_all`` fetches every file
(of a family). ``verify_cache`` (``audio-repr verify``) re-hashes every cached file. A failed download
says why in one line, then where to get the file and where to put it, as the offline error does.

The cache is verified, not trusted: a cached file whose size or hash is pinned (or recorded) is checked
when resolved (``resolve``, ``cache_status``): its size every time, its digest once, remembered in a
hidden record beside it (``.NAME.sha256.json``, replaced atomically, valid while the file's path,
size, mtime_ns, ctime_ns and inode are unchanged). A file that fails raises ``HashMismatchError``
naming it and the fix (``audio-repr download NAME --force``, or delete it), unless a local mirror holds
a verified copy: then that copy is used. Mirror files are hashed on every use. Checkpoints are read
with ``torch.load(weights_only=True)`` (or safetensors) with numpy's array reconstruction and its
integer, float and bool dtypes allowed (trainers pickle numpy arrays in their sampler states), nothing
that runs code.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ._io import atomic_write, make_dirs, remove_empty

log = logging.getLogger("audio_repr")

__all__ = ["manifest", "manifest_entry", "companion_files", "select_tensors", "cache_dir", "resolve", "download",
           "download_all", "download_model", "verify_cache", "cache_status", "cached_ok", "mirror_location", "pin_summary",
           "load_checkpoint", "sha256_file", "WeightsError", "WeightsNotFoundError", "HashMismatchError"]


class WeightsError(RuntimeError):
    """Weights that cannot be used: corrupt, mismatched with the model, unsafe."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No usable file: not found anywhere, or the download failed (``status``: the HTTP status, if any)."""

    status: Optional[int] = None


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


def _file_digest(path: Path, algorithm: str, chunk: int = 1 << 20) -> str:
    """The hex digest of a file's bytes, read in blocks of ``chunk`` bytes."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    return _file_digest(path, "sha256", chunk)


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    return _file_digest(path, "md5", chunk)


def _digest_problem(got: str, entry: Dict[str, Any], got_md5: Optional[str] = None) -> Optional[str]:
    """What is wrong with a file of SHA-256 ``got`` (and MD5 ``got_md5``, computed where the manifest pins
    an MD5) for ``entry``; None when it matches. An unconfirmed SHA-256 prefix is only reported (logged)."""
    digest, prefix, md5 = entry.get("sha256"), entry.get("sha256_prefix"), entry.get("md5")
    if digest and got != digest:
        return f"SHA-256 {got} does not match the manifest's {digest} for {entry['filename']}"
    if prefix and not got.startswith(prefix):
        return (f"SHA-256 {got} does not start with {prefix}, the prefix the official file name "
                f"{entry['filename']} carries")
    if md5 and got_md5 is not None and got_md5 != md5:
        return f"MD5 {got_md5} does not match the published {md5} for {entry['filename']}"
    loose = entry.get("sha256_prefix_unconfirmed")
    if loose and not got.startswith(loose):
        log.warning("%s: SHA-256 %s does not start with %s, the digits in its name (never confirmed upstream, "
                    "so not refused)", entry["filename"], got, loose)
    return None


def _check_file(path: Path, entry: Dict[str, Any]) -> str:
    """Check ``path`` against all that ``entry`` pins; returns its SHA-256."""
    size = entry.get("size")
    if size is not None and path.stat().st_size != size:
        raise HashMismatchError(f"{path}: size {path.stat().st_size} bytes, expected {size} for {entry['filename']}")
    got = sha256_file(path)
    problem = _digest_problem(got, entry, md5_file(path) if entry.get("md5") else None)
    if problem:
        raise HashMismatchError(f"{path}: {problem}")
    return got


# --- the cache: verified once, remembered ----------------------------------------------------------------------

_PINS = ("size", "sha256", "sha256_prefix", "md5")


def _pinned(entry: Dict[str, Any]) -> bool:
    return any(entry.get(k) is not None for k in _PINS)


def pin_summary(entry: Dict[str, Any]) -> str:
    """How the manifest pins a file: ``"sha256"`` (+ size), ``"md5"``, ``"sha256 prefix"``, ``"size only"``
    or ``"not pinned"`` (nothing published: the first download records the digest)."""
    if entry.get("sha256"):
        return "sha256" + (" + size" if entry.get("size") else "")
    if entry.get("md5"):
        return "md5" + (" + size" if entry.get("size") else "")
    if entry.get("sha256_prefix"):
        return "sha256 prefix"
    if entry.get("size"):
        return "size only"
    return "not pinned"


def _record_path(path: Path) -> Path:
    return path.parent / f".{path.name}.sha256.json"


def _stat_key(path: Path, st: os.stat_result) -> Dict[str, Any]:
    """What identifies one version of a file: a rewrite changes ctime (which no tool sets back) even
    when size and mtime are restored; a replacement changes the inode."""
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def _read_record(path: Path) -> Optional[Dict[str, Any]]:
    try:
        with open(_record_path(path), encoding="utf-8") as f:
            rec = json.load(f)
        if isinstance(rec, dict) and isinstance(rec.get("sha256"), str):
            return rec
    except (OSError, ValueError):
        pass
    return None


def _recorded_sha256(path: Path, st: os.stat_result) -> Optional[str]:
    rec = _read_record(path)
    return rec["sha256"] if rec is not None and rec.get("file") == _stat_key(path, st) else None


def _first_download_pins(path: Path, entry: Dict[str, Any]) -> Dict[str, Any]:
    """``entry`` with the digest and size recorded at the file's first download as its pins, for a file the
    manifest pins nothing for (trust on first use); ``entry`` itself otherwise."""
    if _pinned(entry):
        return entry
    rec = _read_record(path)
    if rec is None or not rec.get("first_download"):
        return entry
    return dict(entry, sha256=rec["sha256"], size=rec.get("size"), pinned_by="first download")


def _remember_sha256(path: Path, st: os.stat_result, digest: str, first_download: bool = False) -> None:
    """Write the record through a temporary file renamed into place (concurrent writers each write a
    whole, equivalent record; readers never see half of one). A read-only cache just goes unrecorded.
    ``first_download``: the digest is the file's pin (nothing published; see :func:`_first_download_pins`)."""
    rec: Dict[str, Any] = {"file": _stat_key(path, st), "sha256": digest}
    if first_download:
        rec.update(first_download=True, size=st.st_size)
    try:
        with atomic_write(_record_path(path), "w", encoding="utf-8") as f:
            json.dump(rec, f)
    except OSError:
        pass


def _cached_problem(path: Path, entry: Dict[str, Any], *, rehash: bool = False) -> Optional[str]:
    """What is wrong with the cached ``path`` for ``entry`` (None: it matches all that the manifest pins, or
    what its first download recorded). The size is checked every time, the digest once per version of the
    file (see the module docstring), or again with ``rehash``."""
    pins = _first_download_pins(path, entry)
    st = path.stat()
    size = pins.get("size")
    if size is not None and st.st_size != size:
        return f"size {st.st_size} bytes, expected {size}"
    if not (pins.get("sha256") or pins.get("sha256_prefix") or pins.get("md5")):
        return None
    got = None if rehash else _recorded_sha256(path, st)
    if got is None:
        got = sha256_file(path)
        problem = _digest_problem(got, pins, md5_file(path) if pins.get("md5") else None)
        after = path.stat()
        if problem is None and _stat_key(path, after) == _stat_key(path, st):  # unchanged while hashed
            _remember_sha256(path, st, got, first_download=pins is not entry)
        return problem
    return _digest_problem(got, pins)


def _corrupt_message(model: str, path: Path, problem: str) -> str:
    return (f"the cached file at {path} is corrupt or incomplete ({problem}). Run "
            f"`audio-repr download {model} --force` (Python: audio_repr.weights.download({model!r}, force=True)) "
            f"to fetch it again, or delete it.")


def cache_status(model: str) -> str:
    """The state of ``model``'s file in the cache: ``"absent"``; ``"verified"`` (it matches the size and
    hash the manifest pins; hashed once per version of the file, then remembered); ``"unpinned"`` (present,
    and the manifest pins nothing to check it against: checked against the digest recorded at its first
    download, when it has one); ``"corrupt"`` (it fails the check)."""
    entry = manifest_entry(model)
    path = cache_dir() / entry["filename"]
    if not path.is_file():
        return "absent"
    if _cached_problem(path, entry):
        return "corrupt"
    return "verified" if _pinned(entry) else "unpinned"


def cached_ok(model: str) -> bool:
    """True when the cache holds a usable file for ``model`` (``cache_status`` is verified or unpinned)."""
    return cache_status(model) in ("verified", "unpinned")


# --- where to get the files ---------------------------------------------------------------------------------------

def _hf_url(entry: Dict[str, Any]) -> str:
    base = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return f"{base}/{entry['hf_repo']}/resolve/{entry.get('revision') or 'main'}/{entry['hf_filename']}"


def _source_url(entry: Dict[str, Any]) -> str:
    return entry.get("url") or (_hf_url(entry) if entry.get("hf_repo") else "(no public source)")


def _guidance(entry: Dict[str, Any], weights_option: bool = True) -> str:
    """Where to get the file and where to put it. ``weights_option``: also name ``--weights``/``weights=``
    (not for ``download``, which takes neither)."""
    served = entry.get("hf_filename") or Path(urllib.parse.unquote(urllib.parse.urlsplit(
        entry.get("url") or "").path)).name or entry["filename"]
    get = f"Get {served} from\n  {_source_url(entry)}\n"
    if served != entry["filename"]:
        get += f"(the server names it {served}; save it as {entry['filename']} in the cache or mirror folder)\n"
    where = (f"put it in the cache folder {cache_dir()} (AUDIO_REPR_CACHE), or in a mirror folder named by "
             f"AUDIO_REPR_MIRROR (a folder or an http(s):// URL)")
    if weights_option:
        where = (f"either pass it with --weights PATH (embed, tag, evaluate, plot) or weights='path/to/"
                 f"{entry['filename']}' (Python), " + where)
    return f"{get}and {where}. Licence: {entry.get('licence', 'see the source')}"


def _where_to_put(model: str, entry: Dict[str, Any], weights_option: bool = True) -> str:
    return f"weights for {model!r} ({entry['filename']}) were not found.\n" + _guidance(entry, weights_option)


def _reason(e: BaseException) -> str:
    """One line: the exception and, where they add something, its causes (a wrapper's own message is
    generic; the 404 or the refused connection is in its cause)."""
    parts: List[str] = []
    seen = set()
    while e is not None and id(e) not in seen and len(parts) < 4:
        seen.add(id(e))
        text = " ".join(str(e).split())
        if not parts or (text and text not in " ".join(parts)):
            parts.append(f"{type(e).__name__}: {text}" if text else type(e).__name__)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return "; caused by ".join(parts)


def _mirror() -> Optional[str]:
    return os.environ.get("AUDIO_REPR_MIRROR") or None


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _mirror_urls(mirror: str, model: str, entry: Dict[str, Any]) -> List[str]:
    base = mirror.rstrip("/")
    name = urllib.parse.quote(entry["filename"])
    return [f"{base}/{name}", f"{base}/{urllib.parse.quote(model)}/{name}"]


def _mirror_file(model: str, entry: Dict[str, Any]) -> Optional[Path]:
    """The file in a local ``AUDIO_REPR_MIRROR`` folder (flat or under ``model/``), hash-checked; None if
    absent (or when the mirror is a URL)."""
    mirror = _mirror()
    if mirror and not _is_url(mirror):
        for cand in (Path(mirror) / entry["filename"], Path(mirror) / model / entry["filename"]):
            if cand.is_file():
                _check_file(cand, entry)
                return cand
    return None


def mirror_location(model: str, timeout: float = 5.0) -> Optional[str]:
    """Where ``AUDIO_REPR_MIRROR`` holds ``model``'s file (a path or a URL; not hashed here), or None."""
    mirror = _mirror()
    if not mirror:
        return None
    entry = manifest_entry(model)
    if not _is_url(mirror):
        for cand in (Path(mirror) / entry["filename"], Path(mirror) / model / entry["filename"]):
            if cand.is_file():
                return str(cand)
        return None
    for url in _mirror_urls(mirror, model, entry):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers=_HEADERS),
                                        timeout=timeout) as r:
                if r.status == 200:
                    return url
        except (OSError, ValueError):
            continue
    return None


# --- resolution and downloads ---------------------------------------------------------------------------------------

def resolve(model: str, weights: Optional[os.PathLike | str] = None, *, download_missing: bool = True) -> Path:
    """Find (or fetch) the weights file of ``model`` following the resolution order above."""
    if weights is not None:
        return _given_weights(model, weights)
    entry = manifest_entry(model)
    cached = cache_dir() / entry["filename"]
    if cached.is_file():
        problem = _cached_problem(cached, entry)
        return cached if not problem else _instead_of_corrupt(model, entry, cached, problem)
    found = _mirror_file(model, entry)
    if found is not None:
        return found
    mirror = _mirror()
    if download_missing and (not is_offline() or (mirror and _is_url(mirror))):
        return _download(model, weights_option=True)
    raise WeightsNotFoundError(_where_to_put(model, entry) + ("\n(offline mode is on)" if is_offline() else ""))


def _given_weights(model: str, weights: os.PathLike | str) -> Path:
    """``weights=``: a file, or a folder holding the manifest's file name (else the folder itself: a folder in
    another format, e.g. a transformers save, that the family reads)."""
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


def _instead_of_corrupt(model: str, entry: dict, cached: Path, problem: str) -> Path:
    """A verified copy in the mirror serves instead of a corrupt cached file (a local one in place, an http one
    replaces the file); none: :class:`HashMismatchError`."""
    mirror = _mirror()
    found = None
    if mirror and not _is_url(mirror):
        with contextlib.suppress(HashMismatchError):
            found = _mirror_file(model, entry)
    elif mirror:
        with contextlib.suppress(WeightsError):
            found = _download(model, force=True, weights_option=True, official=False)
    if found is None:
        raise HashMismatchError(_corrupt_message(model, cached, problem))
    print(f"audio-repr: {model}: the cached file at {cached} is corrupt or incomplete ({problem}); using the "
          f"verified copy from the mirror {found if mirror and not _is_url(mirror) else mirror}", file=sys.stderr)
    return found


def download(model: str, *, force: bool = False, progress: Optional[bool] = None) -> Path:
    """Fetch ``model``'s weights into the cache, verified; returns the cached path.
    The mirror (``AUDIO_REPR_MIRROR``, a folder or an http(s) URL) is used before the official source. A
    cached file is returned as it is only when it passes verification; one that fails is replaced.
    ``progress``: a progress bar in bytes on stderr (default: when stderr is a terminal)."""
    return _download(model, force=force, progress=progress, weights_option=False)


def download_model(model: str, *, force: bool = False, progress: Optional[bool] = None) -> Dict[str, Path]:
    """:func:`download` of ``model``'s weights and of the companion files its card names (a text tower's tokenizer
    and encoder): ``{model or companion name: cached path}``, the weights first."""
    from .registry import get_card

    out = {model: download(model, force=force, progress=progress)}
    for extra in get_card(model).companions:
        out[extra] = download(extra, force=force, progress=progress)
    return out


def _download(model: str, *, force: bool = False, progress: Optional[bool] = None, weights_option: bool = True,
              official: bool = True) -> Path:
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
    mirror = _mirror()
    if mirror and _is_url(mirror):
        for url in _mirror_urls(mirror, model, entry):
            try:
                _fetch_verified(url, dest, entry, what=f"{model!r} from the mirror", progress=progress)
                return dest
            except WeightsNotFoundError as e:
                if e.status != 404:
                    raise WeightsNotFoundError(f"{e}\n{note}{_guidance(entry, weights_option)}") from e
        note += f"(the mirror {mirror} does not hold {entry['filename']})\n"
    else:
        found = _mirror_file(model, entry)
        if found is not None:
            _atomic_copy_verified(found, dest, entry)
            return dest
    if not official:
        raise WeightsNotFoundError(note + _where_to_put(model, entry, weights_option))
    if is_offline():
        raise WeightsNotFoundError(note + _where_to_put(model, entry, weights_option) + "\n(offline mode is on)")
    if not entry.get("url") and not entry.get("hf_repo"):
        raise WeightsNotFoundError(note + _where_to_put(model, entry, weights_option))
    if entry.get("hf_repo"):
        held = _hf_cached(entry)
        if held is not None:
            with contextlib.suppress(HashMismatchError):
                _atomic_copy_verified(held, dest, entry)
                return dest
    if entry.get("licence"):
        print(f"audio-repr: {model}: downloading {entry['filename']} under the licence: {entry['licence']}",
              file=sys.stderr)
    url = _source_url(entry)
    try:
        _fetch_verified(url, dest, entry, what=repr(model), progress=progress)
    except WeightsNotFoundError as e:  # the network failed (a bad download is a HashMismatchError)
        raise WeightsNotFoundError(f"{e}\n{note}{_guidance(entry, weights_option)}") from e
    return dest


def _hf_cached(entry: Dict[str, Any]) -> Optional[Path]:
    """The file in the local Hugging Face cache (``HF_HOME``), without any network access; None if absent."""
    try:
        from huggingface_hub import try_to_load_from_cache

        got = try_to_load_from_cache(entry["hf_repo"], entry["hf_filename"], revision=entry.get("revision"))
    except Exception:
        return None
    return Path(got) if isinstance(got, str) and os.path.isfile(got) else None


def download_all(family: Optional[str] = None, *, force: bool = False, progress: Optional[bool] = None,
                 on_done=None) -> Dict[str, Any]:
    """Fetch every file of the manifest (of the models of ``family``, with their companion files) into the
    cache, each as :func:`download` does. Returns ``{file name: path or the exception}``; a failure does
    not stop the others. ``on_done(model, path_or_exception)`` is called after each file."""
    from .registry import get_card, list_models

    owners: Dict[str, str] = {}
    families = set()
    for name in list_models():
        card = get_card(name)
        families.add(card.family)
        if family is None or card.family == family:
            owners.setdefault(card.weights, name)
            for extra in card.companions:               # the files the model needs besides its weights
                owners.setdefault(manifest_entry(extra)["filename"], extra)
    if family is not None and family not in families:
        raise ValueError(f"unknown family {family!r}; the families are: {', '.join(sorted(families))}")
    for alias, entry in companion_files().items():
        if get_card(entry["for"]).weights in owners:
            owners.setdefault(entry["filename"], alias)
    results: Dict[str, Any] = {}
    for filename, model in owners.items():
        try:
            results[filename] = download(model, force=force, progress=progress)
        except WeightsError as e:
            results[filename] = e
        if on_done is not None:
            on_done(model, results[filename])
    return results


def verify_cache() -> List[Tuple[str, str, str]]:
    """Re-hash every manifest file in the cache (ignoring the remembered digests): ``[(file name, state,
    detail)]`` with state ``"ok"`` (matches the manifest's pins), ``"recorded"`` (not pinned; matches the
    digest recorded at its first download), ``"unchecked"`` (not pinned, no record: its digest is recorded
    now) or ``"mismatch"`` (detail: what is wrong and the fix)."""
    from .registry import get_card, list_models

    owner: Dict[str, str] = {}
    for name in list_models():
        owner.setdefault(get_card(name).weights, name)
    for alias, entry in companion_files().items():
        owner.setdefault(entry["filename"], alias)
    out: List[Tuple[str, str, str]] = []
    for filename in sorted(manifest()["files"]):
        path = cache_dir() / filename
        if not path.is_file():
            continue
        model = owner.get(filename, filename)
        entry = manifest_entry(model)
        pins = _first_download_pins(path, entry)
        problem = _cached_problem(path, entry, rehash=True)
        if problem:
            out.append((filename, "mismatch", _corrupt_message(model, path, problem)))
        elif _pinned(entry):
            out.append((filename, "ok", pin_summary(entry)))
        elif pins is not entry:
            out.append((filename, "recorded", f"not pinned; SHA-256 {pins['sha256']} as recorded at its first download"))
        else:
            st = path.stat()
            digest = sha256_file(path)
            _remember_sha256(path, st, digest, first_download=True)
            out.append((filename, "unchecked", f"not pinned and no digest recorded; recorded SHA-256 {digest} now"))
    return out


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
        digest = _check_file(Path(tmp), entry)
        _publish(tmp, dest)
    if not _pinned(entry):
        _remember_sha256(dest, dest.stat(), digest, first_download=True)


# --- HTTP: resume, retry, progress ------------------------------------------------------------------------------------

_HEADERS = {"User-Agent": "audio-repr (python urllib)"}
#: attempts after the first for a transient failure (timeout, reset, a dropped connection, 5xx, 429)
RETRIES = 5
#: seconds before the first retry; doubled each time (1, 2, 4, 8, 16 s)
BACKOFF = 1.0
_RETRY_STATUS = (408, 425, 429, 500, 502, 503, 504)
#: the progress bar when a call does not say: None = when stderr is a terminal (the CLI's ``-q`` sets False)
PROGRESS: Optional[bool] = None


class _Dropped(ConnectionError):
    """The server closed the connection before sending all the bytes it announced."""


def _transient(e: BaseException, received: int) -> bool:
    """Worth retrying: the connection broke or stalled, or the server is briefly unavailable. A refused
    connection or a name that does not resolve before any byte arrived means no network or no server:
    fail at once."""
    if isinstance(e, urllib.error.HTTPError):
        return e.code in _RETRY_STATUS
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, (TimeoutError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError, _Dropped)):
        return True
    import http.client
    import socket

    if isinstance(reason, (http.client.IncompleteRead, http.client.RemoteDisconnected, socket.timeout)):
        return True
    return received > 0 and isinstance(reason, OSError)


def _progress_bar(total: Optional[int], desc: str, enabled: Optional[bool]):
    if enabled is None:
        enabled = PROGRESS
    if enabled is None:
        enabled = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with huggingface_hub
        return None
    size = "{n_fmt}B/{total_fmt}B" if total else "{n_fmt}B"
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr, leave=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| " + size + " [{elapsed}<{remaining}, {rate_fmt}]"
                if total else "{desc}: " + size + " [{elapsed}, {rate_fmt}]")


def _fetch_verified(url: str, dest: Path, entry: Dict[str, Any], *, what: str, progress: Optional[bool] = None) -> None:
    fetch_url(url, dest, sha256=entry.get("sha256"), size=entry.get("size"), what=what,
              sha256_prefix=entry.get("sha256_prefix"), md5=entry.get("md5"), progress=progress,
              loose_prefix=entry.get("sha256_prefix_unconfirmed"))


def fetch_url(url: str, dest: Path, *, sha256: Optional[str], size: Optional[int] = None, what: str = "",
              timeout: float = 60.0, sha256_prefix: Optional[str] = None, md5: Optional[str] = None,
              progress: Optional[bool] = None, loose_prefix: Optional[str] = None) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, renamed only when the size and digests match
    (``sha256``; ``md5`` where only that is published; ``sha256_prefix``, as torch.hub checks the digits in
    hub file names). A dropped connection resumes where it stopped (HTTP ``Range``; from the start if the
    server ignores it), transient failures are retried with exponential backoff, up to ``RETRIES`` in a row
    without a byte of progress. Without
    any pin, the file's digest is recorded as its pin (trust on first use). On failure nothing is kept,
    not even the folders created for ``dest``."""
    dest = Path(dest)
    label = what or dest.name
    with _temp_beside(dest) as (fd, tmp):
        with os.fdopen(fd, "wb") as out:
            n, digest, got_md5 = _stream(url, out, label, timeout, progress)
        if size is not None and n != size:
            raise HashMismatchError(f"download of {url} gave {n} bytes, expected {size}; nothing was kept")
        if sha256 and digest != sha256:
            raise HashMismatchError(f"download of {url} has SHA-256 {digest}, expected {sha256}; nothing was kept")
        if sha256_prefix and not digest.startswith(sha256_prefix):
            raise HashMismatchError(f"download of {url} has SHA-256 {digest}, which does not start with "
                                    f"{sha256_prefix}; nothing was kept")
        if md5 and got_md5 != md5:
            raise HashMismatchError(f"download of {url} has MD5 {got_md5}, expected the published {md5}; "
                                    f"nothing was kept")
        if loose_prefix and not digest.startswith(loose_prefix):
            log.warning("%s: SHA-256 %s does not start with %s, the digits in its name (never confirmed upstream, "
                        "so not refused)", dest.name, digest, loose_prefix)
        if not sha256:
            log.warning("%s: no SHA-256 pinned in the manifest; downloaded file has %s (recorded)", dest.name, digest)
        _publish(tmp, dest)
    if not (sha256 or md5 or sha256_prefix or size):
        _remember_sha256(dest, dest.stat(), digest, first_download=True)
    return dest


class _Body:
    """What one download has received so far: written to ``out`` and hashed as it comes, with a progress bar."""

    def __init__(self, out, label: str, progress: Optional[bool]):
        self.out, self.label, self.progress = out, label, progress
        self.sha, self.md5 = hashlib.sha256(), hashlib.md5()
        self.n, self.total, self.bar = 0, None, None

    def restart(self) -> None:
        """The server sent the whole file again: start over."""
        self.out.seek(0)
        self.out.truncate()
        self.sha, self.md5, self.n = hashlib.sha256(), hashlib.md5(), 0
        if self.bar is not None:
            self.bar.reset(total=self.total)

    def receive(self, r) -> None:
        """Read response ``r`` (the rest of the file, or the whole file again) to its end."""
        if _resumed_at(r, self.n) != self.n:
            self.restart()
        length = r.headers.get("Content-Length")
        if length is not None and length.isdigit():
            self.total = self.n + int(length)
        if self.bar is None:
            self.bar = _progress_bar(self.total, self.label.replace("'", ""), self.progress)
        for block in iter(lambda: r.read(1 << 20), b""):
            self.out.write(block)
            self.sha.update(block)
            self.md5.update(block)
            self.n += len(block)
            if self.bar is not None:
                self.bar.update(len(block))
        if self.total is not None and self.n < self.total:
            raise _Dropped(f"connection closed after {self.n} of {self.total} bytes")


def _give_up(e: Exception, url: str, label: str, attempt: int, n: int, before: int) -> None:
    """Raise the download's error when ``e`` is not worth a retry (not a network error, not transient, or
    ``RETRIES`` failures in a row without progress); return to retry."""
    import http.client

    if not isinstance(e, (OSError, http.client.HTTPException)):     # e.g. ValueError: a malformed URL
        raise WeightsNotFoundError(f"could not download {label} from {url}: {_reason(e)}") from e
    if (attempt >= RETRIES and n == before) or not _transient(e, n):
        err = WeightsNotFoundError(f"could not download {label} from {url}: {_reason(e)}"
                                   + (f" (after {attempt} retries)" if attempt else ""))
        err.status = e.code if isinstance(e, urllib.error.HTTPError) else None
        raise err from e


def _stream(url: str, out, label: str, timeout: float, progress: Optional[bool]) -> Tuple[int, str, str]:
    """Write ``url``'s body to ``out``: (bytes, SHA-256, MD5). Resumes and retries as :func:`fetch_url` says."""
    body = _Body(out, label, progress)
    attempt = 0
    try:
        while True:
            before = body.n
            headers = dict(_HEADERS, **({"Range": f"bytes={body.n}-"} if body.n else {}))
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
                    body.receive(r)
                out.flush()
                return body.n, body.sha.hexdigest(), body.md5.hexdigest()
            except Exception as e:      # URLError/HTTPError, timeouts, resets, http.client's IncompleteRead & co.
                _give_up(e, url, label, attempt, body.n, before)
            # a failure after progress starts the count again: a long download over a flaky link goes on as
            # long as each connection brings bytes; RETRIES failures in a row without any end it
            attempt = 1 if body.n > before else attempt + 1
            wait = BACKOFF * 2 ** (attempt - 1)
            log.warning("%s: connection lost after %d bytes; retrying in %.3g s (%d/%d)%s", label, body.n, wait,
                        attempt, RETRIES, ", resuming" if body.n else "")
            time.sleep(wait)
    finally:
        if body.bar is not None:
            body.bar.close()


def _resumed_at(r, n: int) -> int:
    """Where the response's body starts in the file: ``n`` when a ``Range`` request was honoured (206 with a
    matching ``Content-Range``), 0 when the server sent the whole file."""
    if not n:
        return 0
    if getattr(r, "status", None) == 206:
        cr = r.headers.get("Content-Range", "")
        try:
            first = int(cr.split()[1].split("-")[0])
        except (IndexError, ValueError):
            return 0
        return n if first == n else 0
    return 0


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


def numpy_safe_globals() -> list:
    """What unpickling numpy arrays and scalars of integer, float and bool dtypes needs, and nothing else:
    the array reconstructor, ``ndarray``, ``dtype`` and its integer/float/bool classes, the scalar
    constructor, under both of numpy's module names (files written under numpy 1.x name
    ``numpy.core.multiarray``, numpy 2 writes ``numpy._core.multiarray``). None of them runs code from the
    file: they rebuild arrays from raw bytes. Trainers pickle such arrays (PANNs' sampler state)."""
    import numpy as np

    try:
        from numpy._core import multiarray as ma                 # numpy >= 2
    except ImportError:                                          # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma
    # ``bytes``: protocol-2 pickles build the reconstructor's empty ``b''`` argument by calling it
    out: list = [ma._reconstruct, np.ndarray, np.dtype, ma.scalar, bytes]
    out += sorted({type(np.dtype(t)) for t in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                                              "f2", "f4", "f8")}, key=lambda t: t.__name__)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(ma._reconstruct, f"{mod}._reconstruct"), (ma.scalar, f"{mod}.scalar")]
    return out


def _global_name(g: Any) -> str:
    return g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"


def load_checkpoint(path: os.PathLike | str, *, allow: Sequence = (), inert_others: bool = False,
                    hint: str = "") -> Any:
    """Read a checkpoint without running pickled code: safetensors, or ``torch.load(weights_only=True)``.

    Numpy arrays and scalars of integer, float and bool dtypes (:func:`numpy_safe_globals`) and argparse
    ``Namespace`` objects (a trainer's ``args``: attributes set from the file, no code) are always allowed.
    ``allow``: further globals the file may name (``torch.serialization.safe_globals`` entries). ``inert_others``: every other global the file
    names is read as an inert placeholder instead of refusing the file (training checkpoints that pickle
    their ``args``). ``hint`` is added to the error."""
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
    extra = numpy_safe_globals() + [argparse.Namespace] + list(allow)
    old_torch = not hasattr(ser, "get_unsafe_globals_in_checkpoint")     # torch < 2.6, below the floor
    if old_torch:   # no (object, name) pairs there: plain files still load, numpy-1.x names and trainer objects do not
        extra = [g for g in extra if not isinstance(g, tuple)]
        hint += (f" (this is torch {torch.__version__}; audio-repr needs torch >= 2.6 to read trainer checkpoints "
                 f"safely)")
    elif inert_others:
        try:
            others = ser.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # not a zip-format checkpoint: let torch.load report what is wrong
            others = []
        known = {_global_name(g) for g in extra}
        extra += [(type("Inert", (_Inert,), {}), name) for name in others if name not in known]
    try:
        # torch >= 2.6 (the floor): safe_globals takes (object, "module.name") pairs, which map the names older
        # files use (numpy.core.multiarray) onto today's objects, and get_unsafe_globals_in_checkpoint exists
        with (ser.safe_globals(extra) if hasattr(ser, "safe_globals") else contextlib.nullcontext()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        import re

        named = re.search(r"(?:Unsupported global|GLOBAL|global): ?(?:GLOBAL )?([\w.]+)", str(e))
        if named:      # a well-formed file that pickles something besides tensors, arrays and plain values
            raise WeightsError(f"cannot read checkpoint {path} safely (torch.load weights_only=True): it pickles "
                               f"{named.group(1)}, which is neither a tensor, a numpy array nor a plain value; "
                               f"loading it could run code from the file, so it is refused{hint}.") from e
        raise WeightsError(f"cannot read checkpoint {path} safely (torch.load weights_only=True): "
                           f"{type(e).__name__}: {first}. "
                           f"The file is corrupt, truncated, or not a PyTorch checkpoint{hint}.") from e
