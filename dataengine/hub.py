"""Loading from the Hugging Face hub without hanging when there is no network.

huggingface_hub retries a dead connection for minutes. Before any `from_pretrained` of a hub id,
one bounded request (seconds) decides: reachable -> load normally; unreachable or HF_HUB_OFFLINE
-> load from the local cache only, or fail at once saying how to pre-download.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def load_errors() -> tuple:
    """What `from_pretrained` raises for a model folder that is damaged rather than absent: a cut
    config.json (JSONDecodeError, a ValueError), a truncated safetensors file (safetensors'
    SafetensorError, which is no OSError), missing keys or shapes that do not match
    (KeyError, TypeError, RuntimeError). Every model loader turns these into one line."""
    errs: list = [OSError, ValueError, KeyError, TypeError, RuntimeError, EnvironmentError]
    try:
        from safetensors import SafetensorError

        errs.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors is a dependency
        pass
    return tuple(errs)


def quiet_loading_bars() -> None:
    """No per-component "Loading weights" bars from transformers and diffusers when the output is
    not a terminal (a log file, CI, a cluster's stdout): there they are dozens of carriage-return
    lines, and our commands say what they load in one line of their own."""
    import sys

    if sys.stderr.isatty():
        return
    try:
        from transformers.utils import logging as tl

        tl.disable_progress_bar()
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        from diffusers.utils import logging as dl

        dl.disable_progress_bar()
    except ImportError:  # pragma: no cover - a dependency
        pass


class HubUnavailable(Exception):
    """The model is not in the local cache and the hub cannot be used; the message says what to do."""


HUB_PROBE_TIMEOUT_S = float(os.environ.get("DE_HUB_PROBE_TIMEOUT", "3"))


def _hub_reachable(repo: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One bounded request to the hub's model API, no retries. Reachable means a JSON answer
    (the hub answers JSON even for a missing repo); a refused or timed-out connection, or a
    non-JSON page from something in between (a captive proxy), is unreachable."""
    import requests

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    try:
        r = requests.get(f"{endpoint}/api/models/{repo}", timeout=timeout)
    except requests.RequestException:
        return False
    return "json" in r.headers.get("Content-Type", "")


# what to try without the real weights: the toy models ship inside the package and know the toy world
TOY_NEXT = {
    "--model": ("To try the pipeline without them: `de synth world/ --world 12 && de ingest world/ && de caption "
                "--model toy` (the toy captioner knows only that toy world)."),
    "--base-model": ("To try the pipeline without them: `de synth world/ --world 12 && de ingest world/ && train "
                     "--preset toy --query \"1=1\"` (the toy SANA-Video knows only that toy world)."),
}


def offline_help(repo: str, flag: str) -> str:
    return (f"Pre-download it where there is network: `huggingface-cli download {repo}` (or `hf download {repo}`), "
            f"then copy ~/.cache/huggingface (or set HF_HOME) to this machine; or pass a local folder to {flag} "
            f"(e.g. {flag} /models/{repo.split('/')[-1]}). Set HF_HUB_OFFLINE=1 to never try the network. "
            + TOY_NEXT.get(flag, ""))


def local_files_only(repo: str, flag: str, marker: str = "config.json") -> bool:
    """True when the hub must not be contacted for `repo`: HF_HUB_OFFLINE is set, or the hub is
    unreachable (checked once, in seconds, instead of huggingface_hub's minutes of retries). An
    unreachable hub with the model not in the local cache is HubUnavailable saying what to do.
    `marker` is a file every snapshot of the repo has (model_index.json for a diffusers pipeline)."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise HubUnavailable(f"'{repo}' is neither a folder on this machine nor a hub model id (namespace/name): "
                             f"check the path given to {flag}") from None
    cached = isinstance(try_to_load_from_cache(repo, marker), str)
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        if not cached:
            raise HubUnavailable(f"model '{repo}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                             "set. " + offline_help(repo, flag))
        return True
    if _hub_reachable(repo):
        return False
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if not cached:
        raise HubUnavailable(f"cannot reach the Hugging Face hub ({endpoint}) and model '{repo}' is not in "
                             "the local cache. " + offline_help(repo, flag))
    log.warning("the hub (%s) is unreachable: loading %s from the local cache", endpoint, repo)
    return True
