import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch

import fluxvit
from fluxvit.cli import main as cli
from fluxvit.errors import CheckpointError
from fluxvit.models.checkpoint import read_checkpoint


@pytest.fixture()
def model():
    torch.manual_seed(3)
    m = fluxvit.create_model("fluxvit_nano_patch14", num_classes=4, depth=2).eval()
    with torch.no_grad():  # make every part non-trivial
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _logits(m, seed=0):
    video = torch.randn(2, 3, 4, 56, 56, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return m(video, num_tokens=30, head=1)


@pytest.mark.parametrize("target", ["m.safetensors", "mdir"])
def test_roundtrip_keeps_logits_classes_and_budgets(tmp_path, model, target):
    path = fluxvit.save_checkpoint(model, tmp_path / target, classes=["a", "b", "c", "d"],
                                   extra={"note": "x"})
    loaded = fluxvit.create_model("fluxvit_nano_patch14", checkpoint=path, depth=2).eval()
    torch.testing.assert_close(_logits(loaded), _logits(model), atol=0, rtol=0)
    assert loaded.class_names == ["a", "b", "c", "d"] and loaded.budgets == model.budgets
    assert loaded.checkpoint_meta["note"] == "x"
    again = fluxvit.load_checkpoint(path)  # the file names its own architecture
    assert again.config.depth == 2 and again.num_classes == 4
    assert not list(tmp_path.rglob("*.part"))


def test_head_budgets_travel_with_the_weights(tmp_path):
    m = fluxvit.create_model("fluxvit_nano_patch14", num_classes=2, depth=1, head_budgets=(90, 30))
    path = fluxvit.save_checkpoint(m, tmp_path / "b.safetensors")
    loaded = fluxvit.load_checkpoint(path)
    assert loaded.budgets == (90, 30) and len(loaded.heads) == 2
    assert loaded.head_for(40) == 1


def test_class_count_mismatch_needs_reset_heads(tmp_path, model):
    path = fluxvit.save_checkpoint(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="has 4 classes but num_classes=9"):
        fluxvit.create_model("fluxvit_nano_patch14", num_classes=9, checkpoint=path)
    tuned = fluxvit.create_model("fluxvit_nano_patch14", num_classes=9, checkpoint=path, reset_heads=True)
    assert tuned.heads[0].weight.shape == (9, 192)
    torch.testing.assert_close(tuned.blocks[1].mlp.fc1.weight, model.blocks[1].mlp.fc1.weight)


def test_checkpoint_of_another_model_is_refused_in_plain_words(tmp_path, model):
    path = fluxvit.save_checkpoint(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="is a checkpoint for fluxvit_nano_patch14, not fluxvit_tiny"):
        fluxvit.create_model("fluxvit_tiny_patch14", checkpoint=path)
    raw = tmp_path / "raw.pth"
    torch.save(model.state_dict(), raw)  # no metadata: shapes must catch it
    with pytest.raises(CheckpointError, match="does not fit fluxvit_tiny_patch14: .* other shapes"):
        fluxvit.create_model("fluxvit_tiny_patch14", checkpoint=raw)


def test_positional_table_is_resized_for_another_grid(tmp_path, model):
    path = fluxvit.save_checkpoint(model, tmp_path / "m.safetensors")
    bigger = fluxvit.create_model("fluxvit_nano_patch14", checkpoint=path, depth=2, pos_grid=(8, 10, 10))
    assert bigger.pos_embed.table.shape == (1, 96, 8, 10, 10)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, bad)
    with pytest.raises(CheckpointError, match="refused to load"):
        fluxvit.create_model("fluxvit_nano_patch14", checkpoint=bad)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError):
        fluxvit.create_model("fluxvit_nano_patch14", checkpoint=plain)
    assert not marker.exists()


def test_truncated_and_garbage_files_are_refused(tmp_path, model):
    good = fluxvit.save_checkpoint(model, tmp_path / "m.safetensors")
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        fluxvit.create_model("fluxvit_nano_patch14", checkpoint=cut)
    # Random bytes, seeded: every one is refused in one line. Some of them parse as pickle
    # opcodes far enough to trip the unpickler's stack (IndexError: seeds 17, 21, 58, ...) or memo
    # (KeyError: seeds 62, 66, 172), which once escaped as tracebacks.
    junk = tmp_path / "junk.pth"
    for seed in range(200):
        junk.write_bytes(np.random.default_rng(seed).bytes(1000))
        with pytest.raises(CheckpointError, match="junk.pth: not a readable PyTorch checkpoint"):
            fluxvit.create_model("fluxvit_nano_patch14", checkpoint=junk)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        fluxvit.create_model("fluxvit_nano_patch14", checkpoint=tmp_path / "absent.pth")


def _forged(path, header):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 16)
    return path


# What the safetensors library refuses by itself (so fluxvit keeps no header guard of its own):
# each forged header is one CheckpointError line naming the file, with the library's reason.
@pytest.mark.parametrize("header,match", [
    ({"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 1 << 42]}}, "file not fully covered"),
    ({"w": {"dtype": "F32", "shape": [1 << 40, 1 << 30], "data_offsets": [0, 16]}}, "overflow"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "invalid offset for tensor `b`"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, "invalid offset for tensor `a`"),  # a gap
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, "invalid shape, data type, or offset"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}, "invalid JSON in header"),
    ({"w": {"dtype": "F32"}}, "invalid JSON in header"),
])
def test_forged_safetensors_headers_are_refused_without_allocating(tmp_path, header, match):
    path = _forged(tmp_path / "forged.safetensors", header)
    with pytest.raises(CheckpointError, match=match) as info:
        read_checkpoint(path)
    assert str(info.value).startswith(f"{path}: not a valid safetensors file (") and "\n" not in str(info.value)


def test_huge_declared_header_is_refused(tmp_path):
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    with pytest.raises(CheckpointError, match="header too large"):
        read_checkpoint(path)


def test_cli_convert_and_errors(tmp_path, capsys):
    from official_format import official_state_dict

    src = tmp_path / "release.pth"
    torch.save({"module": official_state_dict(0)}, src)
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"c{i}\n" for i in range(400)))
    dst = tmp_path / "conv.safetensors"
    assert cli(["convert", str(src), str(dst), "--model", "fluxvit_small_patch14",
                "--classes", str(classes)]) == 0
    out = capsys.readouterr().out
    assert "400 classes, heads at 3072/2048/1024 tokens" in out
    model = fluxvit.load_checkpoint(dst)
    assert model.class_names[399] == "c399" and model.budgets == (3072, 2048, 1024)
    again = ["convert", str(dst), str(tmp_path / "x.safetensors"), "--model", "fluxvit_small_patch14"]
    assert cli(again) == 2
    assert "is not an official FluxViT release checkpoint" in capsys.readouterr().err
    assert cli(["convert", str(src), str(tmp_path / "y.safetensors"), "--model", "fluxvit_base_patch14"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit fluxvit_base_patch14" in err
