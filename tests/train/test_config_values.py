"""Every training config value has a range, checked before training starts.

Each case of :data:`TRAIN_VALUE_CASES` overrides the nano Flux-Multi config: a refused value ends
``fluxvit train`` in one line naming the key (exit 2), before any model, data or output folder
exists; an accepted one (each range's valid boundary) passes the config check with the value set.
"""

from __future__ import annotations

import dataclasses
import re
import time
import typing
from pathlib import Path

import pytest
import torch
import yaml

from fluxvit.cli import main
from fluxvit.errors import ConfigError
from fluxvit.flux.grid import FluxGrid, Grid
from fluxvit.train.config import TrainConfig, load_config, validate

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "configs" / "nano_synthetic_flux_multi.yaml"  # nano (patch 14); flux T 4..16, R 84..112, 256..1024
CAP = "tokens in one sampling grid is more than the cap of 131072 (raise it with FLUXVIT_MAX_GRID_TOKENS)"
DISTILL = ("objective.name=distill", "objective.teacher=fluxvit_nano_patch14",
           "objective.teacher_checkpoint={tmp}/teacher.safetensors")

# (override or overrides, what the error says; None: accepted). "{tmp}" is the test's folder.
TRAIN_VALUE_CASES = [
    # --- what a hostile tester found
    ("optim.clip_grad=-1", "config key 'optim.clip_grad' must be at least 0, got -1.0"),
    ("optim.lr=nan", "config key 'optim.lr' must be a number, got 'nan'"),
    ("optim.lr=.nan", "config key 'optim.lr' must be a finite number, got nan"),
    ("optim.lr=1e400", "config key 'optim.lr' must be a finite number, got inf"),
    ("optim.eps=-1", "config key 'optim.eps' must be more than 0, got -1.0"),
    ("optim.betas=[2, 0.5]", "config key 'optim.betas' must be at least 0 and less than 1, got 2.0"),
    ("optim.label_smoothing=2", "config key 'optim.label_smoothing' must be at least 0 and less than 1, got 2.0"),
    ("data.workers=-1", "config key 'data.workers' must be at least 0, got -1"),
    ("data.cache_gb=.nan", "config key 'data.cache_gb' must be a finite number, got nan"),
    ("data.cache_gb=nan", "config key 'data.cache_gb' must be a number, got 'nan'"),
    ("model.num_classes=1e9", "config key 'model.num_classes' must be an integer, got 1000000000.0"),
    ("model.num_classes=1000000000", "config key 'model.num_classes': 1000000000 classes is more than the cap "
                                     "of 100000 (raise it with FLUXVIT_MAX_NUM_CLASSES)"),
    ("device=abc", "device 'abc' is not one of auto, cpu, cuda, cuda:N"),
    ("flux.frames=[1, 1000000000, 1]", f"flux.frames [1, 1000000000, 1]: a grid of 1000000000 frames at 84 px: "
                                       f"36000000000 {CAP}"),
    ("eval.grid=2000x224", f"eval.grid 2000x224: 512000 {CAP}"),
    ("steps=1e9", "config key 'steps' must be an integer, got 1000000000.0"),
    ("steps=-1", "config key 'steps' must be at least 1, got -1"),
    ("steps=" + "9" * 400, "micro-batches, more than the 4611686018427387904 a run can plan"),
    # --- top level
    ("seed=0", None), ("seed=-1", "config key 'seed' must be at least 0 and less than 9223372036854775808, got -1"),
    ("seed=9223372036854775807", None), ("seed=9223372036854775808", "less than 9223372036854775808"),
    ("steps=1", None), ("steps=0", "config key 'steps' must be at least 1, got 0"),
    ("log_every=1", None), ("log_every=0", "config key 'log_every' must be at least 1, got 0"),
    ("ckpt_every=1", None), ("ckpt_every=0", "config key 'ckpt_every' must be at least 1, got 0"),
    ("keep_last=1", None), ("keep_last=0", "config key 'keep_last' must be at least 1, got 0"),
    ("max_bad_steps=1", None), ("max_bad_steps=0", "config key 'max_bad_steps' must be at least 1, got 0"),
    ("ema_decay=0", None), ("ema_decay=null", None), ("ema_decay=0.9999", None),
    ("ema_decay=1", "config key 'ema_decay' must be at least 0 and less than 1, got 1.0"),
    ("ema_decay=-0.1", "config key 'ema_decay' must be at least 0 and less than 1, got -0.1"),
    ("device=cpu", None), ("device=cuda:0", None), ("device=cpu:0", "device 'cpu:0' is not one of"),
    ("device=gpu", "device 'gpu' is not one of auto, cpu, cuda, cuda:N"),
    ("precision=bf16", None), ("precision=fp16", None),
    ("precision=fp8", "precision 'fp8' is not one of fp32, bf16, fp16"),
    ("out_dir=''", "out_dir is empty"),
    # --- model
    ("model.num_classes=1", None),
    ("model.num_classes=0", "config key 'model.num_classes' must be at least 1, got 0"),
    ("model.num_classes=100000", None), ("model.num_classes=100001", "100001 classes is more than the cap of 100000"),
    ("model.head_budgets=[256, 128, 1]", None),
    ("model.head_budgets=[256, 128, 0]", "config key 'model.head_budgets' must be at least 1, got 0"),
    ("model.head_budgets=[131073]", f"config key 'model.head_budgets': 131073 {CAP}"),
    ("model.drop_path=0", None), ("model.drop_path=0.99", None),
    ("model.drop_path=1", "config key 'model.drop_path' must be at least 0 and less than 1, got 1.0"),
    ("model.drop_path=-0.01", "config key 'model.drop_path' must be at least 0 and less than 1, got -0.01"),
    ("model.name=fluxvit_huge", "unknown model 'fluxvit_huge'"),
    ("model.checkpoint={tmp}/missing.safetensors", "missing.safetensors: no such file"),
    # --- data
    ("data.source=hdf5", "data.source 'hdf5' is not one of csv, synthetic"),
    ("data.train_per_class=1", None), ("data.train_per_class=0", "'data.train_per_class' must be at least 1, got 0"),
    ("data.val_per_class=1", None), ("data.val_per_class=0", "'data.val_per_class' must be at least 1, got 0"),
    ("data.train_per_class=100000", "data.train_per_class + data.val_per_class for 10 classes: 1000160 synthetic "
                                    "clips is more than the cap of 1000000"),
    ("data.size=32", None), ("data.size=30", "config key 'data.size' must be at least 32, got 30"),
    ("data.size=33", "config key 'data.size' must be an even number of pixels, got 33"),
    (("data.size=4096", "data.frames=8"), None),
    ("data.size=4098", "config key 'data.size' 4098: 16793604 pixels per frame is more than the cap of 16777216"),
    ("data.size=4096", "data.frames 16 x data.size 4096: 268435456 decoded pixels in one clip is more than the cap"),
    ("data.frames=2", None), ("data.frames=1", "config key 'data.frames' must be at least 2, got 1"),
    ("data.classes=[nope]", "data.classes: unknown synthetic class 'nope' in variant default (known: brighten,"),
    ("data.variant=events", None), ("data.variant=nope", "data.variant: unknown synthetic variant 'nope' (known: "),
    (("data.variant=events", "data.classes=[brighten]"),
     "data.classes: unknown synthetic class 'brighten' in variant events (known: flash_1,"),
    # clutter draws clips of up to 40 frames whatever data.frames says: the cap counts those
    (("data.variant=clutter", "data.size=2048"), "data.frames 40 x data.size 2048: 167772160"),
    ("data.size=2048", None),  # 16 frames of it fit
    ("data.classes=[plain, plain]", "data.classes: must name each class once"),
    ("data.batch_size=1", None), ("data.batch_size=0", "config key 'data.batch_size' must be at least 1, got 0"),
    ("data.batch_size=1024", None),
    ("data.batch_size=1025", "'data.batch_size': 1025 videos per forward is more than the cap of 1024"),
    ("data.workers=0", None), ("data.workers=64", None),
    ("data.workers=65", "config key 'data.workers': 65 worker processes is more than the cap of 64"),
    ("data.cache_gb=0", None), ("data.cache_gb=-0.001", "config key 'data.cache_gb' must be at least 0, got -0.001"),
    ("data.crop_scale=[0.001, 1]", None), ("data.crop_scale=[0, 1]", "data.crop_scale must be [min, max] with 0 <"),
    ("data.crop_ratio=[0.5, 2]", None), ("data.crop_ratio=[0, 1]", "data.crop_ratio must be [min, max] with 0 <"),
    # --- flux: every range end must make a grid within the token cap (at the other range's start)
    ("flux.frames=[4, 3640, 2]", None),  # 3640 frames x (84 / 14)**2 = 131040 tokens
    ("flux.frames=[4, 3642, 2]", f"a grid of 3642 frames at 84 px: 131112 {CAP}"),
    ("flux.frames=[0, 16, 2]", "config key 'flux.frames' must be at least 1, got 0"),
    ("flux.frames=[16, 4, 2]", "flux.frames [16, 4, 2]: stop 4 is below start 16"),
    ("flux.frames=[4, 16]", "flux.frames must be [start, stop, step], got [4, 16]"),
    ("flux.sizes=[84, 2534, 14]", None),  # 4 frames x 181**2 = 131044 tokens
    ("flux.sizes=[84, 2548, 14]", f"a grid of 4 frames at 2548 px: 132496 {CAP}"),
    ("flux.sizes=[84, 112, 0]", "config key 'flux.sizes' must be at least 1, got 0"),
    ("flux.min_tokens=1", None), ("flux.min_tokens=0", "config key 'flux.min_tokens' must be at least 1, got 0"),
    ("flux.min_tokens=1025", "flux.min_tokens 1025 is more than flux.max_tokens 1024"),
    ("flux.max_tokens=1000000000", None),  # no flux grid of these ranges has more than 1024 tokens anyway
    (("flux.frames=[4, 3640, 2]", "flux.max_tokens=131072"), None),
    (("flux.frames=[4, 3640, 2]", "flux.max_tokens=131073"), f"up to 131073 tokens: 131073 {CAP}"),
    (("objective.name=fixed", "flux.fixed=512x224"), None),  # 512 x 16**2 = 131072 tokens
    (("objective.name=fixed", "flux.fixed=513x224"), f"flux.fixed 513x224: 131328 {CAP}"),
    (("objective.name=fixed", "flux.fixed=8x100"), "flux.fixed: resolution height 100 is not a multiple of"),
    # --- objective
    ("objective.name=sideways", "objective.name 'sideways' is not one of fixed, flux, flux_multi, distill"),
    (("objective.name=flux", "objective.budget=1"), None),
    (("objective.name=flux", "objective.budget=0"), "config key 'objective.budget' must be at least 1, got 0"),
    (("objective.name=flux", "objective.budget=1024"), None),
    (("objective.name=flux", "objective.budget=1025"), "token budget 1025 is larger than any flux grid (1024 tokens)"),
    (("objective.name=flux", "objective.head=0"), None), (("objective.name=flux", "objective.head=2"), None),
    (("objective.name=flux", "objective.head=-1"), "config key 'objective.head' must be at least 0, got -1"),
    (("objective.name=flux", "objective.head=3"), "objective.head 3 does not exist (3 heads)"),
    ("objective.align_weight=0", None),
    ("objective.align_weight=-0.5", "config key 'objective.align_weight' must be at least 0, got -0.5"),
    (DISTILL, None), ((*DISTILL, "objective.token_weight=0"), None),
    ((*DISTILL, "objective.token_weight=-1"), "config key 'objective.token_weight' must be at least 0, got -1.0"),
    ((*DISTILL, "objective.pooled_weight=-1"), "config key 'objective.pooled_weight' must be at least 0"),
    ((*DISTILL, "objective.supervised_weight=-1"), "config key 'objective.supervised_weight' must be at least 0"),
    ((*DISTILL, "objective.token_weight=0", "objective.pooled_weight=0"),
     "token_weight, pooled_weight and supervised_weight all 0: nothing would be learned"),
    ((*DISTILL, "objective.teacher_grid=512x224"), None),
    ((*DISTILL, "objective.teacher_grid=513x224"), f"objective.teacher_grid 513x224: 131328 {CAP}"),
    ((*DISTILL, "objective.teacher_grid=8x100"),
     "objective.teacher_grid: resolution height 100 is not a multiple of the patch size 14"),
    ((*DISTILL, "objective.teacher_grid=8x"), "objective.teacher_grid: grid '8x' is not of the form TxR"),
    # --- optim
    (("optim.lr=1e-9", "optim.min_lr=0", "optim.warmup_lr=0"), None),
    ("optim.lr=0", "config key 'optim.lr' must be more than 0, got 0.0"),
    ("optim.min_lr=0", None), ("optim.min_lr=1e-3", None),
    ("optim.min_lr=-1e-9", "config key 'optim.min_lr' must be at least 0, got -1e-09"),
    ("optim.min_lr=0.0011", "optim.min_lr 0.0011 is more than optim.lr 0.001"),
    ("optim.warmup_lr=0", None), ("optim.warmup_lr=1e-3", None),
    ("optim.warmup_lr=-1e-9", "config key 'optim.warmup_lr' must be at least 0, got -1e-09"),
    ("optim.warmup_lr=0.002", "optim.warmup_lr 0.002 is more than optim.lr 0.001"),
    (("optim.warmup_steps=0", "optim.warmup_lr=0.002"), None),  # no warm-up: its start is unused
    ("optim.warmup_steps=0", None), ("optim.warmup_steps=300", None),
    ("optim.warmup_steps=-1", "config key 'optim.warmup_steps' must be at least 0, got -1"),
    ("optim.weight_decay=0", None), ("optim.weight_decay=999", None),  # lr x weight_decay = 0.999
    ("optim.weight_decay=-0.01", "config key 'optim.weight_decay' must be at least 0, got -0.01"),
    ("optim.weight_decay=1000", "optim.lr x optim.weight_decay is 1; it must be below 1"),
    ("optim.betas=[0, 0.999]", None), ("optim.betas=[0.9, 0.999999]", None),
    ("optim.betas=[0.9, 1]", "config key 'optim.betas' must be at least 0 and less than 1, got 1.0"),
    ("optim.betas=[-0.1, 0.9]", "config key 'optim.betas' must be at least 0 and less than 1, got -0.1"),
    ("optim.betas=[0.9]", "optim.betas must be two numbers, got [0.9]"),
    ("optim.eps=1e-12", None), ("optim.eps=0", "config key 'optim.eps' must be more than 0, got 0.0"),
    ("optim.layer_decay=1", None), ("optim.layer_decay=0.01", None),
    ("optim.layer_decay=1.01", "config key 'optim.layer_decay' must be at most 1, got 1.01"),
    ("optim.layer_decay=0", "config key 'optim.layer_decay' must be more than 0, got 0.0"),
    ("optim.clip_grad=0", None), ("optim.clip_grad=null", None), ("optim.clip_grad=1.0", None),  # 0 / null: off
    ("optim.clip_grad=-0.001", "config key 'optim.clip_grad' must be at least 0, got -0.001"),
    ("optim.accum_steps=1", None), ("optim.accum_steps=0", "config key 'optim.accum_steps' must be at least 1, got 0"),
    ("optim.label_smoothing=0", None), ("optim.label_smoothing=0.99", None),
    ("optim.label_smoothing=1", "config key 'optim.label_smoothing' must be at least 0 and less than 1, got 1.0"),
    ("optim.label_smoothing=-0.1", "must be at least 0 and less than 1, got -0.1"),
    ("optim.mixup=0", None), ("optim.mixup=-0.1", "config key 'optim.mixup' must be at least 0, got -0.1"),
    ("optim.cutmix=0", None), ("optim.cutmix=-0.1", "config key 'optim.cutmix' must be at least 0, got -0.1"),
    ("optim.mixup_prob=0", None), ("optim.mixup_prob=1", None),
    ("optim.mixup_prob=1.01", "config key 'optim.mixup_prob' must be between 0 and 1, got 1.01"),
    ("optim.mixup_prob=-0.01", "config key 'optim.mixup_prob' must be between 0 and 1, got -0.01"),
    ("optim.mixup_switch_prob=0", None), ("optim.mixup_switch_prob=1", None),
    ("optim.mixup_switch_prob=1.5", "config key 'optim.mixup_switch_prob' must be between 0 and 1, got 1.5"),
    # --- eval
    ("eval.every=0", None), ("eval.every=-1", "config key 'eval.every' must be at least 0, got -1"),
    ("eval.grid=512x224", None), ("eval.grid=513x224", f"eval.grid 513x224: 131328 {CAP}"),
    ("eval.grid=8x100", "eval.grid: resolution height 100 is not a multiple of the patch size 14"),
    ("eval.grid=8by112", "eval.grid: grid '8by112' is not of the form TxR or TxHxW"),
    ("eval.budget=1", None), ("eval.budget=0", "config key 'eval.budget' must be at least 1, got 0"),
    ("eval.budget=512", None),  # the 8x112 grid's 8 x 8**2 tokens
    ("eval.budget=513", "eval.grid: token budget 513 is larger than the 512 tokens of grid 8x112x112"),
    ("eval.max_clips=1", None), ("eval.max_clips=0", "config key 'eval.max_clips' must be at least 1, got 0"),
]

REFUSED = [(o, m) for o, m in TRAIN_VALUE_CASES if m is not None]
ACCEPTED = [o for o, m in TRAIN_VALUE_CASES if m is None]


def _overrides(case, tmp_path: Path) -> list[str]:
    texts = [case] if isinstance(case, str) else list(case)
    return [t.replace("{tmp}", str(tmp_path)) for t in texts]


def _case_id(case) -> str:
    text = case if isinstance(case, str) else " ".join(case)
    return text if len(text) < 60 else text[:57] + "..."


@pytest.fixture
def workdir(tmp_path):
    """A folder with a (stand-in) teacher checkpoint: the config check only asks that it exists."""
    (tmp_path / "teacher.safetensors").write_bytes(b"weights")
    return tmp_path


def _value(cfg: TrainConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _parsed(raw: str):
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@pytest.mark.parametrize("case", ACCEPTED, ids=_case_id)
def test_boundary_values_are_accepted_and_set(case, workdir):
    overrides = _overrides(case, workdir)
    cfg = load_config(BASE, overrides)
    for text in overrides:
        key, raw = text.split("=", 1)
        assert _value(cfg, key) == _parsed(raw), text


@pytest.mark.parametrize("case, message", REFUSED, ids=[_case_id(c) for c, _ in REFUSED])
def test_bad_values_end_in_one_line_before_anything_is_made(case, message, workdir, capsys):
    run_dir = workdir / "run"
    overrides = [f"out_dir={run_dir}", *_overrides(case, workdir)]
    with pytest.raises(ConfigError) as info:  # first in the library: a miss must not start a training
        load_config(BASE, overrides)
    assert message in str(info.value) and "\n" not in str(info.value)
    argv = ["train", str(BASE)]
    for text in overrides:
        argv += ["--set", text]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fluxvit train: error: ") and "Traceback" not in err, err
    assert message in err and len(err) < 400, err
    assert not run_dir.exists()
    assert sorted(p.name for p in workdir.iterdir()) == ["teacher.safetensors"]  # nothing half-written


def test_a_billion_frames_is_refused_at_once():
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="a grid of 1000000000 frames at 84 px: 36000000000 tokens"):
        load_config(BASE, ["flux.frames=[1, 1000000000, 1]"])
    assert time.perf_counter() - start < 0.5
    # FluxGrid itself stops at the first frame count over max_tokens: the same range lists fast,
    # and exactly the grids within [256, 1024] tokens (T <= 1024 / 36 = 28 at 84 px).
    start = time.perf_counter()
    family = FluxGrid((1, 10**9, 1), (84, 112, 14), 256, 1024, 14)
    assert time.perf_counter() - start < 0.5
    expected = [Grid(t, r) for t in range(1, 29) for r in (84, 98, 112) if 256 <= t * (r // 14) ** 2 <= 1024]
    assert list(family.grids) == expected and family.grids[-1] == Grid(28, 84)
    with pytest.raises(ConfigError, match=re.escape(f"up to 1000000000 tokens: 1000000000 {CAP}")):
        FluxGrid((1, 10**9, 1), (84, 112, 14), 256, 10**9, 14)  # refused before any listing


def test_caps_are_raised_by_their_settings(monkeypatch):
    with pytest.raises(ConfigError, match="eval.grid 2000x224: 512000 tokens"):
        load_config(BASE, ["eval.grid=2000x224"])
    monkeypatch.setenv("FLUXVIT_MAX_GRID_TOKENS", "512000")
    assert load_config(BASE, ["eval.grid=2000x224"]).eval.grid == "2000x224"
    monkeypatch.setenv("FLUXVIT_MAX_BATCH_SIZE", "4")
    with pytest.raises(ConfigError, match="'data.batch_size': 8 videos per forward is more than the cap of 4"):
        load_config(BASE)


def test_yaml_file_values_are_read_and_checked(tmp_path, capsys):
    """A file reads 1e-4 as the number (YAML 1.1 alone would give the string '1e-4'), and
    refuses what an override refuses, naming the file."""
    path = tmp_path / "c.yaml"
    path.write_text(f"out_dir: {tmp_path / 'run'}\noptim:\n  lr: 1e-4\n  min_lr: 1.0e-7\n  warmup_lr: 1E-7\n")
    cfg = load_config(path)
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_lr) == (1e-4, 1e-7, 1e-7)
    for body, message in (("model:\n  num_classes: 1e9\n", "'model.num_classes' must be an integer, got 1000000000.0"),
                          ("data:\n  cache_gb: .nan\n", "'data.cache_gb' must be a finite number, got nan"),
                          ("optim:\n  clip_grad: -1\n", "'optim.clip_grad' must be at least 0, got -1.0"),
                          ("flux:\n  frames: [1, 1000000000, 1]\n", "a grid of 1000000000 frames at")):
        path.write_text(f"out_dir: {tmp_path / 'run'}\n{body}")
        assert main(["train", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert not (tmp_path / "run").exists()


def test_a_config_built_in_code_is_checked_too():
    cfg = TrainConfig()
    cfg.optim.lr = 1  # an int where a float is wanted: taken, as a float
    validate(cfg)
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    cfg.optim.betas = [0.9, 1.0]
    with pytest.raises(ConfigError, match="'optim.betas' must be at least 0 and less than 1, got 1.0"):
        validate(cfg)
    cfg.optim.betas, cfg.data.workers = [0.9, 0.999], "4"
    with pytest.raises(ConfigError, match="config key 'data.workers' must be an integer, got '4'"):
        validate(cfg)


PAIRS = {"data.crop_scale", "data.crop_ratio"}  # ranges checked as [min, max] pairs by validate()


def test_every_numeric_field_declares_its_range():
    def numeric(hint) -> bool:
        args = typing.get_args(hint)
        return hint in (int, float) or any(numeric(a) for a in args if a is not type(None))

    def walk(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                yield from walk(hint, f"{prefix}{f.name}.")
            elif numeric(hint):
                yield f"{prefix}{f.name}", f

    fields = dict(walk(TrainConfig))
    assert len(fields) > 40
    missing = sorted(k for k, f in fields.items() if "range" not in f.metadata and k not in PAIRS)
    assert missing == []


def test_library_doors_refuse_out_of_range_values():
    from fluxvit.train.ema import ModelEma
    from fluxvit.train.mixup import mix_batch
    from fluxvit.train.optim import param_groups

    with pytest.raises(ConfigError, match="EMA 'decay' must be between 0 and 1, got 1.5"):
        ModelEma(torch.nn.Linear(2, 2), 1.5)
    video, target = torch.zeros(2, 3, 1, 4, 4), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match="mixup 'prob' must be between 0 and 1, got 2"):
        mix_batch(video, target, 2, torch.Generator().manual_seed(0), mixup=0.8, prob=2)
    with pytest.raises(ConfigError, match="mixup 'cutmix' must be at least 0, got -1"):
        mix_batch(video, target, 2, torch.Generator().manual_seed(0), cutmix=-1)
    with pytest.raises(ConfigError, match="optimiser 'layer_decay' must be more than 0, got 0"):
        param_groups({"model": torch.nn.Linear(2, 2)}, 1, 0.05, 0)
    mixed, soft = mix_batch(video, target, 2, torch.Generator().manual_seed(0), smoothing=0.2)
    assert torch.equal(mixed, video) and torch.allclose(soft, torch.tensor([[0.9, 0.1], [0.1, 0.9]]))
