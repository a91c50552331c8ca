"""Where model weights come from: a local folder/file or a Hugging Face Hub id.

Nothing here touches the network by itself. A Hub id is handed to the library's
``from_pretrained`` with ``local_files_only=True`` whenever ``HF_HUB_OFFLINE`` is set, so an
offline machine answers from the cache or fails at once. Any failure becomes ONE
:class:`ModelUnavailableError` that names the model, the places looked at and how to provide it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_TRUE = {"1", "ON", "YES", "TRUE"}


class ModelUnavailableError(FileNotFoundError):
    """Model weights could not be found or loaded. The message says how to provide them."""


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks never to use the network.

    Read from the environment at call time: huggingface_hub reads it once at import."""
    return any(
        os.environ.get(k, "").strip().upper() in _TRUE
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hf_cache_dir() -> Path:
    """The Hub cache folder the libraries use (``HF_HUB_CACHE`` / ``HF_HOME`` as they were when
    huggingface_hub was first imported in this process)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_hub_id(spec: str) -> bool:
    """``"org/name"`` that is not an existing local path."""
    return bool(_HUB_ID.match(spec)) and not Path(spec).expanduser().exists()


def _help(
    spec: str, what: str, option: str, looked: list[str], reason: str, include: tuple[str, ...]
) -> str:
    lines = [f"cannot load {what} '{spec}' ({option}).", "  looked at:"]
    lines += [f"    - {p}" for p in looked]
    lines.append(f"  reason: {reason}")
    lines.append("  to fix it, either:")
    if is_hub_id(spec):
        cmd = spec  # fetch only what we load, not every checkpoint variant of the repo
        if include:
            cmd += " --include " + " ".join(f"'{p}'" for p in include)
        lines += [
            f"    - on a machine with internet run `hf download {cmd}` (older huggingface_hub: "
            f"`huggingface-cli download {cmd}`); copy the cache folder here and point HF_HOME "
            "(or HF_HUB_CACHE) at it;",
            f"    - or `hf download {cmd} --local-dir DIR` and pass DIR with {option};",
            "    - set HF_HUB_OFFLINE=1 so nothing tries the network (missing models then fail "
            "at once).",
        ]
    else:
        lines.append(
            f"    - pass an existing folder/file with {option} (the path above is missing)."
        )
    return "\n".join(lines)


def load_pretrained(
    load: Callable[..., T],
    spec: str,
    *,
    what: str,
    option: str,
    include: tuple[str, ...] = (),
    **kwargs: Any,
) -> T:
    """``load(spec, local_files_only=..., **kwargs)`` with one helpful error on failure.

    Args:
        load: a ``from_pretrained`` class method (transformers or diffusers).
        spec: hub id or local folder.
        what: human name of the model, e.g. ``"the DINOv2 backbone"``.
        option: the config key / CLI flag that sets ``spec``, shown in the error.
        include: file patterns worth downloading (shown in the suggested ``hf download``).
        kwargs: passed on (``subfolder=...``, ``torch_dtype=...``).
    """
    local = Path(spec).expanduser()
    hub = is_hub_id(spec)
    looked = [f"local path {local.resolve()}: " + ("found" if local.exists() else "not found")]
    if not hub and not local.exists():
        raise ModelUnavailableError(
            _help(spec, what, option, looked, "not a local path and not an 'org/name' Hub id", ())
        )
    if hub:
        looked.append(f"Hugging Face cache {hf_cache_dir()}")
        looked.append(
            "the Hub: not contacted (HF_HUB_OFFLINE is set)" if offline() else "the Hub (download)"
        )
    try:
        return load(
            str(local) if not hub else spec, local_files_only=offline() or not hub, **kwargs
        )
    except (OSError, ValueError) as e:
        # OSError covers missing files/connection errors, ValueError bad ids; both need the help.
        reason = " ".join(str(e).split())[:400]
        raise ModelUnavailableError(_help(spec, what, option, looked, reason, include)) from e


def checkpoint_file(spec: str | None, *, what: str, option: str, source: str) -> Path:
    """An existing local checkpoint file, or one helpful error.

    Args:
        spec: the configured path (None = not configured).
        source: where a user gets the file, shown in the error.
    """
    if spec is None:
        raise ModelUnavailableError(
            f"{what} is required but not configured: set {option}.\n  get it from: {source}"
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(
            f"cannot load {what}: {path.resolve()} is not a file ({option}).\n"
            f"  get it from: {source}"
        )
    return path


def load_checkpoint(
    spec: str | None, *, what: str, option: str, source: str, hint: str = ""
) -> tuple[Path, Any]:
    """``(file, contents)`` of a weights-only torch checkpoint, or one helpful error."""
    import torch

    file = checkpoint_file(spec, what=what, option=option, source=source)
    try:
        return file, torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every unpickling failure gets the same message
        raise ModelUnavailableError(
            f"{file}: not a readable weights-only torch checkpoint ({e}).{hint}"
        ) from e


def fingerprint(spec: str | None, subfolder: str = "") -> str:
    """A short string that changes when the weights behind ``spec`` change (for cache keys).

    Local files/folders hash the names, sizes and modification times of their files; Hub ids use
    the commit of the cached snapshot when one exists (else the id itself)."""
    if spec is None:
        return "none"
    path = Path(spec).expanduser()
    if path.exists():
        base = path / subfolder if subfolder and path.is_dir() else path
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        h = hashlib.sha256(str(base.resolve()).encode())
        for f in files:
            st, name = f.stat(), f.relative_to(base) if f != base else f.name
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]
    refs = hf_cache_dir() / ("models--" + spec.replace("/", "--")) / "refs" / "main"
    try:
        return f"{spec}@{refs.read_text().strip()[:12]}"
    except OSError:
        return spec
