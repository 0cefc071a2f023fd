"""Pretrained weights from the network, offline mode, and the one error a failed download raises.

The service never needs the network when a spec is local; when a spec needs a download and
none is possible, :class:`ModelDownloadError` says so and names the offline alternatives.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import open_clip

from crossmodal_kernel.specs import OFFLINE_OPTIONS


class ModelDownloadError(RuntimeError):
    """The spec needs weights from the network and none could be fetched."""


def offline() -> bool:
    """HF_HUB_OFFLINE as set now, not only when huggingface_hub was imported."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(f and f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def fetch_pretrained(spec: str, tag_cfg: dict) -> str:
    """Local path of a pretrained tag's weights (cache only when offline), or ModelDownloadError."""
    if "file" in tag_cfg:
        return str(tag_cfg["file"])
    try:
        if not offline():
            path = open_clip.pretrained.download_pretrained(tag_cfg)
            if path:
                return str(path)
            raise FileNotFoundError("the pretrained config names no download source")
        return _cached_pretrained(tag_cfg)
    except Exception as e:
        raise ModelDownloadError(download_message(spec, e)) from e


def _cached_pretrained(tag_cfg: dict) -> str:
    hub, url = tag_cfg.get("hf_hub", ""), tag_cfg.get("url", "")
    if hub:
        from huggingface_hub import hf_hub_download
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(hub)
        filename = filename or HF_WEIGHTS_NAME
        # Same preference as open_clip: a .safetensors twin first.
        safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else filename.rsplit(".", 1)[0] + ".safetensors"
        for name in (safe, filename):
            with contextlib.suppress(Exception):
                return str(hf_hub_download(repo, name, local_files_only=True))
        raise FileNotFoundError(f"{hub} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    if cached.is_file():
        return str(cached)
    raise FileNotFoundError(f"{url} is not in ~/.cache/clip and HF_HUB_OFFLINE is set")


def download_message(spec: str, error: BaseException) -> str:
    return (
        f"model spec {spec!r} needs weights from the network, and they could not be downloaded "
        f"({type(error).__name__}: {error}). Offline options: {OFFLINE_OPTIONS}."
    )


def is_network_error(error: BaseException | None) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return True
        if type(error).__module__.split(".")[0] in ("httpx", "httpcore", "requests", "urllib3"):
            return True
        if "couldn't connect to" in str(error) or "offline mode" in str(error).lower():
            return True  # transformers reports hub failures as a plain OSError with this text
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def network_errors_as_download_errors(spec: str) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if is_network_error(e):
            raise ModelDownloadError(download_message(spec, e)) from e
        raise


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers logs a load report and draws a progress bar; both are noise here."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
