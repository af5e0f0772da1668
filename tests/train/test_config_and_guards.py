"""Config errors end in one line before any work; non-finite losses are skipped, then stop the run."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import fluxvit
from fluxvit.data.sources import TensorClipSource
from fluxvit.errors import ConfigError, VideoError
from fluxvit.train import TrainingError, load_config, train
from fluxvit.train.mixup import mix_batch
from fluxvit.train.optim import cosine_lr, layer_id, param_groups

from .toy import toy_config, toy_source

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_yaml_and_overrides_merge_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\noptim:\n  lr: 2.0e-4\nflux:\n  frames: [4, 8, 2]\n")
    cfg = load_config(path, ["optim.lr=3e-4", "model.drop_path=0.1", "flux.fixed=8x112", "objective.name=fixed"])
    assert (cfg.steps, cfg.optim.lr, cfg.model.drop_path, cfg.flux.frames) == (7, 3e-4, 0.1, [4, 8, 2])
    assert cfg.optim.weight_decay == 0.05  # untouched default


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr'"),
    ("optim.lr=fast", "'optim.lr' must be a number"),
    ("steps=1.5", "'steps' must be an integer"),
    ("objective.budget=99999", "token budget 99999 is larger than any flux grid"),
    ("flux.sizes=[112,336,20]", "flux sizes \\(112, 336, 20\\) are not multiples of the patch size 14"),
    ("eval.grid=8x100", "not a multiple of the patch size 14"),
    ("objective.name=sideways", "objective.name 'sideways' is not one of"),
    ("nonsense", "is not of the form key=value"),
    ("data.crop_scale=[0.5,1.5]", "data.crop_scale must be \\[min, max\\] with 0 < min <= max <= 1"),
    ("data.crop_scale=[0.5]", "data.crop_scale must be"),
    ("data.crop_ratio=[2,1]", "data.crop_ratio must be \\[min, max\\]"),
])
def test_bad_settings_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, ["objective.name=flux", override] if "objective.name" not in override else [override])
    assert "\n" not in str(info.value)


def test_each_objective_states_its_budgets_once():
    """The budgets a config trains at come from its objective's own rule, the same for the
    config check, the trainer's token count and its validation."""
    from fluxvit.train.objectives import OBJECTIVES
    from fluxvit.train.trainer import eval_setup, tokens_per_clip

    cfg = load_config(None, ["objective.name=flux_multi"])
    model = fluxvit.create_model(cfg.model.name)
    assert OBJECTIVES["flux_multi"].budgets(cfg.objective, model.budgets) == [256, 128, 64]
    assert eval_setup(cfg, model) == (model.default_grid, [256, 128, 64])
    assert tokens_per_clip(cfg, model, model.default_grid) == 256 + 128 + 64
    flux = load_config(None, ["objective.name=flux"])
    # single-budget flux: the middle head's budget, as the release's single engine
    assert eval_setup(flux, model)[1] == [128] and tokens_per_clip(flux, model, model.default_grid) == 128
    fixed = load_config(None, ["objective.name=fixed", "flux.fixed=8x112"])
    assert eval_setup(fixed, model)[1] == [None] and tokens_per_clip(fixed, model, model.default_grid) == 512
    with pytest.raises(ConfigError, match="objective.budget is not used by flux_multi"):
        load_config(None, ["objective.name=flux_multi", "objective.budget=128"])


def test_unloadable_teacher_fails_before_any_work(tmp_path):
    bad = tmp_path / "teacher.safetensors"
    bad.write_bytes(b"not a checkpoint")
    cfg = toy_config(tmp_path / "run", "distill", 5, objective={
        "name": "distill", "teacher": "fluxvit_nano_patch14", "teacher_checkpoint": str(bad)})
    with pytest.raises(ConfigError, match="teacher fluxvit_nano_patch14 from .*cannot be loaded"):
        train(cfg, toy_source(2, 0))
    with pytest.raises(ConfigError, match="no such file"):
        cfg["objective"]["teacher_checkpoint"] = str(tmp_path / "missing.pt")
        train(cfg, toy_source(2, 0))


def test_cli_prints_one_line_and_exits_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optim": {"lr": "fast"}}))
    run = subprocess.run([sys.executable, "-m", "fluxvit", "train", str(path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    expected = f"fluxvit train: error: {path}: config key 'optim.lr' must be a number, got 'fast'"
    assert run.stderr.strip().splitlines() == [expected]
    path.write_text("steps: 3\n")
    run = subprocess.run([sys.executable, "-m", "fluxvit", "train", str(path), "--set", "optim.lr=0.1",
                          "--set", "steps=[1]"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    expected = "fluxvit train: error: --set steps=[1]: config key 'steps' must be an integer, got [1]"
    assert (run.returncode, run.stderr.strip().splitlines()) == (2, [expected])


def test_final_config_is_written_beside_the_run(tmp_path):
    result = train(toy_config(tmp_path, "fixed", 2), toy_source(2, 0))
    saved = load_config(result.run_dir / "config.yaml")
    assert saved.steps == 2 and saved.flux.fixed == "8x56" and saved.out_dir == str(tmp_path)


class _Poisoned(TensorClipSource):
    """Clips that are all NaN while ``poison`` is set (a diverging run in miniature)."""

    def clip(self, index, grid, generator, train):
        video, label = super().clip(index, grid, generator, train)
        return (video * float("nan") if self.poison else video), label


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path):
    source = _Poisoned(*_parts(toy_source(2, 0)))
    source.poison = True
    with pytest.raises(TrainingError, match="stopped at step 3: 3 non-finite losses in a row"):
        train(toy_config(tmp_path, "fixed", 10, max_bad_steps=3), source)
    records = [yaml.safe_load(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records] == [1, 2]
    assert records[0]["loss"] is None  # NaN is written as null: the file stays JSON


def _parts(source):
    return source.videos, source.labels, source.classes


def test_layer_decay_groups_and_schedule():
    import fluxvit

    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=3)
    assert [layer_id(n, 6) for n in ("cls_token", "pos_embed.table", "blocks.0.norm1.weight",
                                     "blocks.5.mlp.fc1.weight", "heads.0.weight")] == [0, 0, 1, 6, 7]
    groups = param_groups({"model": model}, 6, 0.05, 0.5, model.no_weight_decay())
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["model.blocks.0.attn.qkv.weight"]["lr_scale"] == 0.5 ** 6
    assert by_name["model.heads.0.weight"]["lr_scale"] == 1.0
    assert by_name["model.pos_embed.table"]["weight_decay"] == 0.0  # no_weight_decay()
    assert by_name["model.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    assert by_name["model.blocks.0.norm1.weight"]["weight_decay"] == 0.0  # 1-D
    lrs = [cosine_lr(s, 100, 1e-3, 1e-6, 10, 1e-6) for s in range(100)]
    assert lrs[0] == 1e-6 and lrs[10] == pytest.approx(1e-3) and lrs[-1] < 1e-5
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11]))


def _release_layer(key: str, depth: int) -> int:
    """The release's rule (optim_factory.get_num_layer_for_vit, num_max_layer = depth + 2) on
    one of its parameter names, written out from its text."""
    if key in ("cls_token", "mask_token", "pos_embed") or key.startswith("patch_embed"):
        return 0
    if key.startswith("blocks"):
        return int(key.split(".")[1]) + 1
    return depth + 1


def test_layer_ids_match_the_releases_rule_for_every_parameter_of_s_and_b():
    """Every tensor of the release's FluxViT-S (B has the same names: 12 blocks, the same heads),
    through our conversion's renaming: the same layer as the release gives it. Its positional
    projection (gpe_proj) matches none of the release's rules and trains at the top layer's lr."""
    from fluxvit.models.release import _our_name
    from tests.models.official_format import DEPTH, official_shapes

    keys = [k for k, _ in official_shapes()]
    assert "gpe_proj.depthwise_conv.weight" in keys
    for key in keys:
        ours = ["pos_embed.table", "pos_embed.cls"] if key == "pos_embed" else [_our_name(key)]
        for name in ours:
            assert layer_id(name, DEPTH) == _release_layer(key, DEPTH), (key, name)
    assert layer_id("pos_embed.proj.weight", DEPTH) == DEPTH + 1
    converted = {n for k in keys for n in (["pos_embed.table", "pos_embed.cls"] if k == "pos_embed"
                                           else [_our_name(k)])}
    import fluxvit

    for model_name in ("fluxvit_small_patch14", "fluxvit_base_patch14"):  # none of our names escapes the check
        names = {n for n, _ in fluxvit.create_model(model_name, num_classes=4).named_parameters()}
        assert names <= converted, sorted(names - converted)[:5]


def test_single_budget_flux_defaults_to_the_releases_middle_head():
    """The release's single-budget engine trains S/B at 2048 tokens through head 1 (its
    k400_single recipe: MAX_TOKEN_COUNT=2048, OUTPUT_HEAD=1), not at head 0's 3072."""
    import fluxvit
    from fluxvit.train.config import ObjectiveConfig
    from fluxvit.train.objectives import SingleBudgetFlux

    assert SingleBudgetFlux.budgets(ObjectiveConfig(name="flux"), (3072, 2048, 1024)) == [2048]
    assert SingleBudgetFlux.budgets(ObjectiveConfig(name="flux", budget=3072), (3072, 2048, 1024)) == [3072]
    model = fluxvit.create_model("fluxvit_small_patch14", num_classes=4)
    assert model.head_for(2048) == 1
    assert SingleBudgetFlux.budgets(ObjectiveConfig(name="flux"), (256, 128, 64)) == [128]  # nano: its middle too


def test_mixup_and_cutmix_give_normalised_soft_targets():
    video = torch.randn(4, 3, 2, 28, 28)
    target = torch.tensor([0, 1, 2, 3])
    for mixup, cutmix in ((0.8, 0.0), (0.0, 1.0)):
        mixed, soft = mix_batch(video, target, 5, torch.Generator().manual_seed(0), mixup, cutmix, smoothing=0.1)
        assert mixed.shape == video.shape and soft.shape == (4, 5)
        torch.testing.assert_close(soft.sum(1), torch.ones(4))
        assert not torch.equal(mixed, video)


def test_crop_settings_reach_the_training_clips():
    """With whole-frame crops and no flip, a training clip that takes every frame is exactly the
    evaluation clip; with the release's default crops it is not."""
    from fluxvit.flux.grid import Grid
    from fluxvit.train.trainer import build_sources

    common = ["objective.name=flux", "data.train_per_class=1", "data.val_per_class=1", "data.flip=false",
              "data.classes=[stripes_h]", "data.frames=4", "data.size=56"]
    grid, gen = Grid(4, 56), torch.Generator().manual_seed(0)
    whole, _ = build_sources(load_config(None, common + ["data.crop_scale=[1,1]", "data.crop_ratio=[1,1]"]))
    assert torch.equal(whole.clip(0, grid, gen, train=True)[0], whole.clip(0, grid, gen, train=False)[0])
    default, _ = build_sources(load_config(None, common))
    assert default.transform.scale == (0.08, 1.0)
    assert not torch.equal(default.clip(0, grid, gen, train=True)[0], default.clip(0, grid, gen, train=False)[0])


class _BrokenFirst(TensorClipSource):
    """Clip 0 cannot be read."""

    def clip(self, index, grid, generator, train):
        if index == 0:
            raise VideoError("clip0.mp4: truncated")
        return super().clip(index, grid, generator, train)


def test_validation_skips_and_counts_broken_clips():
    from fluxvit.distributed import DistInfo
    from fluxvit.flux.grid import Grid
    from fluxvit.train.validation import validate

    source = _BrokenFirst(*_parts(toy_source(2, 0)))
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=4, depth=1)
    info = DistInfo()
    acc = validate(model, source, Grid(8, 56), [None], info, batch_size=4)
    assert acc["val_broken"] == 1
    model.eval()
    with torch.no_grad():  # the accuracy is over the 7 readable clips
        clips = [source.clip(i, Grid(8, 56), None, train=False) for i in range(1, 8)]
        hits = (model(torch.stack([c[0] for c in clips])).argmax(-1) == torch.tensor([c[1] for c in clips])).sum()
    assert acc["acc@128"] == pytest.approx(100.0 * int(hits) / 7)
    everything_broken = _BrokenFirst(source.videos[:1], source.labels[:1], source.classes)
    with pytest.raises(VideoError, match="none of the 1 clips could be read"):
        validate(model, everything_broken, Grid(8, 56), [None], info)


def test_annotation_file_whose_videos_are_all_missing_fails_before_training(tmp_path):
    from fluxvit.train.trainer import build_sources

    (tmp_path / "train.csv").write_text("a.mp4 0\nb.mp4 1\n")
    cfg = load_config(None, ["objective.name=flux", "data.source=csv", f"data.train={tmp_path / 'train.csv'}"])
    with pytest.raises(ConfigError, match=r"train.csv: none of its 2 videos exist \(first: .*a.mp4\); set data.root"):
        build_sources(cfg)


def test_decoded_frame_cache_gives_the_same_clips(tmp_path):
    """``data.cache_gb``: the csv source decodes each video once and then gives exactly the clips
    the uncached pipeline gives, for training (random frames and crops) and validation."""
    from fluxvit.data.synthetic import make_synthetic_dataset
    from fluxvit.flux.grid import Grid
    from fluxvit.train.trainer import build_sources

    make_synthetic_dataset(tmp_path, classes=["grow", "checker"], per_class=4, size=56, frames=8,
                           val_fraction=0.5, workers=1)
    common = ["data.source=csv", f"data.train={tmp_path / 'train.csv'}", f"data.val={tmp_path / 'val.csv'}"]
    plain, plain_val = build_sources(load_config(None, common))
    cached, cached_val = build_sources(load_config(None, [*common, "data.cache_gb=0.5"]))
    for epoch in range(2):
        for i in range(len(plain)):
            grid = Grid(4 + 2 * epoch, 56)
            a = plain.clip(i, grid, torch.Generator().manual_seed(epoch * 10 + i), train=True)
            b = cached.clip(i, grid, torch.Generator().manual_seed(epoch * 10 + i), train=True)
            assert torch.equal(a[0], b[0]) and a[1] == b[1]
    reader = cached.reader
    assert len(reader._frames) == len(plain) and reader.cached_bytes == len(plain) * 8 * 56 * 56 * 3
    for i in range(len(plain_val)):
        assert torch.equal(cached_val.clip(i, Grid(8, 56), None, train=False)[0],
                           plain_val.clip(i, Grid(8, 56), None, train=False)[0])
    with pytest.raises(ConfigError, match="config key 'data.cache_gb' must be at least 0, got -1.0"):
        load_config(None, ["data.cache_gb=-1"])


def test_grid_per_is_a_choice_and_the_k400_recipes_draw_a_grid_per_rank_batch():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for name in ("k400_fluxvit_small_flux_multi.yaml", "k400_fluxvit_base_flux_multi.yaml"):
        assert load_config(root / "configs" / name).flux.grid_per == "rank_batch"
    assert load_config(None).flux.grid_per == "step"
    with pytest.raises(ConfigError, match="flux.grid_per 'epoch' is not one of step, rank_batch"):
        load_config(None, ["flux.grid_per=epoch"])
