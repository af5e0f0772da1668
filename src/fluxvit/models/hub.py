"""Checkpoint folders in the Hugging Face hub's layout: saved, pushed, and found from a repo id.

The folder is this project's one directory checkpoint (:mod:`fluxvit.models.checkpoint`):
``model.safetensors``, ``config.json``, ``classes.txt`` and the ``README.md`` model card, so what
:func:`save_pretrained` writes is what ``fluxvit.load_checkpoint`` and every ``--checkpoint``
read, and what :func:`fluxvit.from_pretrained` loads.

huggingface_hub is optional and imported only here, only when a repo id (not an existing local
path) is named or a push is asked: a local folder never touches the network. With a repo id,
``snapshot_download`` fetches the four files into the Hugging Face cache (``HF_HUB_CACHE``/
``HF_HOME``), or, with ``HF_HUB_OFFLINE=1`` or ``local_files_only``, reads them from it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from fluxvit import __version__
from fluxvit.errors import CheckpointError, ConfigError, reason
from fluxvit.files import directory, new_or_empty_directory
from fluxvit.models.checkpoint import FOLDER_FILES, WEIGHTS_NAME, save_checkpoint

log = logging.getLogger(__name__)

INSTALL = "pip install 'fluxvit[hub]'"
# "user/name": what is looked up on the hub when no such local path exists. A path with more parts,
# or one that starts with ".", "/" or "~", is always a local path.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", re.ASCII)


def _hub(what: str):
    """The huggingface_hub module, or one line saying how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError(f"{what} needs huggingface_hub: {INSTALL}") from None
    return huggingface_hub


def is_repo_id(text: str) -> bool:
    """Whether ``text`` reads as a hub repo id ``user/name`` (``--`` and ``..`` are the hub's own
    refusals)."""
    return bool(_REPO_ID.fullmatch(text)) and "--" not in text and ".." not in text


# ---------------------------------------------------------------------------- saving
def save_pretrained(
    model,
    directory: str | os.PathLike,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    overwrite: bool = False,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> Path:
    """Save ``model`` (a FluxViT) as a checkpoint folder; returns the folder.

    A folder that exists and is not empty is refused unless ``overwrite`` (then the checkpoint's
    files are replaced and anything else there is left; a README.md that is not fluxvit's model
    card is kept). Each file is written atomically, weights first. ``push_to_hub`` then uploads the
    folder's checkpoint files to ``repo_id`` (``"user/name"``, created if needed, ``private`` as
    asked) with huggingface_hub, authenticated by ``token`` or the saved login.
    """
    folder = Path(directory)
    if folder.suffix == ".safetensors":
        raise ConfigError(f"{folder}: save_pretrained writes a folder, and a name ending in .safetensors is a "
                          "single-file checkpoint (use fluxvit.save_checkpoint for that)")
    if push_to_hub:
        _check_repo_id(repo_id)
        _hub("push_to_hub=True")  # before anything is written
    elif repo_id is not None:
        raise ConfigError(f"repo_id {repo_id!r} is only used with push_to_hub=True")
    _claim(folder, overwrite)
    save_checkpoint(model, folder)
    log.info("saved %s to %s", model.name or "the model", folder)
    if push_to_hub:
        upload_folder(folder, repo_id, private=private, token=token,
                      commit_message=commit_message or f"{model.name or 'FluxViT'} (fluxvit {__version__})")
    return folder


def _check_repo_id(repo_id: str | None) -> None:
    if not repo_id:
        raise ConfigError("push_to_hub=True needs a repo_id ('user/name')")
    if not isinstance(repo_id, str) or not is_repo_id(repo_id):
        raise ConfigError(f"repo_id {str(repo_id)[:100]!r} is not of the form 'user/name' (letters, digits, "
                          "'-', '_', '.')")


def _claim(folder: Path, overwrite: bool) -> None:
    """Refuse a path that is not a folder, or a non-empty folder without ``overwrite`` (then the
    error says to choose a new one or pass overwrite=True)."""
    if overwrite:
        if os.path.lexists(folder):
            directory(folder, "checkpoint folder", CheckpointError)
    else:
        new_or_empty_directory(folder, "checkpoint folder", CheckpointError, advice=" (or pass overwrite=True)")


def upload_folder(folder: str | os.PathLike, repo_id: str, private: bool | None = None, token: str | None = None,
                  commit_message: str | None = None):
    """Upload a checkpoint folder's files (only those: no temporary or stray files) to the hub
    model repository ``repo_id``, creating it if needed; returns huggingface_hub's commit info."""
    _check_repo_id(repo_id)
    hub = _hub("push_to_hub=True")
    folder = Path(folder)
    files = [name for name in FOLDER_FILES if (folder / name).is_file()]
    if WEIGHTS_NAME not in files:
        raise CheckpointError(f"{folder}: has no {WEIGHTS_NAME} to push")
    api = hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", allow_patterns=files,
                                 commit_message=commit_message or f"fluxvit {__version__}")
    except (OSError, ValueError) as e:  # HTTP, auth and connection errors are OSErrors; a bad id a ValueError
        raise CheckpointError(f"{repo_id}: could not push {folder} to the Hugging Face hub ({reason(e)})") from None
    log.info("pushed %s to %s", folder, getattr(info, "commit_url", repo_id))
    return info


# ---------------------------------------------------------------------------- finding
def resolve(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | None = None,
    local_files_only: bool = False,
) -> Path:
    """The local checkpoint path for ``name_or_path``: itself when it exists or cannot be a repo
    id (a missing one is then refused by the loader, naming it), else the folder of repo
    ``user/name`` in the Hugging Face cache, downloaded there first unless offline."""
    if not isinstance(name_or_path, str | os.PathLike):
        raise ConfigError(f"a checkpoint folder or hub repo id is a path or a string, not "
                          f"{type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    path = Path(text)
    try:
        local = path.exists() or path.is_symlink() or not is_repo_id(text)
    except (OSError, ValueError):  # a NUL byte, a name too long: the loader names the problem
        local = True
    if local:
        return path
    hub = _hub(f"{text}: no such local folder; loading it as a Hugging Face hub repo id")
    from huggingface_hub import constants, errors

    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    try:
        snapshot = hub.snapshot_download(text, revision=revision, cache_dir=cache_dir, token=token,
                                         local_files_only=local_files_only, allow_patterns=list(FOLDER_FILES),
                                         library_name="fluxvit", library_version=__version__)
    except errors.LocalEntryNotFoundError:
        off = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else
               "local_files_only=True" if local_files_only else "the hub could not be reached")
        raise CheckpointError(f"{text}: no such local folder, and not in the Hugging Face cache {cache} "
                              f"({off})") from None
    except errors.RevisionNotFoundError:
        raise CheckpointError(f"{text}: the Hugging Face hub has no revision {revision!r} of it") from None
    except errors.RepositoryNotFoundError:
        raise CheckpointError(f"{text}: no such local folder, nor a model repository on the Hugging Face hub "
                              "that this login may read (private or gated: log in, or pass token=)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{text}: could not download from the Hugging Face hub ({reason(e)})") from None
    folder = Path(snapshot)
    if not (folder / WEIGHTS_NAME).exists():
        raise CheckpointError(f"{text}: the repository has no {WEIGHTS_NAME} (not a fluxvit checkpoint folder)")
    log.info("%s: using %s", text, folder)
    return folder
