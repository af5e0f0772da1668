"""Device and precision: the words users type, and ``auto``'s rule (never slower than fp32)."""

from __future__ import annotations

import json

import pytest
import torch

from fluxvit import placement
from fluxvit.errors import ConfigError
from fluxvit.placement import Placement, auto_dtype, resolve_device, resolve_dtype


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(" CPU ")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cpu:1", "cuda:x", "cuda:1234567", ""):
        with pytest.raises(ConfigError, match="is not one of auto, cpu, cuda, cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available here"):
            resolve_device("cuda:0")


def test_dtypes():
    cpu = torch.device("cpu")
    assert resolve_dtype("fp32", cpu) == torch.float32 and resolve_dtype("BF16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA device"):
        resolve_dtype("fp16", cpu)
    with pytest.raises(ConfigError, match="dtype 'bf17' is not one of auto, fp32, bf16, fp16"):
        resolve_dtype("bf17", cpu)


@pytest.mark.parametrize("fp32, bf16, chosen", [(400.0, 2300.0, torch.bfloat16), (310.0, 170.0, torch.float32),
                                                (400.0, 450.0, torch.float32), (400.0, 1.0, torch.float32)])
def test_auto_takes_cpu_bf16_only_where_it_is_measured_faster(tmp_path, monkeypatch, fp32, bf16, chosen):
    """The two machines of this project (AMX: 2300 vs 400 GFLOP/s; AVX512-BF16 only: 170 vs 310),
    one where bf16 is barely faster (not worth it) and one that emulates it; measured once, cached."""
    monkeypatch.setenv("FLUXVIT_CACHE", str(tmp_path))
    calls = []

    def fake(dtype, n, device):
        calls.append(dtype)
        return bf16 if dtype == torch.bfloat16 else fp32

    monkeypatch.setattr("fluxvit.timing.matmul_gflops", fake)
    cpu = torch.device("cpu")
    assert auto_dtype(cpu) == chosen and len(calls) == 6  # best of three of each
    assert auto_dtype(cpu) == chosen and len(calls) == 6  # the second time from the cache
    cache = json.loads((tmp_path / "precision.json").read_text())
    assert cache[placement.device_key(cpu)] == {"fp32": fp32, "bf16": bf16}
    (tmp_path / "precision.json").write_text("{not json")  # a damaged cache is measured again
    assert auto_dtype(cpu) == chosen and len(calls) == 12


def test_the_real_measurement_runs_here(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXVIT_CACHE", str(tmp_path))
    p = Placement.resolve("cpu", "auto")
    speeds = json.loads((tmp_path / "precision.json").read_text())[placement.device_key(p.device)]
    assert speeds["fp32"] > 0 and speeds["bf16"] > 0
    assert (p.dtype == torch.bfloat16) == (speeds["bf16"] >= placement.BF16_MIN_SPEEDUP * speeds["fp32"])
    assert p.to_dict()["device"] == "cpu" and str(p) in ("cpu fp32", "cpu bf16")


def test_bf16_autocast_runs_the_model_close_to_fp32():
    import fluxvit

    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=5, depth=2).eval()
    video = torch.randn(2, 3, 4, 56, 56)
    with torch.no_grad():
        ref = model(video, num_tokens=40)
        with Placement(torch.device("cpu"), torch.bfloat16).autocast():
            low = model(video, num_tokens=40)
    assert low.dtype == torch.bfloat16 and float((low.float() - ref).abs().max()) < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_placement_runs_the_model():
    import fluxvit

    p = Placement.resolve("cuda", "auto")
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=5, depth=2).to(p.device).eval()
    with torch.no_grad(), p.autocast():
        out = model(torch.randn(2, 3, 4, 56, 56, device=p.device), num_tokens=40)
    assert out.shape == (2, 5) and torch.isfinite(out.float()).all()


def test_bf16_is_emulated_where_it_is_four_times_slower(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXVIT_CACHE", str(tmp_path))
    cpu = torch.device("cpu")
    for fp32, bf16, emulated in ((107.0, 1.3, True), (310.0, 170.0, False), (400.0, 99.0, True)):
        (tmp_path / "precision.json").write_text(json.dumps({placement.device_key(cpu): {"fp32": fp32, "bf16": bf16}}))
        assert placement.bf16_is_emulated(cpu) is emulated
