"""fp16 training with a gradient scaler (and its exact resumption), the bf16 guard, and
Weights & Biases logging: a recording stand-in for the exact calls, a real offline run for the
files W&B writes."""

import functools
import json
import logging
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from fluxvit.data.sources import TensorClipSource
from fluxvit.errors import ConfigError
from fluxvit.train import TrainingError, train
from fluxvit.train.checkpointing import load_training_state, save_training_state
from fluxvit.train.ema import ModelEma
from fluxvit.train.metrics import read_metrics
from fluxvit.train.trainer import _check_precision, amp_dtype

from .toy import toy_config, toy_source

# A first loss scale the toy's fp16 gradients overflow at: the scaler skips the first steps,
# halving the scale each time (the default, 2**16, happens not to overflow on the toy).
HIGH_SCALE = 2.0**19


def _tiny(out, steps, **sections):
    """A nano 'fixed' run on 4-clip batches of 4 frames of 42 px (18 tokens: a step takes a
    fraction of a second on a CPU, also in fp16, which CPUs compute slowly)."""
    merged: dict = {"data": {"batch_size": 4}, "flux": {"fixed": "4x42"}, "eval": {"grid": "4x42"}}
    for key, value in sections.items():
        merged[key] = {**merged[key], **value} if key in merged else value
    return toy_config(out, "fixed", steps, **merged)


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _interrupted_copy(run: Path, to: Path, keep_step: int) -> Path:
    """``run`` as a kill after its checkpoint of ``keep_step`` would have left it."""
    shutil.copytree(run, to)
    for name in ("model.safetensors", "model_ema.safetensors"):
        (to / name).unlink(missing_ok=True)
    for ckpt in (to / "checkpoints").glob("ckpt_*.pt"):
        if int(ckpt.stem.split("_")[1]) > keep_step:
            ckpt.unlink()
    return to


# ----------------------------------------------------------------------------- fp16
def test_precisions_map_to_one_autocast_dtype_each():
    assert (amp_dtype("fp32"), amp_dtype("bf16"), amp_dtype("fp16")) == (None, torch.bfloat16, torch.float16)


def test_fp16_skips_overflowing_steps_and_resumes_bit_exactly(tmp_path, monkeypatch, caplog):
    """fp16 on a CPU: steps whose scaled gradients overflow are skipped by the scaler (counted,
    not failures, no EMA update); the scale is checkpointed, so a resumed run ends with the
    uninterrupted run's weights, bit for bit. A checkpoint without a scale still resumes."""
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=HIGH_SCALE))
    updates = []
    real_update = ModelEma.update
    monkeypatch.setattr(ModelEma, "update", lambda self, model: (updates.append(1), real_update(self, model)))
    cfg = lambda out: _tiny(out, 4, precision="fp16", ckpt_every=2, keep_last=5, ema_decay=0.9,  # noqa: E731
                            model={"head_budgets": [64, 48, 32], "drop_path": 0.1}, optim={"clip_grad": 1.0})
    full = train(cfg(tmp_path / "full"), toy_source(1, 0))
    skipped = full.metrics["scaler_skipped_steps"]
    assert skipped >= 1 and full.metrics["skipped_steps"] == 0  # overflows are not non-finite losses
    assert len(updates) == 4 - skipped  # no EMA update on a step the scaler skipped
    records = [r for r in read_metrics(tmp_path / "full" / "metrics.jsonl") if "loss" in r and "step" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["scaler_skipped_steps"] == skipped
    state = load_training_state(tmp_path / "full" / "checkpoints" / "ckpt_000000002.pt")
    assert state["scaler"]["scale"] < HIGH_SCALE  # the lowered scale is what a resume continues with

    resumed_dir = _interrupted_copy(tmp_path / "full", tmp_path / "resumed", 2)
    resumed = train(cfg(resumed_dir), toy_source(1, 0), resume=True)
    _assert_identical(_weights(full.model), _weights(resumed.model))
    from safetensors.torch import load_file

    _assert_identical(load_file(str(tmp_path / "full" / "model_ema.safetensors")),
                      load_file(str(resumed_dir / "model_ema.safetensors")))
    assert resumed.metrics["scaler_skipped_steps"] == skipped
    final_scale = lambda run: load_training_state(run / "checkpoints" / "ckpt_000000004.pt")["scaler"]  # noqa: E731
    assert final_scale(resumed_dir) == final_scale(tmp_path / "full")

    # A checkpoint written without a scale (fp32 or bf16 runs, older versions) resumes an fp16 run.
    old_dir = _interrupted_copy(tmp_path / "full", tmp_path / "old", 2)
    ckpt = old_dir / "checkpoints" / "ckpt_000000002.pt"
    state = load_training_state(ckpt)
    del state["scaler"]
    save_training_state(state, ckpt.parent, 2, keep=5)
    with caplog.at_level(logging.INFO, logger="fluxvit.train.trainer"):
        assert train(cfg(old_dir), toy_source(1, 0), resume=True).steps == 4
    assert "holds no fp16 loss scale" in caplog.text


class _Poisoned(TensorClipSource):
    """All-NaN training clips: every loss is NaN."""

    def train_clips(self, index, grid, generator, repeats=1):
        videos, label = super().train_clips(index, grid, generator, repeats)
        return [v * float("nan") for v in videos], label


def test_non_finite_fp16_loss_still_stops_the_run_and_fails_the_wandb_run(tmp_path, monkeypatch):
    _, calls = _fake_wandb(monkeypatch)
    clean = toy_source(1, 0)
    poisoned = _Poisoned(clean.videos, clean.labels, clean.classes)
    with pytest.raises(TrainingError, match="stopped at step 2: 2 non-finite losses in a row"):
        train(_tiny(tmp_path, 5, precision="fp16", max_bad_steps=2, logging={"wandb": "toy"}), poisoned)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["skipped_steps"], r["scaler_skipped_steps"]) for r in records] == [(1, 0)]
    assert calls[-1] == ("finish", 1)  # the writer is closed on failure too, the W&B run marked failed


def test_bf16_on_a_gpu_without_bf16_is_one_line_suggesting_fp16(monkeypatch):
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    capability = [(7, 0)]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[0])
    gpu = torch.device("cuda", 0)
    with pytest.raises(ConfigError) as info:
        _check_precision("bf16", gpu)
    message = str(info.value)
    assert message == ("precision bf16: Tesla V100-SXM2-16GB (cuda:0) has no bf16 support; "
                       "use precision: fp16 (or fp32)")
    _check_precision("fp16", gpu)
    _check_precision("bf16", torch.device("cpu"))
    capability[0] = (8, 0)
    _check_precision("bf16", gpu)


# ----------------------------------------------------------------------------- W&B
class _FakeRun:
    """Records what the trainer hands a W&B run."""

    def __init__(self, calls: list, step: int) -> None:
        self.calls, self.step, self.summary = calls, step, {}

    def log(self, data, step):
        self.calls.append(("log", step, dict(data)))

    def finish(self, exit_code=None):
        self.calls.append(("finish", exit_code))


def _fake_wandb(monkeypatch, next_step: int = 0):
    """A ``wandb`` module whose runs record every call; ``next_step``: what ``run.step`` says
    (a resumed online run: the step after the last it holds)."""
    calls: list = []
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        calls.append(("init", kwargs))
        module.runs.append(_FakeRun(calls, next_step))
        return module.runs[-1]

    module.init = init
    module.Settings = lambda **kwargs: ("settings", kwargs)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module, calls


def _numbers(record):
    return {k: v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def test_wandb_gets_the_config_each_steps_numbers_and_the_final_summary(tmp_path, monkeypatch):
    module, calls = _fake_wandb(monkeypatch)
    out = tmp_path / "toy-run"
    cfg = _tiny(out, 3, ckpt_every=2, keep_last=5, eval={"every": 2},
                logging={"wandb": "my-project", "wandb_mode": "offline"})
    result = train(cfg, toy_source(1, 0), toy_source(1, 1))
    run_id = (out / "wandb" / "fluxvit_run_id").read_text().strip()
    init = calls[0]
    assert init[0] == "init"
    kwargs = init[1]
    assert kwargs["config"]["steps"] == 3 and kwargs["config"]["logging"]["wandb"] == "my-project"
    assert {k: v for k, v in kwargs.items() if k != "config"} == {
        "project": "my-project", "dir": str(out), "mode": "offline", "name": "toy-run", "id": run_id,
        "resume": "allow", "settings": ("settings", {"init_timeout": 30})}
    records = read_metrics(out / "metrics.jsonl")
    expected = [("log", r["step"], _numbers(r)) for r in records if not r.get("final")]
    assert [c[1] for c in expected] == [1, 2, 2, 3, 3]  # steps, validation at 2 and at the end
    assert calls[1:] == [*expected, ("finish", 0)]
    assert "grid" not in calls[1][2] and "eval_grid" not in calls[3][2]  # text stays in metrics.jsonl
    final = {k: v for k, v in records[-1].items() if k != "final"}
    assert module.runs[0].summary == final == result.metrics
    assert "scaler" not in load_training_state(out / "checkpoints" / "ckpt_000000002.pt")  # fp32: as before

    # Resumed after its checkpoint of step 2: the same W&B run, which already holds step 3.
    resumed_dir = _interrupted_copy(out, tmp_path / "again" / "toy-run", 2)
    module, calls = _fake_wandb(monkeypatch, next_step=4)
    cfg["out_dir"] = str(resumed_dir)
    train(cfg, toy_source(1, 0), toy_source(1, 1), resume=True)
    assert calls[0][1]["id"] == run_id and calls[0][1]["resume"] == "allow"
    assert calls[1:] == [("finish", 0)]  # step 3 is not logged twice ...
    final_again = {k: v for k, v in read_metrics(resumed_dir / "metrics.jsonl")[-1].items() if k != "final"}
    assert module.runs[0].summary == final_again  # ... and the summary is the resumed run's final record


def test_missing_wandb_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb: ImportError
    with pytest.raises(ConfigError) as info:
        train(_tiny(tmp_path / "run", 2, logging={"wandb": "p"}), toy_source(1, 0))
    assert str(info.value) == "logging.wandb needs the wandb package (pip install 'fluxvit[wandb]')"
    assert not (tmp_path / "run").exists()


def _wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file (LevelDB's log format: 32 KiB blocks of
    records with a 7-byte header each, after W&B's own 7-byte file header)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if room < 7 or kind == 0:  # a block's padding
            pos += room
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_a_real_offline_wandb_run_holds_the_steps_losses(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for key in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    import wandb

    out = tmp_path / "run"
    try:
        train(_tiny(out, 2, logging={"wandb": "fluxvit-test", "wandb_mode": "offline"}), toy_source(1, 0))
    finally:
        wandb.teardown()  # the W&B service process ends with the test
    run_id = (out / "wandb" / "fluxvit_run_id").read_text().strip()
    folders = list((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(folders) == 1
    history, runs = {}, []
    for record in _wandb_records(folders[0] / f"run-{run_id}.wandb"):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}
            history[record.history.step.num] = row
        elif kind == "run":
            runs.append(record.run)
    assert [(r.project, r.display_name, r.run_id) for r in runs] == [("fluxvit-test", "run", run_id)]
    steps = {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "step" in r}
    assert {s: row["loss"] for s, row in history.items()} == steps and sorted(steps) == [1, 2]


def test_validation_counts_non_finite_outputs_as_wrong_and_says_so(caplog):
    from fluxvit.data.sources import TensorClipSource
    from fluxvit.distributed import DistInfo
    from fluxvit.flux.grid import Grid
    from fluxvit.train.validation import validate

    class Overflowing(torch.nn.Module):
        """Logits pointing at each clip's label, NaN for the clips whose first pixel is bright."""

        patch_size = 14

        def forward(self, video, num_tokens=None):
            bright = video[:, 0, 0, 0, 0] > 0
            logits = torch.nn.functional.one_hot(video[:, 1, 0, 0, 0].gt(0).long(), 2).float()
            return torch.where(bright[:, None], torch.full_like(logits, float("nan")), logits)

    videos, labels = [], []
    for i in range(6):
        clip = torch.zeros(4, 28, 28, 3, dtype=torch.uint8)
        clip[..., 0] = 255 if i < 2 else 0  # clips 0, 1 overflow
        clip[..., 1] = 255 * (i % 2)  # the label, read back by the stub
        videos.append(clip)
        labels.append(i % 2)
    source = TensorClipSource(videos, labels, ["a", "b"])
    info = DistInfo()
    with caplog.at_level("WARNING"):
        out = validate(Overflowing(), source, Grid(4, 28), [None], info, batch_size=4)
    assert out["acc@16"] == pytest.approx(100 * 4 / 6) and out["val_nonfinite"] == 2
    assert "2 outputs were NaN or inf" in caplog.text


def test_a_wandb_run_that_cannot_start_leaves_the_run_folder_as_it_was(tmp_path, monkeypatch):
    """Found by a red-team pass: the failed start left config.yaml, metrics.jsonl and the W&B id
    behind, and the next attempt was refused as an earlier run."""
    module, _ = _fake_wandb(monkeypatch)

    def refuse(**kwargs):
        raise RuntimeError("api_key not configured (no-tty)")

    module.init = refuse
    out = tmp_path / "toy-run"
    cfg = _tiny(out, 2, logging={"wandb": "p", "wandb_mode": "online"})
    with pytest.raises(ConfigError, match="could not start the W&B run .api_key not configured"):
        train(cfg, toy_source(4, 0), toy_source(1, 1))
    assert not out.exists() or list(out.iterdir()) == []
    cfg["logging"]["wandb"] = None
    assert train(cfg, toy_source(4, 0), toy_source(1, 1)).steps == 2  # the next attempt is not refused
