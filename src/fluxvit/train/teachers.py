"""Distillation teachers: any vision model behind one small interface.

A :class:`Teacher` is a frozen module that takes a clip (B, 3, T, H, W), normalised with
ImageNet's mean and std as every clip of this library is, and returns

* for each aligned layer (``teacher_layers``), per-frame patch token features
  (B, Tt, ht, wt, C_l) on the teacher's own token grid (no class token), and
* a pooled clip feature (B, E), or None when the model has none.

Two adapters implement it:

* :class:`FluxViTTeacher` wraps a loaded FluxViT: the chosen blocks' outputs (read with forward
  hooks on ``model.blocks[i]``), its class token dropped; pooled: head 0's clip embedding
  (``forward_head(tokens, 0, pre_logits=True)``).
* :class:`HFTeacher` wraps a transformers vision model saved in a local folder
  (``teacher: hf:DIR``; ``pip install 'fluxvit[hf]'``): a CLIP or SigLIP vision tower (also read
  from a whole CLIP/SigLIP model's folder), or VideoMAE. See its docstring for how each sees a
  clip.

The objective then brings the teacher's token grid to the student's with
:func:`resample_tokens`: frames are picked by index (:func:`frame_index`, the teacher frame at
the same time as each student frame; never a blend of frames), space is resampled bilinearly.
:func:`resample_clip` does the same to a clip (the teacher's ``teacher_grid`` view).

:func:`load_teacher` builds a teacher from the config's ``teacher`` text; :func:`check_teacher`
is the config's cheap check (no weights read). transformers is imported only by the functions
that need it; weights are read only from safetensors files in the local folder (never
unpickled, never downloaded).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from fluxvit import limits
from fluxvit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fluxvit.errors import CheckpointError, ConfigError, reason
from fluxvit.files import read_text
from fluxvit.flux.grid import Grid, check_run_grid
from fluxvit.typecheck import show

if TYPE_CHECKING:
    from fluxvit.models.fluxvit import FluxViT
    from fluxvit.train.config import ObjectiveConfig

HF_PREFIX = "hf:"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image processor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
# Files of a folder's image or video processor (save_pretrained of a processor), read for the
# mean and std the model was trained with, in this order.
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")


# ----------------------------------------------------------------------------- resampling
def frame_index(source: int, target: int, device: torch.device | str | None = None) -> torch.Tensor:
    """For each of ``target`` frames, the index of the one of ``source`` frames at the same time.

    Both sequences span the same clip, frame j of ``target`` sitting at the centre of its
    1/target of it; the source frame whose span holds that centre is picked:
    ``floor((j + 1/2) * source / target)`` (exact, in integers). Equal lengths map each frame to
    itself; 8 -> 4 picks frames 1, 3, 5, 7; 4 -> 8 repeats each frame twice.
    """
    if source < 1 or target < 1:
        raise ConfigError(f"frame counts must be positive, got {source} and {target}")
    j = torch.arange(target, dtype=torch.long, device=device)
    return ((2 * j + 1) * source) // (2 * target)


def resample_clip(video: torch.Tensor, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """video (B, C, T, H, W) -> (B, C, frames, size[0], size[1]): frames picked by index
    (:func:`frame_index`), each frame resized bilinearly (no antialiasing; the values of the
    frames are never mixed across time)."""
    b, c, t, hh, ww = video.shape
    if t != frames:
        video = video.index_select(2, frame_index(t, frames, video.device))
    if (hh, ww) != tuple(size):
        x = video.transpose(1, 2).reshape(b * frames, c, hh, ww)
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        video = x.reshape(b, frames, c, *size).transpose(1, 2)
    return video


def resample_tokens(features: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Token features (B, Tt, ht, wt, C) -> (B, T, h, w, C) on the token grid ``grid`` = (T, h, w):
    bilinear in space on each frame's (ht, wt) grid, then, for each of the T frames, the
    teacher frame at the same time (:func:`frame_index`), never a blend of frames."""
    b, tt, ht, wt, c = features.shape
    t, h, w = grid
    if (ht, wt) != (h, w):
        x = features.reshape(b * tt, ht, wt, c).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        features = x.permute(0, 2, 3, 1).reshape(b, tt, h, w, c)
    if tt != t:
        features = features.index_select(1, frame_index(tt, t, features.device))
    return features


def resolve_layers(layers: Sequence[int], depth: int, who: str) -> list[int]:
    """``layers`` (negative: from the last) as block indices 0..depth-1, in the given order;
    :class:`ConfigError` for an empty list, a layer outside the teacher's ``depth`` or one named
    twice. ``who`` names the teacher in the message."""
    if not layers:
        raise ConfigError("objective.teacher_layers is empty: name at least one teacher layer (-1: the last)")
    resolved: list[int] = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ConfigError(f"objective.teacher_layers: {show(layer)} is not a layer index")
        if not -depth <= layer < depth:
            raise ConfigError(f"objective.teacher_layers: layer {layer} does not exist in teacher {who} "
                              f"({depth} layers: {-depth}..{depth - 1})")
        index = layer % depth
        if index in resolved:
            first = layers[resolved.index(index)]
            raise ConfigError(f"objective.teacher_layers: layer {layer} is named twice (as {first} and {layer}) "
                              f"for teacher {who}")
        resolved.append(index)
    return resolved


# ----------------------------------------------------------------------------- the interface
class Teacher(nn.Module):
    """A frozen feature extractor for distillation (always in eval mode).

    Attributes: ``name`` (as the config names it), ``patch_size`` (pixels per token side on the
    frames it is given; the grids it sees must be multiples of it, unless it resizes clips to a
    fixed input itself), ``layers`` (the aligned layers as asked, e.g. [-1, -4]),
    ``feature_dims`` (the width of each layer's tokens, in that order) and ``pooled_dim`` (the
    pooled feature's width, None when the model has no pooled output).

    ``teacher(video)``: video (B, 3, T, H, W) normalised with ImageNet's mean and std ->
    (list of per-layer token features (B, Tt, ht, wt, C_l), pooled (B, E) or None).
    """

    name: str
    patch_size: int
    layers: list[int]
    feature_dims: list[int]
    pooled_dim: int | None

    def train(self, mode: bool = True) -> Teacher:  # a teacher never trains: dropout stays off
        return super().train(False)

    def forward(self, video: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        raise NotImplementedError


class FluxViTTeacher(Teacher):
    """A loaded FluxViT as a teacher: it sees every token of the clip (no selection); the token
    features of layer l are block l's output with the class token dropped, reshaped to
    (B, T, H/p, W/p, C) (tubelet 1: one token frame per frame); pooled: head 0's clip
    embedding (B, clip_embed_dim)."""

    def __init__(self, model: FluxViT, layers: Sequence[int] = (-1,), name: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.name = name or model.name or "fluxvit"
        depth = model.config.depth
        self._blocks = resolve_layers(list(layers), depth, self.name)
        self.layers = list(layers)
        self.patch_size = model.patch_size
        self.feature_dims = [model.config.embed_dim] * len(self._blocks)
        self.pooled_dim = model.config.clip_embed_dim
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        model = self.model
        last = model.config.depth - 1
        captured: dict[int, torch.Tensor] = {}

        def keeper(index: int):
            def hook(_module, _args, output):
                captured[index] = output
            return hook

        handles = [model.blocks[i].register_forward_hook(keeper(i)) for i in set(self._blocks) if i != last]
        try:
            tokens = model.forward_features(video)  # every token: (B, 1 + T*h*w, C)
        finally:
            for handle in handles:
                handle.remove()
        captured[last] = tokens
        b, _, t, hh, ww = video.shape
        h, w = hh // self.patch_size, ww // self.patch_size
        features = [captured[i][:, 1:].reshape(b, t, h, w, -1) for i in self._blocks]
        return features, model.forward_head(tokens, 0, pre_logits=True)


# ----------------------------------------------------------------------------- transformers
@dataclass(frozen=True)
class _Family:
    """How one kind of transformers model is loaded and sees a clip."""

    config_class: str
    model_class: str
    class_token: bool  # a class token precedes the patch tokens in its hidden states
    video: bool  # tubelets over a fixed number of frames (VideoMAE), not one image per frame
    mean: tuple[float, float, float]  # its processor's usual normalisation
    std: tuple[float, float, float]


_FAMILIES = {
    "clip": _Family("CLIPVisionConfig", "CLIPVisionModel", True, False, CLIP_MEAN, CLIP_STD),
    "siglip": _Family("SiglipVisionConfig", "SiglipVisionModel", False, False, SIGLIP_MEAN, SIGLIP_STD),
    "videomae": _Family("VideoMAEConfig", "VideoMAEModel", False, True, IMAGENET_MEAN, IMAGENET_STD),
}
# config.json's model_type -> family (a whole CLIP/SigLIP model's folder gives its vision tower)
HF_MODEL_TYPES = {
    "clip_vision_model": "clip", "clip": "clip",
    "siglip_vision_model": "siglip", "siglip": "siglip",
    "videomae": "videomae",
}


@dataclass(frozen=True)
class HFTeacherInfo:
    """What the config of a transformers teacher's folder says (read without its weights)."""

    spec: str  # "hf:DIR" as configured
    folder: Path
    family: str  # clip, siglip or videomae
    depth: int  # transformer layers
    hidden_size: int
    patch_size: int
    image_size: tuple[int, int]  # the size its positions were trained at (H, W)
    num_frames: int | None  # VideoMAE: the frames of its fixed input, else None
    tubelet_size: int  # frames per token (1 for image models)
    pooled_dim: int | None
    mean: tuple[float, float, float]  # the normalisation it expects
    std: tuple[float, float, float]

    @property
    def fixed_input(self) -> Grid | None:
        """The one clip shape a model with fixed positions (VideoMAE) takes; None for the image
        models, which take any frame size that is a multiple of their patch."""
        if self.num_frames is None:
            return None
        return Grid(self.num_frames, *self.image_size)


def _shown(spec: str) -> str:
    """The teacher's text as messages print it: as it is when short and printable."""
    return spec if len(spec) <= 300 and spec.isprintable() else show(spec)


def _transformers(spec: str):
    """The transformers module, or one :class:`ConfigError` line naming the extra to install."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"teacher {_shown(spec)} needs the transformers package "
                          "(pip install 'fluxvit[hf]')") from None
    return transformers


def _hf_folder(spec: str) -> Path:
    """The folder of ``hf:DIR``, checked to be a folder holding config.json and safetensors weights."""
    who = _shown(spec)
    raw = spec[len(HF_PREFIX):]
    if not raw.strip():
        raise ConfigError(f"teacher {who}: name the folder after hf: (hf:DIR, a transformers model saved "
                          "there with save_pretrained)")
    try:
        folder = Path(raw).expanduser()
        st = folder.stat()
    except ValueError:
        raise ConfigError(f"teacher {who}: not a valid path (it holds a NUL byte)") from None
    except FileNotFoundError:
        raise ConfigError(f"teacher {who}: no such folder") from None
    except (OSError, RuntimeError) as e:  # RuntimeError: a ~user whose home is unknown
        raise ConfigError(f"teacher {who}: cannot access the folder ({reason(e)})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"teacher {who}: not a folder (hf:DIR names the folder that save_pretrained wrote)")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"teacher {who}: the folder has no config.json (save the model there with "
                          "save_pretrained)")
    if not any((folder / name).is_file() for name in SAFETENSORS_FILES):
        raise ConfigError(f"teacher {who}: the folder has no model.safetensors; teacher weights are read only "
                          "from safetensors files (save with save_pretrained(..., safe_serialization=True))")
    weight_files(folder, who)  # a sharded folder's index names only safetensors files inside it
    return folder


def weight_files(folder: Path, who: str) -> list[Path]:
    """The safetensors files of a transformers folder: model.safetensors, or the shards its
    index names, each a plain file name of a ``.safetensors`` file inside ``folder`` (an index
    naming a ``.bin`` shard, which transformers would unpickle, or a file elsewhere is refused)."""
    single = folder / SAFETENSORS_FILES[0]
    if single.is_file():
        return [single]
    index = _read_json(folder / SAFETENSORS_FILES[1], who)
    shards = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(shards, dict) or not shards:
        raise ConfigError(f"teacher {who}: {SAFETENSORS_FILES[1]} has no weight_map")
    files = []
    for name in sorted({str(v) for v in shards.values()}):
        if Path(name).name != name or not name.endswith(".safetensors") or name.startswith("."):
            raise ConfigError(f"teacher {who}: {SAFETENSORS_FILES[1]} names {show(name)}; shards must be "
                              ".safetensors files in the folder itself")
        if not (folder / name).is_file():
            raise ConfigError(f"teacher {who}: the shard {show(name)} its index names is missing")
        files.append(folder / name)
    return files


def _read_json(path: Path, who: str) -> dict:
    text = read_text(path, "file", ConfigError)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"teacher {who}: {path.name} is not valid JSON ({reason(e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"teacher {who}: {path.name} does not hold a JSON object")
    return data


def _triple(value: Any, key: str, where: str, who: str, positive: bool) -> tuple[float, float, float]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 3
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
          and (not positive or all(v > 0 for v in value)))
    if not ok:
        need = "three positive numbers" if positive else "three numbers"
        raise ConfigError(f"teacher {who}: {where} {key} must be {need}, got {show(value)}")
    return tuple(float(v) for v in value)


def _normalisation(folder: Path, family: _Family, who: str) -> tuple[tuple, tuple]:
    """The mean and std the model expects: its processor's file in the folder if there is one
    (``image_mean``/``image_std``; ``do_normalize: false`` means none), else the family's usual
    values (CLIP's, SigLIP's 0.5/0.5, VideoMAE's ImageNet ones)."""
    for name in PROCESSOR_FILES:
        path = folder / name
        if not path.is_file():
            continue
        data = _read_json(path, who)
        if data.get("do_normalize") is False:
            return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        mean = data.get("image_mean", family.mean)
        std = data.get("image_std", family.std)
        return _triple(mean, "image_mean", name, who, False), _triple(std, "image_std", name, who, True)
    return family.mean, family.std


def _positive_int(config: Any, key: str, who: str, default: int | None = None) -> int:
    value = getattr(config, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"teacher {who}: config.json {key} must be a positive integer, got {show(value)}")
    return value


def _size_pair(config: Any, key: str, who: str) -> tuple[int, int]:
    value = getattr(config, key, None)
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ConfigError(f"teacher {who}: config.json {key} must be a positive integer, got {show(value)}")
    return pair


def inspect_hf(spec: str) -> HFTeacherInfo:
    """Check the folder of ``hf:DIR`` and read what its config says, without reading weights:
    config.json and a safetensors file present, a supported ``model_type``, the transformers
    package installed, the config readable by it, its sizes sane, its processor's mean and std
    (if any) valid. Each problem is one :class:`ConfigError` line naming the teacher."""
    who = _shown(spec)
    folder = _hf_folder(spec)
    model_type = _read_json(folder / "config.json", who).get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ConfigError(f"teacher {who}: model type {show(model_type)} is not supported "
                          f"(supported: {', '.join(HF_MODEL_TYPES)})")
    family_name = HF_MODEL_TYPES[model_type]
    family = _FAMILIES[family_name]
    transformers = _transformers(spec)
    config_class = getattr(transformers, family.config_class, None)
    if config_class is None:
        raise ConfigError(f"teacher {who}: this transformers ({transformers.__version__}) has no "
                          f"{family.config_class}; upgrade it (pip install -U 'fluxvit[hf]')")
    try:  # a whole CLIP/SigLIP model's config gives its vision part
        config = config_class.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # transformers raises many kinds (OSError, ValueError, TypeError, KeyError)
        raise ConfigError(f"teacher {who}: config.json cannot be read by transformers ({reason(e)})") from None
    depth = _positive_int(config, "num_hidden_layers", who)
    hidden = _positive_int(config, "hidden_size", who)
    patch = _positive_int(config, "patch_size", who)
    image_size = _size_pair(config, "image_size", who)
    num_frames, tubelet = None, 1
    if family.video:
        num_frames = _positive_int(config, "num_frames", who)
        tubelet = _positive_int(config, "tubelet_size", who)
        if num_frames % tubelet:
            raise ConfigError(f"teacher {who}: num_frames {num_frames} is not a multiple of tubelet_size {tubelet}")
    pooled: int | None = hidden
    if family_name == "siglip" and not getattr(config, "vision_use_head", True):
        pooled = None  # no attention-pooling head: SigLIP has no pooled output then
    mean, std = _normalisation(folder, family, who)
    return HFTeacherInfo(spec, folder, family_name, depth, hidden, patch, image_size, num_frames, tubelet, pooled,
                         mean, std)


class HFTeacher(Teacher):
    """A transformers vision model as a teacher (``teacher: hf:DIR``).

    The clip, normalised with ImageNet's mean/std, is first re-normalised to the mean/std the
    model expects (its processor's ``preprocessor_config.json`` or
    ``video_preprocessor_config.json`` in the folder if present, else the family's usual values:
    CLIP (0.4815, 0.4578, 0.4082)/(0.2686, 0.2613, 0.2758), SigLIP 0.5/0.5, VideoMAE ImageNet's).

    * CLIP / SigLIP (image models): the T frames run as a batch of B*T images at the clip's own
      size, with ``interpolate_pos_encoding=True`` whenever that size differs from the
      ``image_size`` its positions were trained at (no resizing of the clip); their patch tokens
      (CLIP's class token dropped; SigLIP has none) form (B, T, H/p, W/p, C). Pooled: the model's
      ``pooler_output`` per frame (CLIP: its normalised class token, the visual projection of a
      whole CLIP folder is not used; SigLIP: its attention-pooling head, None without one),
      averaged over the frames.
    * VideoMAE (fixed sin-cos positions for ``num_frames`` x ``image_size``): the clip is brought
      to that input (frames picked by index, space resized bilinearly); tokens (B,
      num_frames / tubelet_size, h, w, C). Pooled: the mean of its last hidden state.

    Layer l is block l's output (``hidden_states[l + 1]``); the last layer is the model's
    ``last_hidden_state``, so it includes the final norm where the model applies one there
    (SigLIP's ``post_layernorm``). The model runs in the dtype transformers loads its weights in.
    """

    def __init__(self, model: nn.Module, info: HFTeacherInfo, layers: Sequence[int] = (-1,)) -> None:
        super().__init__()
        self.model = model
        self.info = info
        self.name = _shown(info.spec)
        self._blocks = resolve_layers(list(layers), info.depth, self.name)
        self.layers = list(layers)
        self.patch_size = info.patch_size
        self.feature_dims = [info.hidden_size] * len(self._blocks)
        self.pooled_dim = info.pooled_dim
        # x_model = (x * std_in + mean_in - mean) / std, with x normalised by ImageNet's mean_in/std_in
        mean, std = torch.tensor(info.mean), torch.tensor(info.std)
        scale = torch.tensor(IMAGENET_STD) / std
        shift = (torch.tensor(IMAGENET_MEAN) - mean) / std
        self.register_buffer("_scale", scale.reshape(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("_shift", shift.reshape(1, 3, 1, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _layer_states(self, out) -> list[torch.Tensor]:
        last = self.info.depth - 1
        states = out.hidden_states
        return [out.last_hidden_state if i == last else states[i + 1] for i in self._blocks]

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        info = self.info
        dtype = next(self.model.parameters()).dtype
        x = (video.float() * self._scale + self._shift).to(dtype)
        b, _, t, hh, ww = x.shape
        p = self.patch_size
        hidden = any(i != info.depth - 1 for i in self._blocks)  # the inner layers' states are needed
        if info.fixed_input is not None:  # VideoMAE: its one input shape
            g = info.fixed_input
            x = resample_clip(x, g.frames, (g.height, g.width))
            out = self.model(pixel_values=x.transpose(1, 2), output_hidden_states=hidden)  # (B, T, 3, H, W)
            grid = (g.frames // info.tubelet_size, g.height // p, g.width // p)
            features = [s.reshape(b, *grid, -1) for s in self._layer_states(out)]
            pooled = out.last_hidden_state.mean(dim=1)
            return features, pooled
        frames = x.transpose(1, 2).reshape(b * t, 3, hh, ww)
        extra = {} if (hh, ww) == info.image_size else {"interpolate_pos_encoding": True}
        out = self.model(pixel_values=frames, output_hidden_states=hidden, **extra)
        skip = 1 if _FAMILIES[info.family].class_token else 0
        features = [s[:, skip:].reshape(b, t, hh // p, ww // p, -1) for s in self._layer_states(out)]
        pooled = None
        if self.pooled_dim is not None:
            pooled = out.pooler_output.reshape(b, t, -1).mean(dim=1)
        return features, pooled


def _load_hf_model(info: HFTeacherInfo) -> nn.Module:
    """The model of ``info``'s folder, from its safetensors weights only, without the network;
    every tensor of the model must come from the file (a teacher is never partly random)."""
    who = _shown(info.spec)
    transformers = _transformers(info.spec)
    model_class = getattr(transformers, _FAMILIES[info.family].model_class, None)
    if model_class is None:
        raise ConfigError(f"teacher {who}: this transformers ({transformers.__version__}) has no "
                          f"{_FAMILIES[info.family].model_class}; upgrade it (pip install -U 'fluxvit[hf]')")
    quiet = transformers.utils.logging
    verbosity, bars = quiet.get_verbosity(), quiet.is_progress_bar_enabled()
    quiet.set_verbosity_error()  # its load report and progress bars would bury our one line
    quiet.disable_progress_bar()
    try:
        _check_shapes(model_class, info, who)
        model, loading = model_class.from_pretrained(str(info.folder), local_files_only=True, use_safetensors=True,
                                                     output_loading_info=True)
    except ConfigError:
        raise
    except Exception as e:  # OSError, ValueError, RuntimeError, safetensors' own errors ...
        raise ConfigError(f"teacher {who}: cannot be loaded ({reason(e)})") from None
    finally:
        quiet.set_verbosity(verbosity)
        if bars:
            quiet.enable_progress_bar()
    missing = sorted(loading.get("missing_keys") or ())
    mismatched = list(loading.get("mismatched_keys") or ())
    if missing or mismatched:
        names = missing or [str(m[0] if isinstance(m, (list, tuple)) else m) for m in mismatched]
        what = "lack" if missing else "have other shapes for"
        raise ConfigError(f"teacher {who}: its weights {what} {len(names)} of the model's tensors "
                          f"(e.g. {', '.join(names[:3])}); is the folder a {info.family} vision model?")
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f"teacher {who}: its weights contain NaN or inf (first: {show(name)})")
    return model.eval().requires_grad_(False)


def _check_shapes(model_class, info: HFTeacherInfo, who: str) -> None:
    """Before any weight is allocated: the model config.json describes, built on the meta device
    (no memory), within :data:`~fluxvit.limits.TEACHER_PARAMETERS`, and every tensor the files hold
    for it of the shape it needs, so a config.json inflated over small weights is refused instead
    of transformers allocating (and randomly initialising) what the files lack."""
    from safetensors import safe_open

    config = model_class.config_class.from_pretrained(str(info.folder), local_files_only=True)
    with torch.device("meta"):
        skeleton = model_class(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    limits.TEACHER_PARAMETERS.check(sum(math.prod(s) for s in expected.values()), f"teacher {who}")
    stored: dict[str, tuple[int, ...]] = {}
    for path in weight_files(info.folder, who):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                stored[key] = tuple(f.get_slice(key).get_shape())
    for key, shape in expected.items():  # stored under the same name, or under a prefix (a full CLIP folder)
        found = [s for s in stored if s == key or s.endswith("." + key)]
        if len(found) == 1 and stored[found[0]] != shape:
            raise ConfigError(f"teacher {who}: config.json wants {key} of shape {list(shape)}, its weights hold "
                              f"{list(stored[found[0]])}; is config.json the one saved with these weights?")


# ----------------------------------------------------------------------------- config entry points
def is_hf(spec: str | None) -> bool:
    """Whether the config's ``teacher`` names a transformers model folder (``hf:DIR``)."""
    return bool(spec) and spec.startswith(HF_PREFIX)


def load_teacher(spec: str, checkpoint: str | os.PathLike | None, layers: Sequence[int] = (-1,)) -> Teacher:
    """The teacher the config's ``teacher`` text names, aligned at ``layers``, frozen.

    ``hf:DIR``: a transformers CLIP/SigLIP vision model or VideoMAE saved in the local folder DIR
    (:class:`HFTeacher`; ``checkpoint`` must be None, the weights are the folder's). Otherwise a
    registered FluxViT architecture loaded from ``checkpoint`` (:class:`FluxViTTeacher`). Every
    failure is one :class:`ConfigError` line naming the teacher.
    """
    if is_hf(spec):
        if checkpoint:
            raise ConfigError(f"objective.teacher_checkpoint is for FluxViT teachers; teacher {_shown(spec)} "
                              "is loaded from its folder (leave teacher_checkpoint unset)")
        info = inspect_hf(spec)
        resolve_layers(list(layers), info.depth, _shown(spec))  # before any weight is read
        return HFTeacher(_load_hf_model(info), info, layers)
    from fluxvit.models.registry import create_model

    try:
        model = create_model(spec, checkpoint=checkpoint)
    except (CheckpointError, ConfigError) as e:
        raise ConfigError(f"teacher {spec} from {checkpoint}: cannot be loaded: {e}") from None
    return FluxViTTeacher(model, layers, name=spec)


def check_teacher(obj: ObjectiveConfig, grids: Sequence[Grid], model_config=None) -> None:
    """The config's checks of a distillation teacher, before anything is built; no weights read.

    FluxViT teachers: a registered name (``model_config``, default the registry's), its
    ``teacher_checkpoint`` given and present. ``hf:DIR`` teachers: :func:`inspect_hf` (the
    folder, config.json, a safetensors file, a supported model type, transformers installed).
    Both: ``teacher_layers`` non-empty, within the teacher's depth, none twice; a pooled weight
    only for a teacher with a pooled output; every grid the teacher sees (``teacher_grid``, else
    each training grid in ``grids``) a multiple of its patch and within the token cap. A
    VideoMAE teacher sees its one fixed input, so it takes no other ``teacher_grid``.
    """
    if not obj.teacher:
        raise ConfigError("objective 'distill' needs objective.teacher (a registered FluxViT name, or hf:DIR for a "
                          "transformers vision model saved in a local folder)")
    who = _shown(obj.teacher)
    fixed: Grid | None = None
    if is_hf(obj.teacher):
        if obj.teacher_checkpoint:
            raise ConfigError(f"objective.teacher_checkpoint is for FluxViT teachers; teacher {who} is loaded "
                              "from its folder (leave teacher_checkpoint unset)")
        info = inspect_hf(obj.teacher)
        depth, patch, pooled, fixed = info.depth, info.patch_size, info.pooled_dim, info.fixed_input
    else:
        from fluxvit.models.registry import model_config as registered

        arch = (model_config or registered)(obj.teacher)  # unknown names fail here
        if not obj.teacher_checkpoint:
            raise ConfigError("objective 'distill' needs objective.teacher_checkpoint (the teacher's weights)")
        if not Path(obj.teacher_checkpoint).exists():
            raise ConfigError(f"teacher checkpoint {obj.teacher_checkpoint}: no such file")
        depth, patch, pooled = arch.depth, arch.patch_size, arch.clip_embed_dim
    resolve_layers(list(obj.teacher_layers), depth, who)
    if pooled is None and obj.pooled_weight > 0:
        raise ConfigError(no_pooled_message(who))
    if fixed is not None:
        if obj.teacher_grid is not None and check_run_grid(obj.teacher_grid, patch, "objective.teacher_grid") != fixed:
            raise ConfigError(f"objective.teacher_grid {obj.teacher_grid}: teacher {who} always sees its fixed "
                              f"{fixed.shape} input (its positions are fixed); leave teacher_grid unset")
        return
    # The teacher sees every token of its grid: teacher_grid, else each batch's grid.
    if obj.teacher_grid is not None:
        check_run_grid(obj.teacher_grid, patch, "objective.teacher_grid")
        return
    for g in grids:
        check_run_grid(g, patch, f"objective.teacher {who} (patch {patch}) on the training grid {g}")


def no_pooled_message(who: str) -> str:
    """The one line for a pooled-feature weight with a teacher that has no pooled output."""
    return (f"teacher {who} has no pooled output (e.g. a SigLIP vision model without its head): "
            "set objective.pooled_weight=0")
