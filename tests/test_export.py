"""Exported deployment artifacts (fluxvit.export, fluxvit.evaluate.exported, ``fluxvit export``):
an ONNX model run by onnxruntime and a torch.export program compute what the eager model does,
selection and head included, for random-weight nano models and an S-shaped model (S width and
heads, depth 2), at two budgets each; their metadata round-trips; bad files and bad calls end in
one line."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

import fluxvit
from fluxvit.cli import main as cli
from fluxvit.errors import CheckpointError, ConfigError
from fluxvit.evaluate.exported import load_exported
from fluxvit.evaluate.runner import Views
from fluxvit.export import export_model

ONNX_MISSING = "onnxruntime, onnx and onnxscript are not installed (pip install 'fluxvit[onnx]')"


def _onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


needs_onnx = pytest.mark.skipif(not _onnx_available(), reason=ONNX_MISSING)
FORMATS = [pytest.param("onnx", marks=needs_onnx), "torch-export"]
SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2"}


def _random_model(name: str, seed: int, num_classes: int, **overrides):
    """Random weights, with classifiers spread enough that the top-5 is not decided by noise."""
    torch.manual_seed(seed)
    model = fluxvit.create_model(name, num_classes=num_classes, **overrides).eval()
    with torch.no_grad():
        for head in model.heads:
            head.weight.normal_(0.0, 0.5)
            head.bias.normal_(0.0, 0.1)
    model.class_names = [f"class_{i}" for i in range(num_classes)]
    return model


@pytest.fixture(scope="module")
def models():
    return {
        # nano at 8x112 (512 tokens; heads 256/128/64): 200 -> head 0, 64 -> head 2
        "nano": (_random_model("fluxvit_nano_patch14", 1, 12), "8x112", 2),
        # S width/heads at depth 2 at 12x168 (1728 tokens; heads 3072/2048/1024): 1600 -> head 1, 768 -> head 2
        "S": (_random_model("fluxvit_small_patch14", 2, 20, depth=2), "12x168", 1),
    }


CASES = [("nano", 200, 0), ("nano", 64, 2), ("S", 1600, 1), ("S", 768, 2)]


@pytest.fixture(scope="module")
def artifacts(models, tmp_path_factory):
    """Each (model, budget, format) exported once, on first use."""
    root = tmp_path_factory.mktemp("export")
    made = {}

    def get(name: str, budget: int, fmt: str):
        key = (name, budget, fmt)
        if key not in made:
            model, grid, batch = models[name]
            made[key] = export_model(model, root / f"{name}_{budget}{SUFFIX[fmt]}", grid, budget, format=fmt,
                                     batch=batch)
        return made[key]

    return get


def _eager(model, video, budget, head):
    with torch.no_grad():
        return model(video, num_tokens=budget, head=head)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("name", "budget", "head"), CASES, ids=[f"{n}-{b}" for n, b, _ in CASES])
def test_artifact_computes_what_the_model_does(models, artifacts, name, budget, head, fmt):
    model, grid, batch = models[name]
    runner = load_exported(artifacts(name, budget, fmt), device="cpu")
    assert runner.head == head == model.resolve_head(budget) and runner.tokens == budget
    g = fluxvit.Grid.parse(grid)
    rows = batch + 1  # more rows than one call takes: run in groups, the last padded
    video = torch.randn(rows, 3, g.frames, g.height, g.width, generator=torch.Generator().manual_seed(7))
    want = _eager(model, video, budget, head)
    got = runner(video)
    assert got.shape == want.shape == (rows, model.num_classes) and got.dtype == torch.float32
    diff = float((got - want).abs().max())
    assert diff <= 1e-4, f"{name} at {budget} tokens ({fmt}): max |logit difference| {diff:.3g}"
    assert torch.equal(got.topk(5).indices, want.topk(5).indices)
    # the selection inside is the model's: another budget's logits are far from these
    other = _eager(model, video, budget // 2, head)
    assert float((got - other).abs().max()) > 100 * max(diff, 1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_round_trips(models, artifacts, fmt):
    model, _, _ = models["nano"]
    path = artifacts("nano", 64, fmt)
    runner = load_exported(path)
    assert (runner.grid, runner.budget, runner.head, runner.selector) == (fluxvit.Grid(8, 112, 112, 64), 64, 2,
                                                                          "group_dynamic")
    assert runner.class_names == model.class_names and runner.num_classes == 12 and runner.patch_size == 14
    assert (runner.name, runner.batch, runner.rows, runner.views) == ("fluxvit_nano_patch14", 2, 2, (1, 1))
    pre = runner.preprocessing
    assert (pre["frames"], pre["height"], pre["width"], pre["clips"], pre["crops"]) == (8, 112, 112, 1, 1)
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406]) and pre["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert pre["frame_sampling"].startswith("segment") and pre["combine_views"] == "mean of the views' softmax"
    assert runner.metadata["fluxvit_version"] == fluxvit.__version__
    assert runner.metadata["input"]["shape"] == [2, 3, 8, 112, 112]
    assert runner.estimate_flops(runner.grid).total == model.estimate_flops(runner.grid).total
    # the record as stored in the file, read without fluxvit
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        record = json.loads(props["fluxvit"])
        assert [o.version for o in onnx.load(str(path)).opset_import if o.domain == ""] == [18]
    else:
        with zipfile.ZipFile(path) as z:
            (entry,) = [n for n in z.namelist() if n.endswith("/extra/fluxvit.json")]
            record = json.loads(z.read(entry))
    assert record == runner.metadata and record["class_names"] == [f"class_{i}" for i in range(12)]


@needs_onnx
def test_views_and_no_selection(models, tmp_path):
    """An artifact that keeps every token and takes 2 clips x 3 crops of one video per call."""
    model, _, _ = models["nano"]
    path = export_model(model, tmp_path / "all.onnx", "4x56", views=Views(2, 3))
    runner = load_exported(path)
    assert (runner.budget, runner.tokens, runner.rows, runner.views) == (64, 64, 6, (2, 3))
    assert runner.head == 2 == model.resolve_head(64)  # heads at 256/128/64 tokens
    video = torch.randn(6, 3, 4, 56, 56, generator=torch.Generator().manual_seed(3))
    assert float((runner(video) - _eager(model, video, None, None)).abs().max()) <= 1e-4


def _one_line(exc: pytest.ExceptionInfo, *parts: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and all(p in text for p in parts), text
    return text


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrong_grid_budget_head_and_selector_are_one_line(artifacts, fmt):
    path = artifacts("nano", 64, fmt)
    runner = load_exported(path)
    with pytest.raises(ConfigError) as e:
        runner(torch.randn(1, 3, 8, 224, 224))
    _one_line(e, str(path), "(N, 3, 8, 112, 112)", "grid 8x112", "(1, 3, 8, 224, 224)")
    with pytest.raises(ConfigError) as e:
        runner(torch.randn(1, 3, 8, 112, 112), num_tokens=128)
    _one_line(e, str(path), "keep 64 of the 512 tokens", "128")
    with pytest.raises(ConfigError) as e:
        runner(torch.randn(1, 3, 8, 112, 112), head=0)
    _one_line(e, "head 2, not head 0")
    with pytest.raises(ConfigError) as e:
        runner(torch.randn(1, 3, 8, 112, 112), selector="uniform")
    _one_line(e, "group_dynamic selector, not uniform")
    with pytest.raises(ConfigError) as e:
        runner(torch.zeros(1, 3, 8, 112, 112, dtype=torch.uint8))
    _one_line(e, "normalised float clips")


@needs_onnx
def test_the_artifact_records_how_its_inputs_are_made(artifacts, tmp_path):
    """resize and view_offsets travel in the metadata (the model's, here the release's defaults) and
    predict/eval read them back; a record missing a key takes its default (found by a red-team pass:
    a KeyError traceback), a version 1 artifact the antialiased filter all exports then used, and a
    bad value is one checkpoint error when it is read."""
    import onnx

    from fluxvit.data.preprocessing import Preprocessing, preprocessing_of

    good = artifacts("nano", 64, "onnx")
    runner = load_exported(good)
    assert runner.metadata["version"] == 2
    assert (runner.preprocessing["resize"], runner.preprocessing["view_offsets"]) == ("release", "between")
    assert "without antialiasing" in runner.preprocessing["resize_rule"]
    assert preprocessing_of(runner) == Preprocessing("release", "between")
    proto = onnx.load(str(good))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["fluxvit"])

    def forged(change, version=2):
        pre = {k: v for k, v in {**meta["preprocessing"], **change}.items() if v is not None}
        onnx.helper.set_model_props(proto, {"fluxvit": json.dumps({**meta, "version": version, "preprocessing": pre})})
        path = tmp_path / f"forged{len(list(tmp_path.iterdir()))}.onnx"
        onnx.save(proto, str(path))
        return load_exported(path)

    assert preprocessing_of(forged({"resize": None, "view_offsets": "start"})) == Preprocessing("release", "start")
    assert preprocessing_of(forged({}, version=1)) == Preprocessing("antialias", "between")
    with pytest.raises(CheckpointError) as e:
        preprocessing_of(forged({"resize": "lanczos"}))
    _one_line(e, "resize 'lanczos' is not one of release, antialias")


@needs_onnx
def test_corrupt_or_foreign_onnx_files_are_one_line(artifacts, tmp_path):
    import onnx

    good = artifacts("nano", 64, "onnx")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 3])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf at all" * 50)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError) as e:
            load_exported(path)
        _one_line(e, str(path), "not a readable ONNX model")
    proto = onnx.load(str(good))
    del proto.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(proto, str(plain))
    with pytest.raises(CheckpointError) as e:
        load_exported(plain)
    _one_line(e, str(plain), "no fluxvit metadata")
    record = json.loads(json.dumps({p.key: p.value for p in onnx.load(str(good)).metadata_props}))
    meta = json.loads(record["fluxvit"])
    for change, words in (({"grid": [8, 224, 224]}, "does not take the input its metadata describes"),
                          ({"budget": 10**6}, "do not fit"), ({"class_names": ["a"]}, "'class_names'"),
                          ({"version": 99}, "newer than this fluxvit reads")):
        onnx.helper.set_model_props(proto, {"fluxvit": json.dumps({**meta, **change})})
        forged = tmp_path / "forged.onnx"
        onnx.save(proto, str(forged))
        with pytest.raises(CheckpointError) as e:
            load_exported(forged)
        _one_line(e, str(forged), words)
    other = tmp_path / "model.txt"
    other.write_bytes(data)
    with pytest.raises(CheckpointError) as e:
        load_exported(other)
    _one_line(e, str(other), "expected a .onnx or .pt2 file")


def _rewrite_zip(src, dst, change):
    with zipfile.ZipFile(src) as z_in, zipfile.ZipFile(dst, "w") as z_out:
        for info in z_in.infolist():
            name, data = change(info.filename, z_in.read(info))
            if name is not None:
                z_out.writestr(name, data)
        root = z_in.namelist()[0].split("/")[0]
    return root


def test_corrupt_or_unsafe_pt2_files_are_one_line(artifacts, tmp_path):
    good = artifacts("nano", 64, "torch-export")
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"PK\x03\x04" + b"\x00" * 300)
    with pytest.raises(CheckpointError) as e:
        load_exported(garbage)
    _one_line(e, str(garbage), "not a readable torch.export archive")
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError) as e:
        load_exported(truncated)
    _one_line(e, str(truncated), "not a readable torch.export archive")

    import io
    import pickle

    payload = io.BytesIO()
    pickle.dump({"x": 1}, payload)
    cases = {
        "pickled sample inputs": (lambda n, d: (n, payload.getvalue() if n.endswith("sample_inputs/model.pt") else d),
                                  "holds pickled data"),
        "pickled weight": (lambda n, d: (n, d.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
                                         if n.endswith("model_weights_config.json") else d),
                           "pickled or custom objects"),
        "compiled code": (lambda n, d: (n, d) if not n.endswith("archive_version") else
                          (n.replace("archive_version", "aotinductor/model.so"), b"\x7fELF"), "does not write"),
        "no metadata": (lambda n, d: (None, d) if n.endswith("extra/fluxvit.json") else (n, d), "no fluxvit metadata"),
        "foreign metadata": (lambda n, d: (n, b'{"format": "other"}') if n.endswith("extra/fluxvit.json") else (n, d),
                             "not a fluxvit-export record"),
    }
    for label, (change, words) in cases.items():
        forged = tmp_path / f"{label.replace(' ', '_')}.pt2"
        _rewrite_zip(good, forged, change)
        with pytest.raises(CheckpointError) as e:
            load_exported(forged)
        _one_line(e, str(forged), words)


def test_export_refuses_bad_values_in_one_line(models, tmp_path):
    model, _, _ = models["nano"]
    out = tmp_path / "m.pt2"
    for kwargs, words in (
        ({"budget": 513}, "token budget 513 is larger than the 512 tokens of grid 8x112x112"),
        ({"budget": 64, "format": "tflite"}, "unknown export format 'tflite'"),
        ({"budget": 64, "format": "onnx"}, "a onnx artifact is written to a .onnx file"),
        ({"budget": 64, "selector": "random"}, "random draws new tokens"),
        ({"budget": 64, "batch": 0}, "export batch must be a positive integer"),
        ({"budget": 64, "views": "2x9"}, "need clips >= 1 and 1 to 3 crops"),
    ):
        with pytest.raises(ConfigError) as e:
            export_model(model, out, "8x112", format=kwargs.pop("format", "torch-export"), **kwargs)
        _one_line(e, words)
    assert not out.exists() and not list(tmp_path.iterdir())
    out.write_bytes(b"keep me")
    with pytest.raises(ConfigError) as e:
        export_model(model, out, "8x112", 64, format="torch-export")
    _one_line(e, str(out), "exists")
    assert out.read_bytes() == b"keep me"


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    from fluxvit.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("exportcli")
    data = make_synthetic_dataset(root / "data", classes=["slide_left", "grow", "stripes_h"], per_class=1, size=56,
                                  frames=8, seed=1, val_fraction=0.0, workers=1)
    model = _random_model("fluxvit_nano_patch14", 3, 3, depth=2, default_grid=(4, 56))
    ckpt = fluxvit.save_checkpoint(model, root / "nano.safetensors", classes=["slide_left", "grow", "stripes_h"])
    video = next((root / "data").rglob("*.mp4"))
    return root, ckpt, video, data


def _json_rows(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_export_then_predict_with_the_artifact(cli_setup, capsys, fmt):
    root, ckpt, video, data = cli_setup
    out = root / f"nano_4x56_20{SUFFIX[fmt]}"
    assert cli(["export", str(ckpt), str(out), "--grid", "4x56", "--budget", "20"]) == 0
    assert out.is_file() and load_exported(out).budget == 20
    capsys.readouterr()
    assert cli(["predict", str(video), "--checkpoint", str(out), "--json", "--views", "2x3"]) == 0
    (from_artifact,) = _json_rows(capsys.readouterr().out)
    assert cli(["predict", str(video), "--checkpoint", str(ckpt), "--json", "--views", "2x3", "--grid", "4x56",
                "--budget", "20", "--dtype", "fp32"]) == 0
    (from_checkpoint,) = _json_rows(capsys.readouterr().out)
    assert (from_artifact["tokens"], from_artifact["grid"]) == (20, "4x56x56") == (from_checkpoint["tokens"],
                                                                                   from_checkpoint["grid"])
    assert [t["label"] for t in from_artifact["top"]] == [t["label"] for t in from_checkpoint["top"]]
    for a, b in zip(from_artifact["top"], from_checkpoint["top"]):
        assert a["prob"] == pytest.approx(b["prob"], abs=2e-5)


@needs_onnx
def test_cli_export_refusals_are_one_line_exit_2(cli_setup, capsys):
    root, ckpt, video, data = cli_setup
    out = root / "refused.onnx"
    for argv, words in (
        ([str(ckpt), str(out), "--grid", "4x56", "--budget", "9999"], "token budget 9999 is larger than the 64"),
        ([str(ckpt), str(out), "--grid", "4x56", "--format", "bogus"], "--format bogus names no export format"),
        ([str(ckpt), str(root / "m.tflite"), "--grid", "4x56"], "its suffix names no export format"),
    ):
        assert cli(["export", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("fluxvit export: error: ") and words in err, err
    assert not out.exists()
    out.write_bytes(b"older file")
    assert cli(["export", str(ckpt), str(out), "--grid", "4x56"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err and out.read_bytes() == b"older file"
    # optimize searches grids: an artifact runs one, and is refused there in one line
    good = root / "nano_4x56_20.onnx"
    if not good.exists():
        assert cli(["export", str(ckpt), str(good), "--grid", "4x56", "--budget", "20"]) == 0
    capsys.readouterr()
    assert cli(["optimize", "--checkpoint", str(good), "--data", str(data.train_csv), "--budgets", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an exported model; this command needs the checkpoint" in err
    assert cli(["eval", "--checkpoint", str(good), "--data", str(data.train_csv), "--save-features",
                str(root / "f.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--save-features needs the checkpoint" in err
    assert cli(["predict", str(video), "--checkpoint", str(good), "--grid", "8x56"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exported for grid 4x56, not --grid 8x56" in err


@needs_onnx
def test_cli_eval_of_the_artifact_gives_the_checkpoints_numbers(cli_setup, capsys):
    """``eval`` over a split with the exported model: the same videos, the same top-1 and top-5 as
    the checkpoint evaluated at the artifact's grid and budget."""
    root, ckpt, video, data = cli_setup
    art = root / "eval_4x56_20.onnx"
    assert cli(["export", str(ckpt), str(art), "--grid", "4x56", "--budget", "20", "--views", "1x1"]) == 0
    capsys.readouterr()
    assert cli(["eval", "--checkpoint", str(art), "--data", str(data.train_csv), "--views", "1x1", "--json"]) == 0
    (exported,) = _json_rows(capsys.readouterr().out)
    assert cli(["eval", "--checkpoint", str(ckpt), "--data", str(data.train_csv), "--views", "1x1", "--json",
                "--grid", "4x56", "--budget", "20", "--dtype", "fp32"]) == 0
    (eager,) = _json_rows(capsys.readouterr().out)
    assert exported["videos"] == eager["videos"] > 0 and exported["budget"] == eager["budget"] == 20
    assert (exported["top1"], exported["top5"]) == (eager["top1"], eager["top5"])
