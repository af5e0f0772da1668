"""``fluxvit features``: clip embeddings and token features of labelled or unlabelled videos."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import fluxvit
from fluxvit.cli import main as cli
from fluxvit.evaluate.predict import read_views
from fluxvit.evaluate.runner import Views
from fluxvit.flux.grid import Grid

from .conftest import CLASSES


def _metadata(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_token_features_match_the_model_and_their_positions(setup, tmp_path, capsys):
    """From an annotation file with --tokens and a budget: every row's pooled feature is the mean
    over its views of the projector's output, the token features are the last block's (class token
    left out), the kept indices are the selector's, and each position is its index's (t, y, x)."""
    _, data, ckpt = setup
    out = tmp_path / "f.safetensors"
    assert cli(["features", str(data.val_csv), "--checkpoint", str(ckpt), "--budget", "24", "--views", "2x1",
                "--tokens", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    t = load_file(str(out))
    assert summary["rows"] == 8 and summary["broken"] == 0
    assert t["features"].shape == (8, 192) and t["tokens"].shape == (8, 2, 24, 96)
    assert t["kept"].shape == (8, 2, 24) and t["positions"].shape == (8, 2, 24, 3)
    assert t["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and t["index"].tolist() == list(range(8))
    meta = _metadata(out)
    assert meta["grid"] == "4x56" and meta["budget"] == "24" and meta["views"] == "2x1"
    assert meta["model"] == "fluxvit_nano_patch14" and json.loads(meta["classes"]) == CLASSES
    videos = json.loads(meta["videos"])
    assert len(videos) == 8 and videos[0].endswith(".mp4")

    model = fluxvit.load_checkpoint(ckpt).eval()
    grid = Grid(4, 56, budget=24)
    for row in (0, 5):
        clip = read_views(videos[row], grid, Views(2, 1))
        with torch.no_grad():
            tokens, kept = model.forward_features(clip, num_tokens=24, return_indices=True)
            emb = model.forward_head(tokens, int(meta["head"]), pre_logits=True)
        assert torch.allclose(t["features"][row], emb.mean(0), atol=1e-5)
        assert torch.allclose(t["tokens"][row], tokens[:, 1:], atol=1e-5)
        assert torch.equal(t["kept"][row], kept)
    flat = t["kept"]  # grid 4x56: 4 frames of 4x4 patches
    assert torch.equal(t["positions"][..., 0], flat // 16)
    assert torch.equal(t["positions"][..., 1], (flat % 16) // 4)
    assert torch.equal(t["positions"][..., 2], flat % 4)
    assert int(t["positions"][..., 0].max()) == 3 and int(t["positions"][..., 1:].max()) == 3


def test_unlabelled_folder_skips_and_names_broken_videos(setup, tmp_path, capsys):
    """A folder of videos needs no labels: every readable video gets a row, the broken one is
    skipped, counted and named; without a budget the positions cover the whole grid in order."""
    _, data, ckpt = setup
    folder = tmp_path / "clips"
    shutil.copytree(data.val_csv.parent / "val", folder)
    (folder / "zz_broken.mp4").write_bytes(b"not a video" * 20)
    out = tmp_path / "u.safetensors"
    assert cli(["features", str(folder), "--checkpoint", str(ckpt), "--tokens", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "9 videos (1 broken)" in captured.out and "zz_broken.mp4" in captured.err
    t = load_file(str(out))
    assert "labels" not in t and "kept" not in t
    assert t["tokens"].shape == (8, 1, 64, 96)
    assert t["positions"][0, 0].tolist()[:5] == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 1, 0]]
    meta = _metadata(out)
    videos, broken = json.loads(meta["videos"]), json.loads(meta["broken"])
    bad = [i for i, v in enumerate(videos) if v.endswith("zz_broken.mp4")]
    assert len(videos) == 9 and len(bad) == 1
    assert t["index"].tolist() == [i for i in range(9) if i != bad[0]]  # every input but the broken one
    assert len(broken) == 1 and "zz_broken.mp4" in broken[0]


@pytest.mark.parametrize("case", ["suffix", "exists", "input", "cap", "bad_views"])
def test_bad_outputs_and_values_are_one_line(setup, tmp_path, capsys, monkeypatch, case):
    _, data, ckpt = setup
    out, args = tmp_path / "f.safetensors", []
    expected = {"suffix": ".safetensors file", "exists": "exists", "input": "is an input of this command",
                "cap": "FLUXVIT_MAX_FEATURE_BYTES", "bad_views": "views 0x1"}[case]
    if case == "suffix":
        out = tmp_path / "f.pt"
    elif case == "exists":
        out.write_bytes(b"earlier")
    elif case == "input":
        out = ckpt
    elif case == "cap":
        monkeypatch.setenv("FLUXVIT_MAX_FEATURE_BYTES", "100000")
        args = ["--tokens"]
    else:
        args = ["--views", "0x1"]
    before = out.read_bytes() if out.exists() else None
    assert cli(["features", str(data.val_csv), "--checkpoint", str(ckpt), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err
    assert (out.read_bytes() if out.exists() else None) == before  # nothing written or replaced
