"""Untrusted checkpoints: code-carrying pickles, forged safetensors headers and metadata, the
weights of another architecture, truncated files. Each is refused with one line (the library
raises :class:`CheckpointError`; ``fluxvit eval/predict/convert/train`` exit 2 with no
traceback), the payload never runs, nothing is written, and nothing large is allocated."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import fluxvit
from fluxvit.errors import CheckpointError
from fluxvit.train.checkpointing import load_training_state
from tests.models.official_format import official_state_dict
from tests.models.test_checkpoint import _forged, _Payload

from .conftest import ENV, ROOT, assert_user_error


@pytest.fixture
def marker(tmp_path) -> Path:
    """The file a payload would create; every test asserts it never appears."""
    path = tmp_path / "payload_ran"
    yield path
    assert not path.exists(), "a checkpoint's pickled code ran"


def _toy_train_config(tmp_path: Path, video: Path) -> Path:
    """A training config that reaches the resume step before decoding any video."""
    csv = tmp_path / "train.csv"
    csv.write_text(f"{video} 0\n{video} 1\n")
    config = tmp_path / "train.yaml"
    config.write_text(f"out_dir: {tmp_path / 'run'}\nsteps: 2\ndata:\n  source: csv\n  train: {csv}\n"
                      "flux:\n  fixed: 2x28\nobjective:\n  name: fixed\n")
    return config


def _pickles(tmp_path: Path, marker: Path) -> list[Path]:
    """A pickled payload in every shape a checkpoint could arrive in."""
    payload = _Payload(marker)
    zipped = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": payload}, zipped)
    legacy = tmp_path / "evil_legacy.bin"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": payload}, legacy, _use_new_zipfile_serialization=False)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(payload))
    disguised = tmp_path / "evil.safetensors"  # a pickle under our own extension
    disguised.write_bytes(zipped.read_bytes())
    folder = tmp_path / "evil_dir"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(raw.read_bytes())
    return [zipped, legacy, raw, disguised, folder]


def test_code_carrying_pickles_are_refused_at_every_door(tmp_path, marker, good_video, cli):
    csv = tmp_path / "val.csv"
    csv.write_text(f"{good_video} 0\n")
    config = _toy_train_config(tmp_path, good_video)
    for evil in _pickles(tmp_path, marker):
        with pytest.raises(CheckpointError, match=str(evil)):
            fluxvit.load_checkpoint(evil)
        with pytest.raises(CheckpointError, match=str(evil)):
            fluxvit.create_model("fluxvit_nano_patch14", checkpoint=evil)
        assert_user_error(cli("predict", good_video, "--checkpoint", evil, "--json"), "predict", evil)
        assert_user_error(cli("eval", "--checkpoint", evil, "--data", csv), "eval", evil)
        out = tmp_path / "converted.safetensors"
        assert_user_error(cli("convert", evil, out, "--model", "fluxvit_nano_patch14"), "convert", evil)
        assert not out.exists()
        if evil.is_file():
            with pytest.raises(CheckpointError, match="not a readable training checkpoint"):
                load_training_state(evil)
            assert_user_error(cli("train", config, "--resume", evil), "train", evil)
            assert not (tmp_path / "run").exists()
    line = assert_user_error(cli("predict", good_video, "--checkpoint", tmp_path / "evil.pth"), "predict")
    assert "refused to load: it holds Python objects beyond tensors, which could run code" in line


# ----------------------------------------------------------------------------- forged safetensors
def _header_file(path: Path, declared: int, body: bytes = b"{}") -> Path:
    path.write_bytes(declared.to_bytes(8, "little") + body)
    return path


def _with_metadata(path: Path, src: Path, edit) -> Path:
    """A copy of checkpoint ``src`` whose fluxvit metadata record was changed by ``edit(meta)``."""
    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["fluxvit"])
    state = load_file(str(src))
    edit(meta, state)
    save_file(state, str(path), metadata={"fluxvit": json.dumps(meta)})
    return path


def _config(**changes):
    return lambda meta, state: meta["config"].update(changes)


def _set(key, value):
    return lambda meta, state: meta.__setitem__(key, value)


def _budgets(meta, state):
    state["head_budgets"] = torch.arange(100_000)  # would build 100000 heads


# name: (how the file is made, what the error says); "huge" ones declare terabytes or would
# build a model of billions of parameters if the loader believed them
FORGED = {
    # the safetensors library refuses forged headers itself, before allocating anything
    "header_2**40_bytes": (lambda p, src: _header_file(p, 2**40), "not a valid safetensors file (Error while "
                           "deserializing header: header too large)"),
    "header_not_an_object": (lambda p, src: _header_file(p, 2, b"[]"), "invalid JSON in header"),
    "header_nested_100000_deep": (lambda p, src: _header_file(p, 200_000, b"[" * 100_000 + b"]" * 100_000),
                                  "not a valid safetensors file"),
    "tensor_of_2**40_bytes": (lambda p, src: _forged(p, {"w": {"dtype": "U8", "shape": [2**40],
                                                                "data_offsets": [0, 2**40]}}),
                              "not a valid safetensors file"),
    "metadata_not_an_object": (lambda p, src: save_file({"w": torch.zeros(2)}, str(p), metadata={"fluxvit": "[1]"})
                               or p, "fluxvit metadata is not a JSON object"),
    "metadata_model_a_list": (lambda p, src: _with_metadata(p, src, _set("model", ["x"])),
                              "metadata field 'model' is not a str"),
    "config_depth_10**6": (lambda p, src: _with_metadata(p, src, _config(depth=10**6)),
                           "its metadata describes 1000000 blocks, its weights hold 2"),
    "config_mlp_ratio_1e6": (lambda p, src: _with_metadata(p, src, _config(mlp_ratio=1e6)),
                             "blocks.0.mlp.fc1.weight is (384, 96) in the weights, (96000000, 96) in the config"),
    "config_embed_dim_10**9": (lambda p, src: _with_metadata(p, src, _config(embed_dim=10**9, num_heads=1)),
                               "its metadata describes a positional table (1, 1000000000, 16, 8, 8)"),
    "config_pos_grid_1000**3": (lambda p, src: _with_metadata(p, src, _config(pos_grid=[1000, 1000, 1000])),
                                "its metadata describes a positional table (1, 96, 1000, 1000, 1000)"),
    "config_conv_kernel_10**5": (lambda p, src: _with_metadata(p, src, _config(gpe_kernel=100_001)),
                                 "pos_embed.proj.weight is (96, 1, 1, 1, 1) in the weights"),
    "config_of_wrong_types": (lambda p, src: _with_metadata(p, src, _config(embed_dim="wide")),
                              "the model config in its metadata is invalid"),
    "config_unknown_key": (lambda p, src: _with_metadata(p, src, _config(backdoor=1)),
                           "unknown model config keys: backdoor"),
    "head_budgets_100000": (lambda p, src: _with_metadata(p, src, _budgets),
                            "head_budgets (100000,) does not match its 3 heads"),
}


@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_safetensors_are_refused_in_one_line(name, tmp_path, nano_ckpt, good_video, cli):
    make, problem = FORGED[name]
    path = make(tmp_path / f"{name}.safetensors", nano_ckpt)
    with pytest.raises(CheckpointError) as info:
        fluxvit.load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value)
    assert_user_error(cli("predict", good_video, "--checkpoint", path), "predict", path, problem)
    csv = tmp_path / "val.csv"
    csv.write_text(f"{good_video} 0\n")
    assert_user_error(cli("eval", "--checkpoint", path, "--data", csv), "eval", path, problem)


@pytest.mark.parametrize("record, problem", [
    ({"64": "4x56"}, "stored Token Optimization record for 64 tokens is malformed"),
    ([1, 2], "stored Token Optimization record for 64 tokens is malformed"),
    ({"64": {"grid": "sideways"}}, "grid 'sideways' is not of the form TxR"),
    ({"64": {"grid": "99999x999992"}},
     "grid 99999x999992: 510190816440816 tokens in one sampling grid is more than the cap of 131072"),
    ({"64": {"grid": "4x100"}}, "resolution height 100 is not a multiple of the patch size 14"),
])
def test_forged_token_optimization_records(record, problem, tmp_path, nano_ckpt, good_video, cli):
    """A stored grid choice is data from the file too: malformed or absurd, it is refused."""
    path = _with_metadata(tmp_path / "to.safetensors", nano_ckpt, _set("token_optimization", record))
    assert_user_error(cli("predict", good_video, "--checkpoint", path, "--budget", "64"), "predict", path, problem)


# Peak resident memory of one call: Linux resets the peak (VmHWM) when "5" is written to
# /proc/self/clear_refs, so each call's peak is measured on its own, transient allocations included.
MEASURE = """
import json, sys
from fluxvit.errors import CheckpointError
from fluxvit.models.registry import load_checkpoint

def kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

growth = {}
for path in sys.argv[1:]:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = kb("VmRSS")
    try:
        load_checkpoint(path)
        refused = False
    except CheckpointError:
        refused = True
    growth[path] = (refused, kb("VmHWM") - before)
print(json.dumps(growth))
"""


def test_forged_sizes_allocate_nothing_large(tmp_path, nano_ckpt):
    """Peak RSS (kB, per call, in a fresh process) grows by less than 20 MB while refusing files that
    declare terabytes or billions of parameters. The control, loading a real 24 MB model (tiny,
    12 blocks), shows that the measurement sees allocations."""
    huge = ["header_2**40_bytes", "tensor_of_2**40_bytes", "header_nested_100000_deep", "config_depth_10**6",
            "config_mlp_ratio_1e6", "config_embed_dim_10**9", "config_pos_grid_1000**3", "config_conv_kernel_10**5",
            "head_budgets_100000"]
    paths = [str(FORGED[n][0](tmp_path / f"{n}.safetensors", nano_ckpt)) for n in huge]
    control = fluxvit.save_checkpoint(fluxvit.create_model("fluxvit_tiny_patch14", num_classes=4),
                                      tmp_path / "control.safetensors")
    proc = subprocess.run([sys.executable, "-c", MEASURE, *paths, str(control)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    growth = json.loads(proc.stdout)
    assert growth[str(control)][0] is False and growth[str(control)][1] > 24 * 1024, growth
    assert all(growth[p][0] for p in paths), growth  # every forged one refused ...
    assert max(growth[p][1] for p in paths) < 20 * 1024, growth  # ... without a large allocation


# ----------------------------------------------------------------------------- another architecture
def test_checkpoint_of_another_architecture(tmp_path, nano_ckpt, good_video, cli):
    torch.manual_seed(0)
    tiny = fluxvit.create_model("fluxvit_tiny_patch14", num_classes=4, depth=2)
    path = fluxvit.save_checkpoint(tiny, tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="is a checkpoint for fluxvit_tiny_patch14, not fluxvit_nano_patch14"):
        fluxvit.create_model("fluxvit_nano_patch14", checkpoint=path)
    # tiny's weights under a nano's whole metadata record: the weights themselves give it away
    with safe_open(str(nano_ckpt), framework="pt") as f:
        nano_meta = json.loads(f.metadata()["fluxvit"])
    liar = _with_metadata(tmp_path / "liar.safetensors", path, lambda meta, state: meta.update(nano_meta))
    assert_user_error(cli("predict", good_video, "--checkpoint", liar), "predict", liar,
                      "its metadata describes a positional table (1, 96, 16, 8, 8), "
                      "its weights hold (1, 192, 16, 12, 12)")
    raw = tmp_path / "tiny_raw.pth"  # no metadata at all: the shapes decide
    torch.save(tiny.state_dict(), raw)
    with pytest.raises(CheckpointError, match="does not fit fluxvit_nano_patch14: .* other shapes"):
        fluxvit.create_model("fluxvit_nano_patch14", checkpoint=raw, depth=2)
    # a release file of FluxViT-S converted as nano
    release = tmp_path / "release.pth"
    torch.save({"model": official_state_dict(0, num_classes=4)}, release)
    out = tmp_path / "nano.safetensors"
    run = cli("convert", release, out, "--model", "fluxvit_nano_patch14")
    assert_user_error(run, "convert", release, "does not fit fluxvit_nano_patch14: ", "other shapes")
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


# ----------------------------------------------------------------------------- truncated files
@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.05, 0.5, 0.95, 0.9999])
def test_truncated_checkpoints_are_refused(fraction, tmp_path, nano_ckpt, good_video, cli):
    data = nano_ckpt.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: int(len(data) * fraction)])
    assert_user_error(cli("predict", good_video, "--checkpoint", cut), "predict", cut)
    folder = tmp_path / "cut_dir"  # the directory format: weights and config.json cut alike
    fluxvit.save_checkpoint(fluxvit.load_checkpoint(nano_ckpt), folder)
    for name in ("model.safetensors", "config.json"):
        whole = (folder / name).read_bytes()
        (folder / name).write_bytes(whole[: int(len(whole) * fraction)])
        assert_user_error(cli("predict", good_video, "--checkpoint", folder), "predict", folder)
        (folder / name).write_bytes(whole)
    release = tmp_path / "release.pth"
    torch.save({"model": fluxvit.load_checkpoint(nano_ckpt).state_dict()}, release)
    whole = release.read_bytes()
    release.write_bytes(whole[: int(len(whole) * fraction)])
    out = tmp_path / "out.safetensors"
    assert_user_error(cli("convert", release, out, "--model", "fluxvit_nano_patch14"), "convert", release)
    assert not out.exists() and not list(tmp_path.rglob("*.part"))
