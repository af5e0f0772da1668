"""Faster inference from the same weights: int8 linears for CPUs and ``torch.compile``.

:func:`quantize_int8` swaps the transformer blocks' linears (``qkv``, ``proj``, ``fc1``, ``fc2``:
all of a FluxViT's multiply-adds outside attention but the patch embedding's and the pooling
heads') for dynamically quantized ones: weights int8 per output channel, stored once;
activations quantized per call from their own range; int32 accumulation; everything else
(norms, attention, the selector, the pooling heads and classifiers) stays fp32. The path is
torch's own eager dynamic quantization, ``torch.ao.quantization.quantize_dynamic``, packed for
the x86 (fbgemm) engine. torchao's ``Int8DynamicActivationInt8WeightConfig``, the named
successor, installed beside torch 2.13 but was not used: on this project's AVX2 CPU (no VNNI)
its int8 matmul ran ~25x slower than fp32, eager and compiled alike (1.9 GFLOP/s on a 384x1536
linear at 2049 tokens, where fp32 ran 45 and torch.ao's int8 70-100, on a busy machine).
torch.ao announces its removal; its deprecation notices are silenced here on purpose (this
docstring's choice), and a torch without it is refused in one line.

What int8 buys there (FluxViT-S, 2 threads, benchmarks/bench_inference.py ``--only accel``):
~1.3-1.4x at 512 and 1024 tokens, ~1.2x at 2048, where attention, left in fp32, is half of the
multiply-adds. On the demo's trained nano it kept test top-1 (76.9 at 64 tokens, 76.2 at 512).

:func:`compile_model` puts each block's forward through ``torch.compile`` (the blocks are the
whole cost; the selector's top-k and the per-grid positional tables stay eager, where they
would only add graph breaks and recompiles; the twelve blocks share one compiled graph per
shape). On that CPU it was no faster than eager (0.9-1.1x: the forward is already matmuls,
flash attention and in-place elementwise ops); it is there for machines where it helps. Where
the compiler cannot run (no C compiler, an unsupported platform or Python) the model runs
eager, said in one log line.

Both act in place, return the model and tag it (``model.acceleration``: ``"int8"``,
``"compiled"``, ``"int8+compiled"``) so that measurements (the latency cache) keep them apart.
An int8 model is for inference: its state dict holds packed weights, not a checkpoint's.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

from fluxvit.errors import ConfigError, reason
from fluxvit.placement import Placement, dtype_name

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("none", "int8")
INT8_LAYERS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")  # inside each of model.blocks
# Quantized engines in order of preference: x86 (fbgemm or oneDNN by shape, torch's default on
# x86), fbgemm, then qnnpack (ARM). The engine packs the weights; it is restored afterwards.
INT8_ENGINES = ("x86", "fbgemm", "qnnpack")


def _tag(model: nn.Module, what: str) -> None:
    before = getattr(model, "acceleration", None)
    model.acceleration = f"{before}+{what}" if before else what


# ----------------------------------------------------------------------------- int8
def int8_engine() -> str:
    """The quantized engine int8 packs its weights for here, or one :class:`ConfigError` line."""
    supported = torch.backends.quantized.supported_engines
    for engine in INT8_ENGINES:
        if engine in supported:
            return engine
    raise ConfigError(f"int8: this torch {torch.__version__} has no quantized CPU engine "
                      f"(it has: {', '.join(e for e in supported if e != 'none') or 'none'})")


def check_int8_placement(placement: Placement) -> None:
    """int8 runs on a CPU with fp32 around its int8 matmuls; anything else is one line."""
    if placement.device.type != "cpu":
        raise ConfigError(f"int8 runs on a CPU, not on {placement.device} (pass --device cpu; on a GPU "
                          f"use --dtype bf16)")
    if placement.dtype != torch.float32:
        raise ConfigError(f"int8 keeps the rest of the model in fp32, not {dtype_name(placement.dtype)} "
                          f"(pass --dtype fp32 or auto)")


def _quantize_dynamic() -> Callable:
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        raise ConfigError(f"int8: this torch {torch.__version__} no longer has "
                          f"torch.ao.quantization.quantize_dynamic") from None
    return quantize_dynamic


def quantize_int8(model: nn.Module, placement: Placement | None = None, engine: str | None = None) -> nn.Module:
    """The model with its blocks' linears (:data:`INT8_LAYERS`) dynamically quantized to int8, in
    place (module docstring). ``placement`` (default: CPU fp32) is checked; ``engine`` defaults
    to :func:`int8_engine`. Returns ``model``, in eval mode, tagged ``acceleration="int8"``."""
    check_int8_placement(placement or Placement())
    if engine is None:
        engine = int8_engine()
    elif engine not in torch.backends.quantized.supported_engines:
        raise ConfigError(f"int8 engine {engine!r} is not one of this torch's "
                          f"{', '.join(torch.backends.quantized.supported_engines)}")
    if "int8" in (getattr(model, "acceleration", None) or ""):
        return model  # already quantized: a second pass would find no float linears anyway
    if any(p.device.type != "cpu" for p in model.parameters()):
        model.to("cpu")
    quantize_dynamic = _quantize_dynamic()
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    # qnnpack (ARM) packs per-tensor weights; fbgemm/x86 per output channel (more accurate, as fast).
    qconfig = default_dynamic_qconfig if engine == "qnnpack" else per_channel_dynamic_qconfig
    names = [f"blocks.{i}.{layer}" for i in range(len(model.blocks)) for layer in INT8_LAYERS]
    present = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    spec = {name: qconfig for name in names if name in present}
    if not spec:
        raise ConfigError(f"int8: {type(model).__name__} has none of the block linears {', '.join(INT8_LAYERS)}")
    before = torch.backends.quantized.engine
    model.eval()
    try:
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():
            # torch.ao's own notices that it is deprecated (module docstring: chosen knowingly)
            warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated",
                                    category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                    category=UserWarning)
            quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    finally:
        torch.backends.quantized.engine = before
    log.debug("int8: %d linears quantized (torch.ao dynamic, %s engine)", len(spec), engine)
    _tag(model, "int8")
    return model


# ----------------------------------------------------------------------------- torch.compile
class _Fallback:
    """Shared by a model's compiled blocks: once compiling has failed, all of them run eager."""

    def __init__(self) -> None:
        self.reason: str | None = None


class _CompiledForward:
    """A block's forward through ``torch.compile``, run eager from the first failure of the
    compiled call on (when the eager forward then succeeds: an error of the input itself still
    raises, from the eager code)."""

    def __init__(self, eager: Callable, compiled: Callable, fallback: _Fallback) -> None:
        self.eager, self.compiled, self.fallback = eager, compiled, fallback

    def __call__(self, *args, **kwargs):
        if self.fallback.reason is not None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as e:  # the compiler's failures have many types (backend, C compiler, OS)
            out = self.eager(*args, **kwargs)
            self.fallback.reason = reason(e)
            log.warning("torch.compile failed (%s); running eager from here on", self.fallback.reason)
            return out


def compile_model(model: nn.Module, mode: str | None = None, dynamic: bool | None = None,
                  options: dict | None = None) -> nn.Module:
    """Each of ``model.blocks`` compiled with ``torch.compile(mode, dynamic, options)``, in place
    (module docstring). Compiling happens at the first call of each new shape (budgets and batch
    sizes; after the second shape torch compiles a dynamic one). Where the compiler is missing or
    fails, the model stays eager with one log line. Returns ``model``, tagged ``"compiled"``."""
    if "compiled" in (getattr(model, "acceleration", None) or ""):
        return model
    fallback = _Fallback()
    try:
        compiled = [torch.compile(blk.forward, mode=mode, dynamic=dynamic, options=options) for blk in model.blocks]
    except Exception as e:  # torch.compile refuses at once on an unsupported platform or Python
        log.warning("torch.compile is unavailable here (%s); running eager", reason(e))
        return model
    for blk, fn in zip(model.blocks, compiled):
        # An instance attribute, so the module (its state-dict names included) stays what it was.
        blk.forward = _CompiledForward(blk.forward, fn, fallback)
    _tag(model, "compiled")
    return model


def accelerate(model: nn.Module, quantize: str = "none", compile: bool = False,
               placement: Placement | None = None) -> nn.Module:
    """``quantize`` (``none`` or ``int8``) and then ``compile``, as the command line asks."""
    if quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"quantize {quantize!r} is not one of {', '.join(QUANTIZE_CHOICES)}")
    if quantize == "int8":
        quantize_int8(model, placement)
    if compile:
        compile_model(model)
    return model
