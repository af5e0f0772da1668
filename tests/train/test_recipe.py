"""``fluxvit train CONFIG --dry-run``: the resolved recipe, checked against the release's own
arithmetic (run_flexible_finetune.py and exp/*/k400_*.sh) for its 64 GPUs."""

from __future__ import annotations

import pytest

from fluxvit.cli import main
from fluxvit.train.config import load_config
from fluxvit.train.recipe import describe

K400_VIDEOS = 240_436  # a Kinetics-400 training list of this length (any length checks the arithmetic)

# The release's k400 script and argument defaults.
RELEASE = {"gpus": 64, "batch_size": 8, "num_sample": 2, "update_freq": 1, "lr": 2e-4, "min_lr": 1e-6,
           "warmup_lr": 1e-6, "epochs": 5, "warmup_epochs": 1, "layer_decay": 0.75, "aa": "rand-m7-n4-mstd0.5-inc1",
           "reprob": 0.25, "remode": "pixel", "recount": 1, "mixup": 0.8, "cutmix": 1.0, "smoothing": 0.1}


def release_layer_id(name: str, depth: int) -> int:
    """The release's get_num_layer_for_vit, on its parameter names (ours map onto them: pos_embed.table
    and pos_embed.cls are its pos_embed, pos_embed.proj its gpe_proj, which matches no rule)."""
    release = {"pos_embed.table": "pos_embed", "pos_embed.cls": "pos_embed"}.get(name, name)
    if release in ("cls_token", "mask_token", "pos_embed"):
        return 0
    if release.startswith("patch_embed"):
        return 0
    if release.startswith("blocks"):
        return int(release.split(".")[1]) + 1
    return depth + 1


@pytest.fixture(scope="module")
def k400_list(tmp_path_factory):
    path = tmp_path_factory.mktemp("k400") / "train.csv"
    path.write_text("".join(f"train/{i:06d}.mp4 {i % 400}\n" for i in range(K400_VIDEOS)))
    return path


@pytest.mark.parametrize("name,depth", [("small", 12), ("base", 12)])
def test_the_k400_recipes_resolve_to_the_release_numbers_on_64_gpus(name, depth):
    cfg = load_config(f"configs/k400_fluxvit_{name}_flux_multi.yaml")
    r = describe(cfg, world=RELEASE["gpus"], num_videos=K400_VIDEOS)  # the dry run below counts a real list
    total_batch = RELEASE["batch_size"] * RELEASE["update_freq"] * RELEASE["gpus"]  # videos per step
    steps_per_epoch = K400_VIDEOS // total_batch
    scale = total_batch * RELEASE["num_sample"] / 256
    b, s = r["batch"], r["schedule"]
    assert b["videos_per_step"] == total_batch and b["clips_per_step"] == total_batch * RELEASE["num_sample"]
    assert b["videos_per_rank"] == RELEASE["batch_size"] and b["repeated_aug"] == RELEASE["num_sample"]
    assert s["videos"] == K400_VIDEOS and s["steps_per_epoch"] == steps_per_epoch
    assert s["steps"] == RELEASE["epochs"] * steps_per_epoch and s["epochs"] == pytest.approx(RELEASE["epochs"], 1e-3)
    assert s["warmup_steps"] == RELEASE["warmup_epochs"] * steps_per_epoch
    for key in ("lr", "min_lr", "warmup_lr"):
        assert s[key] == pytest.approx(RELEASE[key] * scale)
    assert s["lr_per_256_clips"] == pytest.approx(RELEASE["lr"])  # the script's --lr, per 256 clips
    # every parameter group at the release's layer-wise lr
    from fluxvit.models.registry import create_model
    from fluxvit.train.optim import param_groups

    groups = r["layer_groups"]
    assert {g["layer"] for g in groups} == set(range(depth + 2))
    for g in groups:
        assert g["lr"] == pytest.approx(RELEASE["lr"] * scale * RELEASE["layer_decay"] ** (depth + 1 - g["layer"]))
    import torch

    with torch.device("meta"):
        model = create_model(cfg.model.name, num_classes=400)
    for group in param_groups({"model": model}, depth, 0.05, 0.75, model.no_weight_decay()):
        for full in group["names"]:
            assert group["layer"] == release_layer_id(full.removeprefix("model."), depth), full
    a = r["augmentation"]
    assert a["rand_augment"] == RELEASE["aa"]
    assert a["random_erasing"] == {"prob": RELEASE["reprob"], "mode": RELEASE["remode"], "count": RELEASE["recount"],
                                   "per_clip": True}
    assert (a["mixup"], a["cutmix"], a["label_smoothing"], a["flip"]) == (0.8, 1.0, 0.1, True)
    g = r["grids"]
    assert g["per"] == "rank_batch" and g["frames"] == list(range(6, 25, 2)) and g["budgets"] == [3072, 2048, 1024]
    assert 2048 <= g["tokens"][0] and g["tokens"][1] <= 6144


def test_dry_run_prints_the_recipe_and_writes_nothing(k400_list, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "configs/k400_fluxvit_small_flux_multi.yaml", "--set", f"data.train={k400_list}",
                 "--set", "data.val=null", "--set", f"out_dir={out}", "--dry-run", "--world", "64"])
    text = capsys.readouterr().out
    assert code == 0 and not out.exists()
    assert "1024 clips (512 videos) per optimiser step" in text
    assert "2345 steps over 240436 videos: 469 steps per epoch, 5.00 epochs (4.994 passes" in text
    assert "peak 0.0008 (= 0.0002 per 256 clips)" in text
    assert "RandAugment rand-m7-n4-mstd0.5-inc1" in text and "random erasing p 0.25 pixel x1 per clip" in text
    # on 8 GPUs the same config takes 8x fewer clips per step: the dry run says so before any cost
    main(["train", "configs/k400_fluxvit_small_flux_multi.yaml", "--set", f"data.train={k400_list}",
          "--set", "data.val=null", "--dry-run", "--world", "8", "--videos", "1000"])
    assert "128 clips (64 videos) per optimiser step" in capsys.readouterr().out


def test_dry_run_flags_are_checked(tmp_path, capsys):
    cfg = "configs/nano_synthetic_flux_multi.yaml"
    assert main(["train", cfg, "--dry-run", "--world", "0"]) == 2
    assert "--world must be an integer from 1" in capsys.readouterr().err
    assert main(["train", cfg, "--world", "4", "--set", f"out_dir={tmp_path / 'r'}"]) == 2
    assert "--world goes with --dry-run" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["train", cfg, "--dry-run", "--set", "data.batch_size=6", "--set", "data.repeated_aug=4"]) == 2
    assert "not a multiple of data.repeated_aug 4" in capsys.readouterr().err
    assert main(["train", cfg, "--dry-run", "--set", "data.rand_augment=rand-q3"]) == 2
    assert "rand-q3" in capsys.readouterr().err
    assert main(["train", cfg, "--dry-run", "--overwrite"]) == 2
    assert "give it without --resume or --overwrite" in capsys.readouterr().err


def test_the_trainer_builds_the_augmentation_the_config_names():
    from fluxvit.data.augment import RandomErasing, parse_rand_augment
    from fluxvit.train.trainer import train_transform

    cfg = load_config("configs/k400_fluxvit_small_flux_multi.yaml")
    tf = train_transform(cfg.data)
    assert tf.augment == parse_rand_augment(RELEASE["aa"]) and str(tf.augment) == RELEASE["aa"]
    assert tf.erase == RandomErasing(RELEASE["reprob"], RELEASE["remode"], RELEASE["recount"], per_clip=True)
    assert (tf.resize, tf.flip, tf.scale, tf.ratio) == ("release", 0.5, (0.08, 1.0), (0.75, 4 / 3))
    plain = train_transform(load_config("configs/nano_synthetic_flux_multi.yaml").data)
    assert plain.augment is None and plain.erase is None and plain.resize == "antialias"


def test_the_ssv2_recipe_is_the_k400_recipe_with_the_release_ssv2_changes():
    ssv2 = load_config("configs/ssv2_fluxvit_small_flux_multi.yaml", ["data.train=x.csv"])
    k400 = load_config("configs/k400_fluxvit_small_flux_multi.yaml")
    assert (ssv2.data.flip, ssv2.data.view_offsets, ssv2.model.num_classes) == (False, "start", 174)
    r = describe(ssv2, world=RELEASE["gpus"], num_videos=168_913)  # SSv2's training videos
    assert r["schedule"]["steps_per_epoch"] == 168_913 // 512 and r["schedule"]["epochs"] == pytest.approx(5)
    assert r["schedule"]["warmup_epochs"] == pytest.approx(1)
    same = ("rand_augment", "random_erasing", "repeated_aug", "batch_size", "resize", "crop_scale", "crop_ratio")
    assert all(getattr(ssv2.data, k) == getattr(k400.data, k) for k in same)
    assert ssv2.optim == k400.optim.__class__(**{**vars(k400.optim), "warmup_steps": 329})
    assert ssv2.flux == k400.flux and ssv2.objective == k400.objective
