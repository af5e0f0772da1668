"""Hub-style checkpoint folders: ``save_pretrained`` -> ``from_pretrained`` (local folders, a
Hugging Face cache laid out by hand, a monkeypatched push), all offline."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

import fluxvit
from fluxvit.cli import main
from fluxvit.errors import CheckpointError, ConfigError
from fluxvit.evaluate.token_optimization import stored_grid
from fluxvit.flux.grid import Grid
from fluxvit.models.card import MARKER
from fluxvit.models.checkpoint import FOLDER_FILES, update_checkpoint
from tests.hostile.media import clip

CLASSES = ["red", "green", "blue", "grey"]
CHOICE = {"grid": "8x56x56", "top1": 81.25, "decision": "switched: 8x56 +3 videos (2.1 SE)",
          "device": "cpu", "dtype": "float32"}
FILES = sorted(FOLDER_FILES)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a connection fails the test: everything here is offline."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to reach the network: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def model():
    """A 2-block FluxViT-nano, 4 named classes, default grid 4x56, one stored TO choice (32 tokens)."""
    torch.manual_seed(0)
    m = fluxvit.create_model("fluxvit_nano_patch14", num_classes=len(CLASSES), depth=2, default_grid=(4, 56))
    m.class_names = list(CLASSES)
    m.checkpoint_meta = {"token_optimization": {"32": dict(CHOICE)}}
    return m.eval()


def _one_line(exc: pytest.ExceptionInfo, *needles: object) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    for needle in needles:
        assert str(needle) in text, (needle, text)
    return text


def _assert_same_model(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    video = torch.randn(2, 3, 4, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for tokens in (32, 64):
            assert torch.equal(a(video, num_tokens=tokens), b(video, num_tokens=tokens))


# ----------------------------------------------------------------------------- local folders
def test_save_then_load_keeps_weights_classes_budgets_and_choices(tmp_path, model):
    folder = model.save_pretrained(tmp_path / "nano")
    assert folder == tmp_path / "nano" and sorted(os.listdir(folder)) == FILES

    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == "fluxvit_nano_patch14" and config["classes"] == CLASSES
    assert config["head_budgets"] == [256, 128, 64] and config["config"]["depth"] == 2
    assert config["config"]["default_grid"] == [4, 56] and config["fluxvit_version"] == fluxvit.__version__
    assert config["token_optimization"] == {"32": CHOICE}
    assert (folder / "classes.txt").read_text() == "red\ngreen\nblue\ngrey\n"
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: fluxvit\n") and MARKER in card
    assert "| 0 | 256 |\n| 1 | 128 |\n| 2 | 64 |" in card
    assert "| 32 | 8x56x56 | 81.25 | switched: 8x56 +3 videos (2.1 SE) | cpu float32 |" in card
    assert "4 classes, in `classes.txt` in label order: red, green, blue, grey." in card
    assert 'fluxvit.from_pretrained("nano")' in card and "Default grid: 4x56." in card

    loaded = fluxvit.from_pretrained(folder)
    assert loaded.name == "fluxvit_nano_patch14" and loaded.class_names == CLASSES
    assert loaded.budgets == (256, 128, 64) and loaded.config.default_grid == (4, 56)
    assert stored_grid(loaded.checkpoint_meta, 32) == Grid(8, 56, 56, budget=32)
    _assert_same_model(model, loaded.eval())
    # the one directory format: load_checkpoint reads the same folder, from a str path too
    _assert_same_model(model, fluxvit.load_checkpoint(str(folder)).eval())


def test_the_folder_loads_through_the_command_line(tmp_path, model, capsys):
    folder = model.save_pretrained(tmp_path / "nano")
    video = clip(tmp_path, "clip.mp4", 12)
    code = main(["predict", str(video), "--checkpoint", str(folder), "--budget", "32", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (pred,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    # --budget 32 without --grid took the Token Optimization choice stored in config.json
    assert pred["tokens"] == 32 and pred["grid"].startswith("8x56")
    assert sorted(t["label"] for t in pred["top"]) == sorted(CLASSES)
    assert sum(t["prob"] for t in pred["top"]) == pytest.approx(1.0, abs=1e-4)


def test_storing_new_choices_updates_config_and_card(tmp_path, model):
    folder = model.save_pretrained(tmp_path / "nano")
    loaded = fluxvit.from_pretrained(folder)
    choice = {"grid": "4x56x56", "top1": 75.0, "decision": "default grid is the best"}
    update_checkpoint(loaded, folder, lambda meta: {"token_optimization": {**meta["token_optimization"],
                                                                           "48": choice}})
    again = fluxvit.from_pretrained(folder)
    assert stored_grid(again.checkpoint_meta, 48) == Grid(4, 56, 56, budget=48)
    assert stored_grid(again.checkpoint_meta, 32) == Grid(8, 56, 56, budget=32)
    card = (folder / "README.md").read_text()
    assert card.index("| 32 | 8x56x56 |") < card.index("| 48 | 4x56x56 | 75.0 | default grid is the best |")


def test_a_non_empty_folder_needs_overwrite_and_a_users_card_is_kept(tmp_path, model):
    folder = tmp_path / "nano"
    folder.mkdir()
    (folder / "README.md").write_text("# my own card\n")
    with pytest.raises(CheckpointError) as exc:
        model.save_pretrained(folder)
    _one_line(exc, folder, "not empty", "overwrite=True")
    assert os.listdir(folder) == ["README.md"]  # nothing written

    model.save_pretrained(folder, overwrite=True)
    assert sorted(os.listdir(folder)) == FILES and (folder / "README.md").read_text() == "# my own card\n"
    # a model without class names leaves no earlier classes.txt behind
    model.class_names = None
    model.save_pretrained(folder, overwrite=True)
    assert not (folder / "classes.txt").exists() and fluxvit.from_pretrained(folder).class_names is None

    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError) as exc:
        model.save_pretrained(tmp_path / "file")
    _one_line(exc, tmp_path / "file", "not a directory")
    with pytest.raises(ConfigError) as exc:
        model.save_pretrained(tmp_path / "nano.safetensors")
    _one_line(exc, "single-file checkpoint")


def test_classes_txt_names_the_classes_of_a_folder_whose_config_has_none(tmp_path, model):
    folder = model.save_pretrained(tmp_path / "nano")
    config = json.loads((folder / "config.json").read_text())
    config["classes"] = None
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "classes.txt").write_text("cat\ndog\n\nbird\nfish\n")
    # config.json is what the loader reads; the weights' header record still names the old classes
    assert fluxvit.from_pretrained(folder).class_names == ["cat", "dog", "bird", "fish"]


@pytest.mark.parametrize("damage, needles", [
    ("missing folder", ["no such checkpoint"]),
    ("corrupt config", ["config.json", "not valid JSON"]),
    ("config not an object", ["config.json", "not a JSON object"]),
    ("missing weights", ["has no model.safetensors"]),
    ("truncated weights", ["model.safetensors", "not a valid safetensors file"]),
])
def test_broken_folders_end_in_one_line(tmp_path, model, damage, needles):
    folder = model.save_pretrained(tmp_path / "nano")
    if damage == "missing folder":
        folder = tmp_path / "nowhere" / "nano"
    elif damage == "corrupt config":
        (folder / "config.json").write_text('{"model": "fluxvit_nano_patch14", ')
    elif damage == "config not an object":
        (folder / "config.json").write_text("[1, 2]")
    elif damage == "missing weights":
        (folder / "model.safetensors").unlink()
    else:
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as exc:
        fluxvit.from_pretrained(folder)
    _one_line(exc, *needles)


def test_local_folders_never_import_huggingface_hub(tmp_path, model, monkeypatch):
    model.save_pretrained(tmp_path / "user")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # any import of it now fails
    # "user/..." reads as a repo id, but a local folder of that name wins
    _assert_same_model(model, fluxvit.from_pretrained("user").eval())
    (tmp_path / "user" / "nano").mkdir()
    model.save_pretrained(tmp_path / "user" / "nano")
    _assert_same_model(model, fluxvit.from_pretrained("user/nano").eval())
    with pytest.raises(ConfigError) as exc:
        fluxvit.from_pretrained("user/missing")
    _one_line(exc, "user/missing", "needs huggingface_hub", "pip install 'fluxvit[hub]'")
    with pytest.raises(ConfigError) as exc:
        model.save_pretrained(tmp_path / "pushed", push_to_hub=True, repo_id="user/nano")
    _one_line(exc, "needs huggingface_hub", "pip install 'fluxvit[hub]'")
    assert not (tmp_path / "pushed").exists()  # refused before anything was written


# ----------------------------------------------------------------------------- the Hugging Face cache
@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache folder, named by HF_HOME/HF_HUB_CACHE, with HF_HUB_OFFLINE=1.
    huggingface_hub reads these variables once, at import, so its constants are set to match."""
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(cache.parent))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _put_in_cache(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> Path:
    """Lay ``folder``'s files out as a hub download leaves them: content-addressed blobs, a
    snapshot per commit of relative symbolic links to them, and a ref naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / revision).write_text(commit)
    return snapshot


def test_a_repo_id_loads_from_the_local_cache_offline(tmp_path, model, hf_cache):
    snapshot = _put_in_cache(hf_cache, "fluxvit-test/nano", model.save_pretrained(tmp_path / "nano"))
    assert (snapshot / "model.safetensors").is_symlink()
    loaded = fluxvit.from_pretrained("fluxvit-test/nano")
    assert loaded.class_names == CLASSES and loaded.budgets == (256, 128, 64)
    assert stored_grid(loaded.checkpoint_meta, 32) == Grid(8, 56, 56, budget=32)
    assert Path(loaded.checkpoint_path) == snapshot
    _assert_same_model(model, loaded.eval())
    # an explicit cache folder, asked for with local_files_only (the variable need not be set)
    other = tmp_path / "other_cache"
    _put_in_cache(other, "fluxvit-test/nano", tmp_path / "nano")
    _assert_same_model(model, fluxvit.from_pretrained("fluxvit-test/nano", cache_dir=other,
                                                      local_files_only=True).eval())


def test_a_repo_id_missing_from_the_cache_offline_ends_in_one_line(tmp_path, model, hf_cache):
    with pytest.raises(CheckpointError) as exc:
        fluxvit.from_pretrained("fluxvit-test/absent")
    _one_line(exc, "fluxvit-test/absent", "not in the Hugging Face cache", hf_cache, "HF_HUB_OFFLINE is set")
    _put_in_cache(hf_cache, "fluxvit-test/nano", model.save_pretrained(tmp_path / "nano"))
    with pytest.raises(CheckpointError) as exc:
        fluxvit.from_pretrained("fluxvit-test/nano", revision="v2")
    _one_line(exc, "fluxvit-test/nano", "not in the Hugging Face cache")
    # a cached repository that is not a fluxvit checkpoint folder
    other = tmp_path / "other"
    other.mkdir()
    (other / "README.md").write_text("# some other model\n")
    _put_in_cache(hf_cache, "someone/other", other)
    with pytest.raises(CheckpointError) as exc:
        fluxvit.from_pretrained("someone/other")
    _one_line(exc, "someone/other", "has no model.safetensors")


# ----------------------------------------------------------------------------- pushing
class FakeApi:
    """Stands in for huggingface_hub.HfApi: records what would be created and uploaded."""

    calls: list = []
    fail: Exception | None = None

    def __init__(self, token=None, **kwargs):
        self.token = token

    def create_repo(self, repo_id, private=None, repo_type=None, exist_ok=False, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, private, repo_type, exist_ok, self.token))

    def upload_folder(self, repo_id, folder_path, repo_type=None, allow_patterns=None, commit_message=None,
                      **kwargs):
        if FakeApi.fail is not None:
            raise FakeApi.fail
        folder = Path(folder_path)
        uploaded = {name: (folder / name).read_bytes() for name in sorted(allow_patterns)}
        FakeApi.calls.append(("upload_folder", repo_id, repo_type, uploaded, commit_message))
        return type("CommitInfo", (), {"commit_url": f"https://example.invalid/{repo_id}/commit/1"})()


@pytest.fixture
def fake_api(monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    FakeApi.calls, FakeApi.fail = [], None
    monkeypatch.setattr(hub, "HfApi", FakeApi)
    return FakeApi


def test_push_to_hub_uploads_the_checkpoint_files_only(tmp_path, model, fake_api):
    folder = tmp_path / "nano"
    folder.mkdir()
    (folder / "notes.txt").write_text("not part of the checkpoint")
    (folder / ".model.safetensors.part").write_text("a killed write's leftover")
    model.save_pretrained(folder, overwrite=True, push_to_hub=True, repo_id="fluxvit-test/nano", private=True,
                          token="hf_test")
    (create, upload) = fake_api.calls
    assert create == ("create_repo", "fluxvit-test/nano", True, "model", True, "hf_test")
    _, repo_id, repo_type, uploaded, message = upload
    assert (repo_id, repo_type) == ("fluxvit-test/nano", "model") and sorted(uploaded) == FILES
    for name in FILES:  # what went up is exactly what is on disk, and loads back
        assert uploaded[name] == (folder / name).read_bytes(), name
    assert message == f"fluxvit_nano_patch14 (fluxvit {fluxvit.__version__})"
    assert json.loads(uploaded["config.json"])["token_optimization"] == {"32": CHOICE}
    _assert_same_model(model, fluxvit.from_pretrained(folder).eval())


def test_push_errors_end_in_one_line(tmp_path, model, fake_api):
    with pytest.raises(ConfigError) as exc:
        model.save_pretrained(tmp_path / "a", push_to_hub=True)
    _one_line(exc, "needs a repo_id")
    with pytest.raises(ConfigError) as exc:
        model.save_pretrained(tmp_path / "a", push_to_hub=True, repo_id="not a/repo/id")
    _one_line(exc, "'not a/repo/id'", "user/name")
    with pytest.raises(ConfigError) as exc:
        model.save_pretrained(tmp_path / "a", repo_id="fluxvit-test/nano")
    _one_line(exc, "only used with push_to_hub=True")
    assert not (tmp_path / "a").exists() and fake_api.calls == []

    fake_api.fail = OSError("401 Client Error: Unauthorized for url\nInvalid credentials")
    with pytest.raises(CheckpointError) as exc:
        model.save_pretrained(tmp_path / "b", push_to_hub=True, repo_id="fluxvit-test/nano")
    _one_line(exc, "fluxvit-test/nano", "could not push", "401 Client Error")
    assert sorted(os.listdir(tmp_path / "b")) == FILES  # the folder is kept: push it again later
