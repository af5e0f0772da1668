"""Distillation from any teacher: tiny randomly initialised transformers models saved to a temp
folder (no download) behind the teacher adapters; time resampled by index, never blended;
several layers; mask_ratio; a distillation run then fine-tuning; the config's cheap checks."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F

import fluxvit
from fluxvit.errors import ConfigError
from fluxvit.flux.grid import Grid
from fluxvit.train import load_config, train
from fluxvit.train.metrics import read_metrics
from fluxvit.train.objectives import Distill
from fluxvit.train.teachers import (
    CLIP_MEAN,
    CLIP_STD,
    FluxViTTeacher,
    HFTeacher,
    frame_index,
    load_teacher,
    resample_tokens,
)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1, 1)
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


def _save(model, folder):
    model.save_pretrained(folder, safe_serialization=True)
    return str(folder)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Tiny CLIP (patch 14, trained at 28 px), SigLIP (patch 16, 32 px; with and without its
    pooling head) and VideoMAE (patch 16, 4 frames x 32 px, tubelet 2) saved with safetensors."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    return {
        "clip": _save(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**TINY, image_size=28, patch_size=14)),
                      root / "clip"),
        "siglip": _save(transformers.SiglipVisionModel(
            transformers.SiglipVisionConfig(**TINY, image_size=32, patch_size=16)), root / "siglip"),
        "siglip_headless": _save(transformers.SiglipVisionModel(
            transformers.SiglipVisionConfig(**TINY, image_size=32, patch_size=16, vision_use_head=False)),
            root / "siglip_headless"),
        "videomae": _save(transformers.VideoMAEModel(
            transformers.VideoMAEConfig(**TINY, image_size=32, patch_size=16, num_frames=4, tubelet_size=2)),
            root / "videomae"),
    }


def _clip(frames=8, size=56, batch=2, seed=0):
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def _renormalised(video, mean, std):
    """An ImageNet-normalised clip as a model normalised with (mean, std) expects it."""
    raw = video * IMAGENET_STD + IMAGENET_MEAN
    return (raw - torch.tensor(mean).reshape(1, 3, 1, 1, 1)) / torch.tensor(std).reshape(1, 3, 1, 1, 1)


def _student():
    return fluxvit.create_model("fluxvit_nano_patch14", num_classes=4, head_budgets=(64, 48, 32))


# ----------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("kind, size, grid, pooled", [
    ("clip", 56, (8, 4, 4), 32),  # positions interpolated from 28 px to 56 px
    ("siglip", 32, (8, 2, 2), 32),
    ("siglip_headless", 32, (8, 2, 2), None),
    ("videomae", 56, (2, 2, 2), 32),  # always its fixed 4x32 input: 4 frames / tubelet 2
])
def test_hf_teachers_give_per_frame_patch_tokens(hf_dirs, kind, size, grid, pooled):
    teacher = load_teacher("hf:" + hf_dirs[kind], None, [-1, -2])
    assert isinstance(teacher, HFTeacher) and teacher.layers == [-1, -2]
    assert teacher.feature_dims == [32, 32] and teacher.pooled_dim == pooled
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    features, pooled_feature = teacher(_clip(size=size))
    assert [tuple(f.shape) for f in features] == [(2, *grid, 32)] * 2
    assert (pooled_feature is None) if pooled is None else tuple(pooled_feature.shape) == (2, pooled)


def test_layers_are_the_models_hidden_states(hf_dirs):
    """Layer -1 is the model's last hidden state (SigLIP's after its final norm), layer -2 the
    first block's output, reshaped per frame; the clip re-normalised to the model's mean/std."""
    video = _clip(size=56)
    clip = load_teacher("hf:" + hf_dirs["clip"], None, [-1, -2])
    frames = _renormalised(video, CLIP_MEAN, CLIP_STD).transpose(1, 2).reshape(16, 3, 56, 56)
    out = clip.model(pixel_values=frames, output_hidden_states=True, interpolate_pos_encoding=True)
    features, pooled = clip(video)
    torch.testing.assert_close(features[0], out.last_hidden_state[:, 1:].reshape(2, 8, 4, 4, 32))
    torch.testing.assert_close(features[1], out.hidden_states[1][:, 1:].reshape(2, 8, 4, 4, 32))
    torch.testing.assert_close(pooled, out.pooler_output.reshape(2, 8, 32).mean(1))

    video = _clip(size=32)
    siglip = load_teacher("hf:" + hf_dirs["siglip"], None, [-1])
    frames = _renormalised(video, (0.5,) * 3, (0.5,) * 3).transpose(1, 2).reshape(16, 3, 32, 32)
    out = siglip.model(pixel_values=frames)
    torch.testing.assert_close(siglip(video)[0][0], out.last_hidden_state.reshape(2, 8, 2, 2, 32))

    video = _clip(frames=4, size=32)
    mae = load_teacher("hf:" + hf_dirs["videomae"], None, [-1])
    out = mae.model(pixel_values=_renormalised(video, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).transpose(1, 2))
    features, pooled = mae(video)
    torch.testing.assert_close(features[0], out.last_hidden_state.reshape(2, 2, 2, 2, 32))
    torch.testing.assert_close(pooled, out.last_hidden_state.mean(1))


def test_processor_file_sets_the_normalisation(hf_dirs, tmp_path):
    folder = shutil.copytree(hf_dirs["clip"], tmp_path / "clip")
    mean, std = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    video = _clip(frames=2, size=28)
    teacher = load_teacher(f"hf:{folder}", None, [-1])
    frames = _renormalised(video, tuple(mean), tuple(std)).transpose(1, 2).reshape(4, 3, 28, 28)
    expected = teacher.model(pixel_values=frames).last_hidden_state[:, 1:].reshape(2, 2, 2, 2, 32)
    torch.testing.assert_close(teacher(video)[0][0], expected)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": [1, 0, 1]}))
    with pytest.raises(ConfigError, match="image_std must be three positive numbers"):
        load_teacher(f"hf:{folder}", None, [-1])


def test_fluxvit_teacher_layers_are_block_outputs():
    model = _student().eval()
    teacher = FluxViTTeacher(model, [-1, 2])
    video = _clip(frames=4, size=42)
    features, pooled = teacher(video)
    captured = []
    handle = model.blocks[2].register_forward_hook(lambda m, a, out: captured.append(out))
    with torch.no_grad():
        tokens = model.forward_features(video)
    handle.remove()
    torch.testing.assert_close(features[0], tokens[:, 1:].reshape(2, 4, 3, 3, 96))
    torch.testing.assert_close(features[1], captured[0][:, 1:].reshape(2, 4, 3, 3, 96))
    torch.testing.assert_close(pooled, model.forward_head(tokens, 0, pre_logits=True))
    with pytest.raises(ConfigError, match="layer 6 does not exist in teacher .*6 layers: -6..5"):
        FluxViTTeacher(model, [6])


# ----------------------------------------------------------------------------- resampling
def test_frame_index_picks_the_frame_at_the_same_time():
    assert frame_index(8, 8).tolist() == list(range(8))
    assert frame_index(8, 4).tolist() == [1, 3, 5, 7]
    assert frame_index(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert frame_index(2, 6).tolist() == [0, 0, 0, 1, 1, 1]


def test_teacher_frames_are_picked_by_index_not_blended(hf_dirs):
    """A teacher seeing 4 of 8 frames (teacher_grid 4x56): the targets of student frame t are
    the teacher's features of one picked frame, exactly as computed on that frame alone."""
    base = _clip(frames=1, size=56)
    video = torch.cat([base + t for t in range(8)], dim=2)  # frame t: the same picture, shifted by t
    teacher = load_teacher("hf:" + hf_dirs["clip"], None, [-1, -2])
    distill = Distill(_student(), teacher, teacher_grid=Grid(4, 56))
    targets, _ = distill.teacher_targets(video, 14)
    assert [tuple(t.shape) for t in targets] == [(2, 8 * 16, 32)] * 2
    seen = frame_index(8, 4)  # the video frames the teacher sees: 1, 3, 5, 7
    direct, _ = teacher(video[:, :, seen])
    for layer in range(2):
        per_frame = targets[layer].reshape(2, 8, 4, 4, 32)
        for t, picked in enumerate(frame_index(4, 8).tolist()):  # 0, 0, 1, 1, 2, 2, 3, 3
            torch.testing.assert_close(per_frame[:, t], direct[layer][:, picked], rtol=1e-4, atol=1e-5)
    # Not a blend: student frame 2 sits between the teacher's frames 0 and 1 (video frames 1, 3)
    # and takes frame 1's features, not a mix of the two.
    blend = (direct[0][:, 0] + direct[0][:, 1]) / 2
    assert not torch.allclose(targets[0].reshape(2, 8, 4, 4, 32)[:, 2], blend, atol=1e-3)


def test_space_is_resampled_bilinearly(hf_dirs):
    """SigLIP (patch 16) sees 4x32 (2x2 tokens); a patch-14 student on 8x56 has 4x4: the targets
    are the teacher's per-frame grids resized bilinearly, each frame picked by index."""
    video = _clip(frames=8, size=56)
    teacher = load_teacher("hf:" + hf_dirs["siglip"], None, [-1])
    distill = Distill(_student(), teacher, teacher_grid=Grid(4, 32))
    (targets,), _ = distill.teacher_targets(video, 14)
    seen = F.interpolate(video[:, :, frame_index(8, 4)].transpose(1, 2).reshape(8, 3, 56, 56), size=(32, 32),
                         mode="bilinear", align_corners=False).reshape(2, 4, 3, 32, 32).transpose(1, 2)
    (direct,), _ = teacher(seen)
    spatial = F.interpolate(direct.reshape(8, 2, 2, 32).permute(0, 3, 1, 2), size=(4, 4), mode="bilinear",
                            align_corners=False).permute(0, 2, 3, 1).reshape(2, 4, 4, 4, 32)
    expected = spatial[:, frame_index(4, 8)]
    torch.testing.assert_close(targets.reshape(2, 8, 4, 4, 32), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(resample_tokens(direct, (8, 4, 4)), expected)


# ----------------------------------------------------------------------------- the objective
def _kept_counts(distill, student, video):
    counts = []
    forward = student.forward_features

    def spy(*args, **kwargs):
        tokens, kept = forward(*args, **kwargs)
        counts.append(tokens.shape[1] - 1)
        return tokens, kept

    student.forward_features = spy
    parts = distill(student, video, torch.zeros(video.shape[0], dtype=torch.long))
    del student.forward_features
    return counts[0], parts


def test_mask_ratio_keeps_its_share_of_each_grid(hf_dirs):
    teacher = load_teacher("hf:" + hf_dirs["clip"], None, [-1])
    student = _student()
    masked = Distill(student, teacher, budget=64, mask_ratio=0.75)
    assert _kept_counts(masked, student, _clip(frames=8, size=56))[0] == 32  # round(0.25 * 128)
    assert _kept_counts(masked, student, _clip(frames=4, size=42))[0] == 9  # round(0.25 * 36)
    assert Distill(student, teacher, mask_ratio=0.999).student_budget(_clip(size=56), 14) == 1  # at least one
    assert Distill(student, teacher, mask_ratio=0.0).student_budget(_clip(size=56), 14) is None  # every token
    # mask_ratio null: the objective's budget, capped by the grid, as before
    assert _kept_counts(Distill(student, teacher, budget=64), student, _clip(frames=8, size=56))[0] == 64
    assert Distill(student, teacher, budget=64).student_budget(_clip(frames=2, size=56), 14) is None


def test_several_layers_train_one_projection_each(hf_dirs):
    teacher = load_teacher("hf:" + hf_dirs["clip"], None, [-1, -2])
    student = _student()
    distill = Distill(student, teacher, budget=48, supervised_weight=0.5)
    assert len(distill.token_proj) == 2 and [p[1].out_features for p in distill.token_proj] == [32, 32]
    # The teacher is in no parameter list or state dict of the objective
    names = set(distill.state_dict())
    assert not any("model." in n or "teacher" in n for n in names) and len(list(distill.parameters())) == 12
    _, parts = _kept_counts(distill, student, _clip(frames=8, size=56))
    assert set(parts) == {"loss", "token", "token_-1", "token_-2", "pooled", "ce"}
    assert parts["token"] == pytest.approx(float((parts["token_-1"] + parts["token_-2"]) / 2))
    parts["loss"].backward()
    assert all(p.grad is not None for p in distill.token_proj.parameters())


def test_pooled_weight_needs_a_pooled_output(hf_dirs):
    teacher = load_teacher("hf:" + hf_dirs["siglip_headless"], None, [-1])
    with pytest.raises(ConfigError, match=r"teacher hf:.*siglip_headless has no pooled output .*pooled_weight=0"):
        Distill(_student(), teacher)
    distill = Distill(_student(), teacher, pooled_weight=0.0, teacher_grid=Grid(8, 32))
    assert distill.pooled_proj is None
    _, parts = _kept_counts(distill, _student(), _clip(frames=8, size=56))
    assert set(parts) == {"loss", "token"}


# ----------------------------------------------------------------------------- training
def _run_config(out_dir, objective, steps, **sections):
    cfg = {
        "out_dir": str(out_dir), "steps": steps, "seed": 0, "progress": False, "ckpt_every": 1000,
        "data": {"source": "synthetic", "classes": ["brighten", "darken", "expand", "contract"],
                 "train_per_class": 4, "val_per_class": 2, "size": 56, "frames": 8, "batch_size": 8},
        "flux": {"fixed": "8x56"},
        "model": {"head_budgets": [64, 48, 32]},
        "objective": objective,
        "eval": {"grid": "8x56"},
        "optim": {"lr": 1e-3, "warmup_steps": 3, "label_smoothing": 0.0, "layer_decay": 1.0},
    }
    for key, value in sections.items():
        cfg[key].update(value)
    return cfg


def test_distillation_from_a_transformers_teacher_then_fine_tuning(hf_dirs, tmp_path):
    objective = {"name": "distill", "teacher": "hf:" + hf_dirs["clip"], "teacher_layers": [-1, -2],
                 "mask_ratio": 0.5}
    distilled = train(_run_config(tmp_path / "distill", objective, 20))
    records = [r for r in read_metrics(tmp_path / "distill" / "metrics.jsonl") if "token" in r]
    assert len(records) == 20 and {"token_-1", "token_-2", "pooled"} <= set(records[0])
    first = sum(r["token"] for r in records[:3]) / 3
    last = sum(r["token"] for r in records[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    assert records[-1]["pooled"] < records[0]["pooled"]
    # Fine-tune the distilled student (its backbone; heads trained afresh) with cross-entropy.
    tuned = train(_run_config(tmp_path / "ft", {"name": "fixed", "budget": 64}, 15,
                              model={"checkpoint": str(distilled.checkpoint)}, optim={"lr": 2e-3}))
    ce = [r["ce"] for r in read_metrics(tmp_path / "ft" / "metrics.jsonl") if "ce" in r]
    assert len(ce) == 15 and sum(ce[-5:]) / 5 < sum(ce[:5]) / 5
    assert fluxvit.load_checkpoint(tuned.checkpoint).num_classes == 4


# ----------------------------------------------------------------------------- config checks
def _distill_config(teacher, *more):
    return load_config(None, ["objective.name=distill", f"objective.teacher={teacher}", *more])


def _one_line(teacher, message, *more):
    with pytest.raises(ConfigError, match=message) as info:
        _distill_config(teacher, *more)
    assert "\n" not in str(info.value)


def test_config_accepts_hf_teachers(hf_dirs):
    cfg = _distill_config("hf:" + hf_dirs["clip"], "objective.teacher_layers=[-1, -2]", "objective.mask_ratio=0.8")
    assert cfg.objective.teacher_layers == [-1, -2] and cfg.objective.mask_ratio == 0.8
    _distill_config("hf:" + hf_dirs["videomae"])  # any training grid: resized to its fixed input
    _distill_config("hf:" + hf_dirs["videomae"], "objective.teacher_grid=4x32")


def test_config_refuses_bad_hf_teachers(hf_dirs, tmp_path):
    _one_line("hf:/nonexistent/teacher", "^teacher hf:/nonexistent/teacher: no such folder$")
    with pytest.raises(ConfigError, match="teacher hf:: name the folder after hf:"):
        load_teacher("hf:", None, [-1])
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line(f"hf:{empty}", "the folder has no config.json")
    (empty / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    (empty / "pytorch_model.bin").write_bytes(b"pickle")
    _one_line(f"hf:{empty}", "has no model.safetensors; teacher weights are read only from safetensors")
    (empty / "model.safetensors").write_bytes(b"x")
    (empty / "config.json").write_text(json.dumps({"model_type": "bert"}))
    _one_line(f"hf:{empty}", "model type 'bert' is not supported")
    clip = "hf:" + hf_dirs["clip"]
    _one_line(clip, "layer 2 does not exist in teacher hf:.* \\(2 layers: -2..1\\)", "objective.teacher_layers=[2]")
    _one_line(clip, "layer -3 does not exist", "objective.teacher_layers=[-1, -3]")
    _one_line(clip, "teacher_layers is empty", "objective.teacher_layers=[]")
    _one_line(clip, "layer 1 is named twice \\(as -1 and 1\\)", "objective.teacher_layers=[-1, 1]")
    _one_line(clip, "teacher_checkpoint is for FluxViT teachers", f"objective.teacher_checkpoint={empty}/config.json")
    _one_line(clip, "budget 64 and objective.mask_ratio 0.5 both say", "objective.budget=64",
              "objective.mask_ratio=0.5")
    _one_line("hf:" + hf_dirs["siglip"], "patch 16\\) on the training grid .*not a multiple of the patch size 16")
    _one_line("hf:" + hf_dirs["siglip_headless"], "has no pooled output", "objective.teacher_grid=8x112")
    _distill_config("hf:" + hf_dirs["siglip_headless"], "objective.teacher_grid=8x112", "objective.pooled_weight=0")
    _one_line("hf:" + hf_dirs["videomae"], "always sees its fixed 4x32x32 input", "objective.teacher_grid=8x32")


def test_fluxvit_teacher_layers_are_checked_against_its_depth(tmp_path):
    stand_in = tmp_path / "teacher.safetensors"
    stand_in.write_bytes(b"weights")  # the config check only asks that it exists
    more = (f"objective.teacher_checkpoint={stand_in}",)
    assert _distill_config("fluxvit_nano_patch14", *more, "objective.teacher_layers=[-1, -6, 4]") is not None
    _one_line("fluxvit_nano_patch14", "layer 6 does not exist .*6 layers", *more, "objective.teacher_layers=[6]")


def test_missing_transformers_is_one_line(tmp_path, monkeypatch):
    """Without transformers (a stand-in folder: the checks before the import pass) the config
    check and the loader both say, in one line, which extra to install."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    spec = f"hf:{tmp_path}"
    message = f"teacher {spec} needs the transformers package (pip install 'fluxvit[hf]')"
    with pytest.raises(ConfigError) as info:
        _distill_config(spec)
    assert str(info.value) == message
    with pytest.raises(ConfigError) as info:
        load_teacher(spec, None, [-1])
    assert str(info.value) == message


def test_hostile_teacher_folders_are_refused_before_any_weight_is_read(hf_dirs, tmp_path, capsys):
    """Found by a red-team pass: a sharded index naming a pickle (.bin) shard, which transformers
    would torch.load, or a shard outside the folder; a config.json inflated over small weights,
    which transformers would allocate and initialise (34 GB for hidden_size 32768); its load
    report printed over our one line; a ~user path."""
    from safetensors.torch import load_file, save_file

    def folder(name, index_target=None, config_change=None):
        out = tmp_path / name
        shutil.copytree(hf_dirs["clip"], out)
        if index_target is not None:
            weights = load_file(out / "model.safetensors")
            (out / "model.safetensors").unlink()
            save_file(weights, out / "shard-1.safetensors")
            (out / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {}, "weight_map": {k: index_target for k in weights}}))
        if config_change:
            cfg = json.loads((out / "config.json").read_text())
            (out / "config.json").write_text(json.dumps(cfg | config_change))
        return f"hf:{out}"

    assert isinstance(load_teacher(folder("sharded", "shard-1.safetensors"), None), HFTeacher)  # a fair index loads
    for target in ("pytorch_model-00001-of-00001.bin", "../clip/model.safetensors"):
        with pytest.raises(ConfigError, match="shards must be .safetensors files in the folder itself"):
            load_teacher(folder(f"bad{len(target)}", target), None)
    capsys.readouterr()
    with pytest.raises(ConfigError, match=r"config.json wants .* of shape \[4096"):
        load_teacher(folder("inflated", config_change={"hidden_size": 4096, "intermediate_size": 64}), None)
    assert "LOAD REPORT" not in capsys.readouterr().err
    with pytest.raises(ConfigError, match="parameters in a teacher"):
        load_teacher(folder("huge", config_change={"hidden_size": 65536, "intermediate_size": 262144,
                                                   "num_hidden_layers": 24}), None)
    with pytest.raises(ConfigError, match="hf:~nobody-here-at-all/x"):
        load_teacher("hf:~nobody-here-at-all/x", None)
