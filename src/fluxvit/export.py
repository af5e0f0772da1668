"""Deployment artifacts: one FluxViT at one sampling grid and one token budget, exported with the
token selection and the chosen head inside, as one self-contained file.

    export_model(model, "fluxvit_n.onnx", "8x112", 128)                          # ONNX, opset 18
    export_model(model, "fluxvit_n.pt2", "8x112", 128, format="torch-export")   # torch.export
    logits = fluxvit.evaluate.exported.load_exported("fluxvit_n.onnx")(video)

**Input**: the normalised clip, float32 ``(rows, 3, T, H, W)`` with ``rows = batch x clips x
crops`` (videos x views, in that order), exactly what the model itself takes from fluxvit's
decoding: ``(frame / 255 - mean) / std`` per RGB channel. Decoding, frame sampling and resizing
stay outside the graph, because they are the deployment's own (a camera, a decoder in a browser, a
GPU resize): a graph that took uint8 frames would fix one resize for every deployment, and the
bilinear antialiased resize fluxvit uses has no exact ONNX counterpart. What is needed to feed it
is in the metadata instead. **Output**: logits ``(rows, num_classes)``; a video's prediction is the
mean of its views' softmax.

**Metadata** (one JSON record: ONNX ``metadata_props["fluxvit"]``, the ``.pt2`` archive's extra
file ``fluxvit.json``): format and version, fluxvit and torch versions, model name and source,
grid, budget, tokens kept, head, selector, patch size, class names, input/output shapes, and the
preprocessing (frames, size, mean, std, frame sampling rule, crops, views, how views combine).

**Exporter**: ``torch.onnx.export(..., dynamo=True)`` at opset 18 (LayerNormalization needs 17;
18 is run by every onnxruntime since 1.14 and by TensorRT 8.6+), which traces the model with
``torch.export``; the ``.pt2`` is that program saved. Both run the selection as written: top-k,
comparisons and cumulative sums, no sort and no data-dependent shape (see
:mod:`fluxvit.flux.selectors`), so the artifact keeps the same tokens as the eager model. The
artifact is checked before it is kept: it is run once on a seeded random clip and its logits are
compared with the model's (``verify``); a mismatch leaves nothing at the final name.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from fluxvit import __version__, limits
from fluxvit.atomic import atomic_write
from fluxvit.data.preprocessing import preprocessing_of
from fluxvit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fluxvit.errors import ConfigError, reason
from fluxvit.evaluate.exported import (
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    EXTRA_FILE,
    FORMATS,
    INPUT_NAME,
    META_KEY,
    ONNX_INSTALL,
    OUTPUT_NAME,
    load_exported,
    onnxruntime_module,
)
from fluxvit.evaluate.runner import Views
from fluxvit.flux.grid import Grid
from fluxvit.flux.selectors import SELECTORS
from fluxvit.typecheck import show

log = logging.getLogger(__name__)

ONNX_OPSET = 18
# Selectors an artifact can hold: deterministic functions of the clip ("random" draws anew each call).
EXPORTABLE_SELECTORS = tuple(name for name in SELECTORS if name != "random")
VERIFY_TOLERANCE = 1e-4  # max |logit difference| / max(1, max |logit|), fp32; measured ~1e-7


class _Deployed(nn.Module):
    """The model at one budget and one head: ``forward(video) -> logits``, nothing else to pass."""

    def __init__(self, model: nn.Module, num_tokens: int | None, head: int, selector: str) -> None:
        super().__init__()
        self.model = model
        self.num_tokens, self.head, self.selector = num_tokens, head, selector

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model(video, num_tokens=self.num_tokens, head=self.head, selector=self.selector)


def export_model(
    model,
    out: str | os.PathLike,
    grid: Grid | str,
    budget: int | None = None,
    format: str = "onnx",
    views: Views | str = Views(),
    batch: int = 1,
    selector: str = "group_dynamic",
    head: int | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Write ``model`` (a FluxViT) at ``grid`` (``Grid`` or ``"TxR"``) and ``budget`` tokens
    (None: the grid's budget, or all tokens) to ``out`` (``.onnx`` for ``format="onnx"``,
    ``.pt2`` for ``"torch-export"``); returns ``out``.

    The graph takes ``batch`` videos of ``views`` (clips x crops) per call, ``rows = batch x
    clips x crops`` normalised clips; ``head`` defaults to the head nearest the tokens kept (as the
    model chooses). ``out`` is written atomically and never overwritten unless ``overwrite``.
    ``verify`` runs the artifact once (needs onnxruntime for ONNX) and refuses one whose logits
    differ from the model's.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {show(format)}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix.lower() != FORMATS[format]:
        raise ConfigError(f"{out}: a {format} artifact is written to a {FORMATS[format]} file")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: exists; choose a new name (exported models are never overwritten)")
    g = _grid(grid, budget)
    p = model.patch_size
    patches = g.check_size(p)
    kept_budget = g.num_tokens(p)  # checks the patch size and that the budget fits the grid
    num_tokens = kept_budget if kept_budget < patches else None
    if not isinstance(selector, str) or selector not in EXPORTABLE_SELECTORS:
        raise ConfigError(f"selector {show(selector)} cannot be exported; choose from "
                          f"{', '.join(EXPORTABLE_SELECTORS)} (random draws new tokens on every call)")
    views = Views.parse(views) if isinstance(views, str) else views
    if not isinstance(views, Views):
        raise ConfigError(f"views must be CLIPSxCROPS, got {show(views)}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"export batch must be a positive integer, got {show(batch)}")
    limits.BATCH_SIZE.check(batch, "export batch")
    rows = batch * views.clips * views.crops
    _require(format, verify)

    src = _fp32_cpu(model)
    was_training = src.training
    src.eval()
    try:
        example = torch.randn((rows, 3, g.frames, g.height, g.width), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            tokens = src.forward_features(example, num_tokens, selector)
            chosen = src.resolve_head(tokens.shape[1] - 1, head)
            reference = src.classify(src.pool(tokens, chosen), chosen)
        meta = _metadata(src, g, kept_budget, tokens.shape[1] - 1, chosen, selector, views, batch, rows, format)
        module = _Deployed(src, num_tokens, chosen, selector).eval()
        with atomic_write(out) as tmp:
            if format == "onnx":
                _write_onnx(module, example, tmp, meta, out)
            else:
                _write_torch_export(module, example, tmp, meta, out)
            if verify:
                _verify(tmp, format, out, example, reference)
    finally:
        src.train(was_training)
    log.info("wrote %s: %s at %s, %d tokens, head %d (%s)", out, model.name or "model", g.with_budget(None),
             kept_budget, chosen, format)
    return out


def _grid(grid: Grid | str, budget: int | None) -> Grid:
    g = Grid.parse(grid) if isinstance(grid, str) else grid
    if not isinstance(g, Grid):
        raise ConfigError(f"grid must be TxR or a Grid, got {show(grid)}")
    if budget is not None and g.budget is not None and budget != g.budget:
        raise ConfigError(f"budget {budget} and the grid's budget {g.budget} differ")
    return g.with_budget(budget if budget is not None else g.budget)


def _require(format: str, verify: bool) -> None:
    """One line naming what is missing, before any work."""
    if format == "onnx":
        for package in ("onnx", "onnxscript"):
            try:
                __import__(package)
            except ImportError:
                raise ConfigError(f"ONNX export needs {package}: {ONNX_INSTALL}") from None
        if verify:
            onnxruntime_module("checking an ONNX export (verify)")


def _fp32_cpu(model):
    """The model itself when its weights are fp32 on the CPU, else an fp32 CPU copy: an artifact
    is portable (the .pt2's weights load on any machine) and takes float32."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors):
        return model
    return copy.deepcopy(model).to("cpu", torch.float32)


def _metadata(model, g: Grid, budget: int, tokens: int, head: int, selector: str, views: Views, batch: int,
              rows: int, format: str) -> dict:
    t, h, w = g.frames, g.height, g.width
    pre = preprocessing_of(model)
    offset_rule = "(k + 1) / (K + 1) (one clip: the centres)" if pre.view_offsets == "between" else "k / K"
    resize_rule = (f"short side to {h} px, aspect ratio kept, " + (
        "the whole frame bilinear without antialiasing (OpenCV's INTER_LINEAR), then the crops"
        if pre.resize == "release" else "each crop's square of the frame resized once, bilinear, antialiased"))
    return {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "exporter": f"torch.onnx (dynamo), opset {ONNX_OPSET}" if format == "onnx" else "torch.export",
        "fluxvit_version": __version__,
        "torch_version": torch.__version__,
        "model": model.name,
        "source": getattr(model, "checkpoint_path", None),
        "grid": [t, h, w],
        "budget": budget,
        "tokens": tokens,
        "head": head,
        "head_budget": model.budgets[head],
        "num_heads": len(model.budgets),
        "selector": selector,
        "patch_size": model.patch_size,
        "num_classes": model.num_classes,
        "class_names": list(model.class_names) if model.class_names else None,
        "batch": batch,
        "views": [views.clips, views.crops],
        "rows": rows,
        "input": {"name": INPUT_NAME, "shape": [rows, 3, t, h, w], "dtype": "float32",
                  "layout": "rows x RGB x frames x height x width; rows = videos x clips x crops"},
        "output": {"name": OUTPUT_NAME, "shape": [rows, model.num_classes], "dtype": "float32"},
        "gflops_per_view": round(model.estimate_flops(g).total / 1e9, 4),
        "config": model.config.to_dict(),  # provenance, and the shapes the FLOPs count reads
        "preprocessing": {
            "frames": t,
            "height": h,
            "width": w,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "normalize": "RGB frames scaled to [0, 1], then (x - mean) / std per channel",
            "frame_sampling": (f"segment: the video's frames cut into {t} equal segments; clip k of K takes, from "
                               f"every segment, the frame at {offset_rule} of it"),
            "clips": views.clips,
            "resize_rule": resize_rule,
            "crops": views.crops,
            "crop_rule": f"{views.crops} square {h} px crops spread evenly along the long side (1: centre)",
            **pre.to_meta(),  # resize and view_offsets, as fluxvit reads them back
            "combine_views": "mean of the views' softmax",
        },
    }


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters' progress chatter and internal warnings (not about this model) stay out of the
    command's output; errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _write_onnx(module: nn.Module, example: torch.Tensor, tmp: Path, meta: dict, out: Path) -> None:
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=ONNX_OPSET,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False)
    except Exception as e:  # the exporter's own error types; the trace is kept for --verbose
        log.debug("ONNX export failed", exc_info=True)
        raise ConfigError(f"{out}: the ONNX exporter failed on this model ({reason(e)})") from None
    program.model.metadata_props[META_KEY] = json.dumps(meta)
    program.save(str(tmp), external_data=False)  # one self-contained file (weights inside)


def _write_torch_export(module: nn.Module, example: torch.Tensor, tmp: Path, meta: dict, out: Path) -> None:
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.export.export(module, (example,), strict=False)
    except Exception as e:
        log.debug("torch.export failed", exc_info=True)
        raise ConfigError(f"{out}: torch.export failed on this model ({reason(e)})") from None
    # No sample inputs in the archive: torch.save'd (pickled) data that a reader would have to
    # unpickle; load_exported refuses any pickled payload.
    program._example_inputs = None
    with _quiet_exporter():
        torch.export.save(program, str(tmp), extra_files={EXTRA_FILE: json.dumps(meta)})


def _verify(tmp: Path, format: str, out: Path, example: torch.Tensor, reference: torch.Tensor) -> None:
    runner = load_exported(tmp, device="cpu", kind=format, name=str(out))
    got = runner(example)
    diff = float((got - reference).abs().max())
    scale = max(1.0, float(reference.abs().max()))
    log.debug("%s: max |logit difference| from the model %.3g", out, diff)
    if not diff <= VERIFY_TOLERANCE * scale:  # also NaN
        raise ConfigError(f"{out}: the exported model does not compute what the model does (max |logit "
                          f"difference| {diff:.3g}); nothing was written")
