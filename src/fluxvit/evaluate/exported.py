"""Running an exported FluxViT: the artifact ``fluxvit export`` writes (:mod:`fluxvit.export`), as
a callable with the model's own signature.

    runner = load_exported("fluxvit_n_8x112_128.onnx")
    logits = runner(video)          # video: float32 (rows, 3, T, H, W), normalised, as for the model

An artifact is one model at one sampling grid and one token budget, the token selection and the
chosen head inside: ``.onnx`` runs in onnxruntime (the CUDA provider when the installed
onnxruntime has one, else the CPU), ``.pt2`` (a ``torch.export`` program) in PyTorch. Its metadata
(one JSON record: ONNX ``metadata_props["fluxvit"]``, the ``.pt2`` extra file ``fluxvit.json``)
says everything a deployment needs to feed it: class names, grid, budget, head, selector, and the
preprocessing (frames, size, mean, std, frame sampling, crops and views, how views combine).

The runner takes any number of rows: they are run ``rows`` at a time (the artifact's static
batch), the last group padded with zeros (rows never affect each other). A clip of another grid is
refused in one line naming the file and the grid it was exported for.

Untrusted files: a file that is not an artifact, a corrupt one, or metadata that does not describe
the graph is a :class:`~fluxvit.errors.CheckpointError` naming the file. ``torch.export.load``
unpickles parts of a ``.pt2`` archive; an archive with any pickled payload (our writer stores none)
or an entry outside the layout ``torch.export.save`` writes is refused before it is handed over.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import torch

from fluxvit import limits
from fluxvit.data.preprocessing import META_KEY as PREPROCESSING_KEY
from fluxvit.errors import CheckpointError, ConfigError, reason
from fluxvit.files import regular_file
from fluxvit.flux.grid import Grid

log = logging.getLogger(__name__)

META_KEY = "fluxvit"  # ONNX metadata_props key; the .pt2 extra file is META_KEY + ".json"
EXTRA_FILE = f"{META_KEY}.json"
ARTIFACT_FORMAT = "fluxvit-export"
# 2: preprocessing.resize is the filter's name (release | antialias) beside view_offsets, the
# description moved to resize_rule; version 1 artifacts were all made with the antialiased filter
ARTIFACT_VERSION = 2
FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}  # format -> file suffix
INPUT_NAME, OUTPUT_NAME = "video", "logits"
ONNX_INSTALL = "pip install 'fluxvit[onnx]'"

# What torch.export.save writes under the archive's root folder (torch 2.13): anything else
# (compiled AOTInductor code, shared libraries) is not ours and is refused.
_PT2_TOP_FILES = {"archive_format", "archive_version", "byteorder", "version"}
_PT2_TOP_DIRS = {"data", "models", "extra", ".data"}


def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an exported artifact by its suffix (``.onnx``, ``.pt2``)."""
    return Path(path).suffix.lower() in FORMATS.values()


def onnxruntime_module(what: str):
    """The onnxruntime module, or one line saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(f"{what} needs onnxruntime: {ONNX_INSTALL}") from None
    return onnxruntime


class ExportedModel:
    """An exported FluxViT, called like the model: ``logits = runner(video)``.

    Attributes from the artifact's metadata: ``grid`` (the sampling grid with its budget),
    ``budget`` (tokens asked), ``tokens`` (tokens kept: fewer only with the release's rounding),
    ``head``, ``selector``, ``name`` (architecture), ``class_names``, ``num_classes``,
    ``patch_size``, ``views``, ``batch`` (videos per forward), ``rows`` (clips per forward: batch x
    views), ``preprocessing`` and the whole record as ``metadata``. ``default_grid``,
    ``checkpoint_meta`` and ``checkpoint_path`` stand where the eval/predict code reads a model's.
    """

    logits_only = True  # what the eval loop asks: no tokens or clip features come out

    def __init__(self, path: str, kind: str, meta: dict, run, device: torch.device) -> None:
        self.path = path
        self.format = kind
        self.metadata = meta
        t, h, w = meta["grid"]
        self.grid = Grid(t, h, w, meta["budget"])
        self.budget: int = meta["budget"]
        self.tokens: int = meta["tokens"]
        self.head: int = meta["head"]
        self.selector: str = meta["selector"]
        self.name: str | None = meta.get("model")
        self.class_names: list[str] | None = meta.get("class_names")
        self.num_classes: int = meta["num_classes"]
        self.patch_size: int = meta["patch_size"]
        self.views: tuple[int, int] = tuple(meta["views"])
        self.batch: int = meta["batch"]
        self.rows: int = meta["rows"]
        self.preprocessing: dict = meta.get("preprocessing") or {}
        # No Token Optimization record (the grid is fixed); how inputs are made, as a checkpoint says
        # it (checked where it is read). A version 1 artifact was made with the antialiased resize.
        made = ({k: self.preprocessing[k] for k in ("resize", "view_offsets") if k in self.preprocessing}
                if meta.get("version", 1) >= 2 else {"resize": "antialias"})
        self.checkpoint_meta: dict = {PREPROCESSING_KEY: made}
        self.checkpoint_path = path
        self._run = run  # (rows, 3, T, H, W) float32 CPU/device tensor -> (rows, K) float32 tensor
        self._device = device
        self._out_device = torch.device("cpu")

    # ---------------------------------------------------------------- what the eval code reads
    @property
    def default_grid(self) -> Grid:
        """The artifact's grid (T, H, W) without a budget."""
        return self.grid.with_budget(None)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(3, T, H, W): one row of the input."""
        return (3, self.grid.frames, self.grid.height, self.grid.width)

    def to(self, device: str | torch.device) -> ExportedModel:
        """Outputs go to ``device``; a torch.export program also runs there (an ONNX session
        keeps the provider it was opened with)."""
        device = torch.device(device)
        if self.format == "torch-export" and device != self._device:
            self._run = self._run.moved(device)
            self._device = device
        self._out_device = device
        return self

    def eval(self) -> ExportedModel:
        return self

    def resolve_head(self, num_tokens: int, head: int | None = None) -> int:
        """The artifact's head (``head``, if given, must be it)."""
        self._check_call(None, head, None)
        return self.head

    def estimate_flops(self, grid: Grid | int):
        """Multiply-adds of one forward, as :meth:`fluxvit.FluxViT.estimate_flops` counts them, from
        the architecture recorded in the metadata."""
        from fluxvit.flux.flops import transformer_macs

        cfg = self.metadata.get("config")
        keys = ("embed_dim", "depth", "mlp_ratio", "in_chans", "clip_embed_dim")
        if not isinstance(cfg, dict) or not all(_is_number(cfg.get(k)) and 0 < cfg[k] < 10**6 for k in keys):
            raise CheckpointError(f"{self.path}: its metadata has no usable model config for counting FLOPs")
        if isinstance(grid, Grid):
            patches, tokens = grid.num_patches(self.patch_size), grid.num_tokens(self.patch_size)
        else:
            patches = tokens = int(grid)
        return transformer_macs(
            patches=patches, tokens=tokens, width=int(cfg["embed_dim"]), depth=int(cfg["depth"]),
            mlp_ratio=float(cfg["mlp_ratio"]), patch_pixels=int(cfg["in_chans"]) * self.patch_size**2,
            clip_dim=int(cfg["clip_embed_dim"]), num_classes=self.num_classes,
        )

    def forward_features(self, *args, **kwargs):
        raise ConfigError(f"{self.path}: an exported model computes logits only (its tokens and clip features "
                          f"stay inside); use the checkpoint for features or for showing the kept tokens")

    def __repr__(self) -> str:
        return (f"ExportedModel({self.path!r}, {self.format}, {self.name}, grid {self.default_grid}, "
                f"{self.budget} tokens, head {self.head})")

    # ---------------------------------------------------------------- running
    def __call__(self, video: torch.Tensor, num_tokens: int | None = None, head: int | None = None,
                 selector: str | None = None) -> torch.Tensor:
        """Logits (N, num_classes) float32 for ``video`` (N, 3, T, H, W) normalised. ``num_tokens``,
        ``head`` and ``selector`` are what a caller of the model passes: each, when given, must be
        the artifact's own (None: the artifact's own; the budget of an artifact that keeps every
        token may also be given as the grid's token count)."""
        self._check_call(num_tokens, head, selector)
        if not isinstance(video, torch.Tensor) or video.dim() != 5 or tuple(video.shape[1:]) != self.clip_shape:
            got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ConfigError(f"{self.path}: exported for clips (N, {', '.join(map(str, self.clip_shape))}) "
                              f"(grid {self.default_grid}), got {got}")
        if not video.is_floating_point():
            raise ConfigError(f"{self.path}: takes normalised float clips, got {video.dtype}")
        n = video.shape[0]
        out = []
        for start in range(0, n, self.rows):
            chunk = video[start:start + self.rows].detach()
            short = self.rows - chunk.shape[0]
            if short:
                chunk = torch.cat([chunk, chunk.new_zeros((short, *self.clip_shape))])
            out.append(self._run(chunk.to(self._device, torch.float32).contiguous())[: self.rows - short])
        if not out:
            return torch.zeros((0, self.num_classes), device=self._out_device)
        return torch.cat(out).to(self._out_device)

    def _check_call(self, num_tokens, head, selector) -> None:
        if num_tokens is not None and num_tokens != self.budget:
            patches = self.grid.num_patches(self.patch_size)
            raise ConfigError(f"{self.path}: exported to keep {self.budget} of the {patches} tokens of grid "
                              f"{self.default_grid}; it cannot run at {num_tokens} (use budget {self.budget})")
        heads = self.metadata["num_heads"]
        if head is not None and not (-heads <= head < heads and head % heads == self.head):
            raise ConfigError(f"{self.path}: exported with head {self.head}, not head {head}")
        if selector is not None and selector != self.selector:
            raise ConfigError(f"{self.path}: exported with the {self.selector} selector, not {selector}")


# ---------------------------------------------------------------------------- loading
def load_exported(path: str | os.PathLike, device: str = "auto", kind: str | None = None,
                  name: str | None = None) -> ExportedModel:
    """Open an artifact written by :func:`fluxvit.export.export_model`.

    ``device``: ``auto`` (CUDA when this onnxruntime or torch has it), ``cpu``, ``cuda[:N]``.
    ``kind`` (``onnx`` or ``torch-export``) is read from the suffix unless given; ``name`` is the
    name errors use (default ``path``). Anything else than a valid artifact is one
    :class:`CheckpointError` naming the file.
    """
    path = regular_file(path, "exported model", CheckpointError)
    shown = name or str(path)
    if kind is None:
        kind = next((k for k, suffix in FORMATS.items() if path.suffix.lower() == suffix), None)
        if kind is None:
            raise CheckpointError(f"{shown}: not an exported fluxvit model (expected a .onnx or .pt2 file "
                                  f"written by fluxvit export)")
    if kind not in FORMATS:
        raise ConfigError(f"unknown export format {kind!r}; choose from {', '.join(FORMATS)}")
    if kind == "onnx":
        return _open_onnx(path, shown, device)
    return _open_pt2(path, shown, device)


def _torch_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not auto, cpu, cuda or cuda:N")
    return dev


def _open_onnx(path: Path, shown: str, device: str) -> ExportedModel:
    ort = onnxruntime_module("running an exported .onnx model")
    dev = _torch_device("cpu" if device == "auto" else device)
    available = ort.get_available_providers()
    if device == "auto" and "CUDAExecutionProvider" in available:
        dev = torch.device("cuda")
    if dev.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ConfigError(f"{shown}: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu), "
                              f"run it with device cpu")
        providers = [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a refused file is said in our one line
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        raise CheckpointError(f"{shown}: not a readable ONNX model ({reason(e)})") from None
    raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    meta = _checked_metadata(raw, shown)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want_in = [meta["rows"], 3, *meta["grid"]]
    if (len(inputs) != 1 or list(inputs[0].shape) != want_in or inputs[0].type != "tensor(float)"
            or len(outputs) != 1 or list(outputs[0].shape) != [meta["rows"], meta["num_classes"]]):
        raise CheckpointError(f"{shown}: its graph does not take the input its metadata describes "
                              f"(float32 {tuple(want_in)} -> logits ({meta['rows']}, {meta['num_classes']}))")
    in_name, out_name = inputs[0].name, outputs[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().numpy()
        return torch.from_numpy(session.run([out_name], {in_name: array})[0])

    log.debug("%s: onnxruntime providers %s", shown, session.get_providers())
    return ExportedModel(shown, "onnx", meta, run, torch.device("cpu"))


class _ProgramRunner:
    """A torch.export program on one device, called on (rows, 3, T, H, W)."""

    def __init__(self, program) -> None:
        self.program = program
        self.module = program.module()

    def moved(self, device: torch.device) -> _ProgramRunner:
        from torch.export.passes import move_to_device_pass

        return _ProgramRunner(move_to_device_pass(self.program, device))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x).float()


def _open_pt2(path: Path, shown: str, device: str) -> ExportedModel:
    meta = _checked_metadata(_pt2_metadata(path, shown), shown)
    try:
        with open(path, "rb") as f:  # a file object: torch warns about a path not named .pt2 (a temporary one)
            program = torch.export.load(f)
    except Exception as e:  # a forged archive can fail anywhere inside torch's deserializer
        raise CheckpointError(f"{shown}: not a readable torch.export program ({reason(e)})") from None
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    user = [placeholders.get(name) for name in program.graph_signature.user_inputs]
    val = user[0].meta.get("val") if len(user) == 1 and user[0] is not None else None
    want_in = (meta["rows"], 3, *meta["grid"])
    if val is None or tuple(val.shape) != want_in or val.dtype != torch.float32:
        raise CheckpointError(f"{shown}: its program does not take the input its metadata describes "
                              f"(float32 {want_in})")
    runner = _ProgramRunner(program)
    model = ExportedModel(shown, "torch-export", meta, runner, torch.device("cpu"))
    dev = _torch_device(device)
    return model.to(dev) if dev.type != "cpu" else model


def _pt2_metadata(path: Path, shown: str) -> str | None:
    """Our metadata record of a ``.pt2`` archive, after checking that the archive holds no pickled
    payload and nothing beyond what torch.export.save writes."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            roots = {info.filename.split("/", 1)[0] for info in infos}
            if len(roots) != 1:
                raise CheckpointError(f"{shown}: not a torch.export archive (entries under {len(roots)} folders)")
            raw = None
            for info in infos:
                parts = info.filename.split("/")[1:]
                rel = "/".join(parts)
                if info.is_dir():
                    continue
                if not parts or (len(parts) == 1 and rel not in _PT2_TOP_FILES) or (
                        len(parts) > 1 and parts[0] not in _PT2_TOP_DIRS):
                    raise CheckpointError(f"{shown}: holds {info.filename[:80]!r}, which torch.export.save "
                                          f"does not write: refused")
                if rel.endswith(".pt") and info.file_size:
                    raise CheckpointError(f"{shown}: holds pickled data ({info.filename[:80]}), which could run "
                                          f"code: refused")
                if parts[0] == "data" and rel.endswith("_config.json"):
                    _check_payload_config(archive, info, shown)
                if rel == f"extra/{EXTRA_FILE}":
                    limits.TEXT_FILE_BYTES.check(info.file_size, f"{shown}: {EXTRA_FILE}", CheckpointError)
                    raw = archive.read(info).decode("utf-8")
            return raw
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, UnicodeDecodeError, ValueError, EOFError) as e:
        raise CheckpointError(f"{shown}: not a readable torch.export archive ({reason(e)})") from None


def _check_payload_config(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shown: str) -> None:
    """The weights/constants index of a .pt2: every payload raw tensor bytes, none pickled."""
    limits.TEXT_FILE_BYTES.check(info.file_size, f"{shown}: {info.filename[:80]}", CheckpointError)
    try:
        config = json.loads(archive.read(info)).get("config")
        entries = list(config.values())
        pickled = [e for e in entries if not isinstance(e, dict) or e.get("use_pickle")
                   or not str(e.get("path_name", "")).startswith(("weight_", "tensor_"))]
    except (ValueError, AttributeError, RecursionError, TypeError):
        raise CheckpointError(f"{shown}: not a readable torch.export archive ({info.filename[:80]} is not "
                              f"its JSON index)") from None
    if pickled:
        raise CheckpointError(f"{shown}: holds pickled or custom objects ({info.filename[:80]}), which could "
                              f"run code: refused")


def _checked_metadata(raw: str | None, shown: str) -> dict:
    """Our metadata record, checked field by field (it comes with the file: untrusted)."""
    if raw is None:
        raise CheckpointError(f"{shown}: not an exported fluxvit model (no fluxvit metadata in it)")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{shown}: its fluxvit metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != ARTIFACT_FORMAT:
        raise CheckpointError(f"{shown}: not an exported fluxvit model (its metadata is not a {ARTIFACT_FORMAT} "
                              f"record)")
    version = meta.get("version")
    if not _is_int(version) or version > ARTIFACT_VERSION:
        raise CheckpointError(f"{shown}: artifact version {version!r:.20} is newer than this fluxvit reads "
                              f"({ARTIFACT_VERSION}); upgrade fluxvit")

    def positive(key: str) -> int:
        value = meta.get(key)
        if not _is_int(value) or value < 1:
            raise CheckpointError(f"{shown}: metadata field {key!r} is not a positive integer")
        return value

    for key in ("budget", "tokens", "patch_size", "num_classes", "rows", "batch", "num_heads"):
        positive(key)
    for key, size in (("grid", 3), ("views", 2)):
        value = meta.get(key)
        if not isinstance(value, list) or len(value) != size or not all(_is_int(v) and v > 0 for v in value):
            raise CheckpointError(f"{shown}: metadata field {key!r} is not a list of {size} positive integers")
    head = meta.get("head")
    if not _is_int(head) or not 0 <= head < meta["num_heads"]:
        raise CheckpointError(f"{shown}: metadata field 'head' is not a head index below {meta['num_heads']}")
    for key in ("selector",):
        if not isinstance(meta.get(key), str):
            raise CheckpointError(f"{shown}: metadata field {key!r} is not a string")
    if meta.get("model") is not None and not isinstance(meta["model"], str):
        raise CheckpointError(f"{shown}: metadata field 'model' is not a string")
    if meta.get("preprocessing") is not None and not isinstance(meta["preprocessing"], dict):
        raise CheckpointError(f"{shown}: metadata field 'preprocessing' is not an object")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != meta["num_classes"]
                              or not all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{shown}: metadata field 'class_names' is not a list of {meta['num_classes']} "
                              f"names")
    try:
        grid = Grid(*meta["grid"], meta["budget"])
        patches = grid.num_patches(meta["patch_size"])
        grid.num_tokens(meta["patch_size"])
    except ConfigError as e:
        raise CheckpointError(f"{shown}: its metadata grid and budget do not fit ({e})") from None
    if meta["tokens"] > meta["budget"] or meta["budget"] > patches:
        raise CheckpointError(f"{shown}: metadata keeps {meta['tokens']} of {meta['budget']} tokens of a "
                              f"{patches}-token grid")
    if meta["rows"] != meta["batch"] * meta["views"][0] * meta["views"][1]:
        raise CheckpointError(f"{shown}: metadata rows {meta['rows']} is not batch x clips x crops")
    return meta


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

