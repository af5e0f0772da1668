"""Parity with the official FluxViT release, checked against its own numbers.

``golden_official.json`` holds logits computed once by the release's ``fluxvit.py`` (run on CPU,
fp32, with its CUDA-only imports stubbed) for the seeded weights and videos of
``official_format.py``. Here the same weights go through the public contract
(``fluxvit.create_model(..., checkpoint=path)``) and every case must match to 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from official_format import (
    EMBED_DIM,
    NUM_CLASSES,
    WEIGHTS_SEED,
    make_input,
    official_shapes,
    official_state_dict,
    release_groups,
)

import fluxvit

pytestmark = pytest.mark.slow

GOLDEN = json.loads((Path(__file__).with_name("golden_official.json")).read_text())
CASES = GOLDEN["cases"]
ATOL = 1e-4
MODEL = "fluxvit_small_patch14"


@pytest.fixture(scope="module")
def official_sd() -> dict[str, torch.Tensor]:
    return official_state_dict(GOLDEN["weights_seed"])


@pytest.fixture(scope="module")
def raw_checkpoint(official_sd, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("official") / "fluxvit_s_raw.pth"
    torch.save(official_sd, path)
    return path


@pytest.fixture(scope="module")
def model(raw_checkpoint):
    m = fluxvit.create_model(MODEL, num_classes=NUM_CLASSES, checkpoint=raw_checkpoint)
    return m.eval()


def _video(case: dict) -> torch.Tensor:
    # batch-1 cases use row 0 of the batch-2 input (identical to make_input(1, ...))
    return make_input(case["batch"], case["frames"], case["size"], case["input_seed"], case["salient"])


def _check(model, case: dict) -> float:
    with torch.no_grad():
        out = model(_video(case), num_tokens=case["num_tokens"], head=case["head"])
    want = torch.tensor(case["logits"], dtype=torch.float32)
    assert out.shape == want.shape, f"{case['name']}: shape {tuple(out.shape)} != {tuple(want.shape)}"
    diff = float((out.float() - want).abs().max())
    assert diff <= ATOL, f"{case['name']}: max |logit diff| {diff:.3g} > {ATOL}"
    return diff


# --- the fixture itself -------------------------------------------------------------------------


def test_golden_metadata():
    assert GOLDEN["weights_seed"] == WEIGHTS_SEED
    assert GOLDEN["model"] == MODEL and GOLDEN["num_classes"] == NUM_CLASSES
    assert len(GOLDEN["official_commit"]) == 40
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    for c in CASES:
        assert len(c["logits"]) == c["batch"] and all(len(r) == NUM_CLASSES for r in c["logits"])
        if c["num_tokens"] is not None:
            groups = release_groups(c["frames"])
            per_group = c["frames"] // groups * (c["size"] // 14) ** 2
            # the release keeps int((1 - ratio) * tokens per group) in every group
            assert int((1 - c["masking_ratio"]) * per_group) * groups == c["num_tokens"]
            assert c["salient"] * groups == c["num_tokens"]


def test_state_dict_is_the_release_format(official_sd):
    shapes = official_shapes()
    assert len(shapes) == 246
    assert [k for k, _ in shapes] == list(official_sd)
    for key, shape in shapes:
        assert tuple(official_sd[key].shape) == shape, key
        assert official_sd[key].dtype == torch.float32
    assert official_sd["pos_embed"].shape == (1, 1 + 24 * 18 * 18, EMBED_DIM)
    again = official_state_dict(WEIGHTS_SEED)
    assert all(torch.equal(again[k], v) for k, v in official_sd.items())
    # values that make every part count: layer scales far from 1e-5, non-identity convs
    gammas = torch.cat([v for k, v in official_sd.items() if k.endswith(".gamma")])
    assert float(gammas.min()) >= 0.1 and float(gammas.max()) <= 0.5
    assert float(official_sd["blocks.0.attn.lpe.depthwise_conv.bias"].abs().min()) > 0


def test_make_input_is_seeded_and_row_stable():
    a = make_input(2, 8, 112, 7, salient=64)
    assert a.shape == (2, 3, 8, 112, 112) and a.dtype == torch.float32
    assert torch.equal(a, make_input(2, 8, 112, 7, salient=64))
    assert torch.equal(make_input(1, 8, 112, 7, salient=64), a[:1])
    assert not torch.equal(a, make_input(2, 8, 112, 8, salient=64))


# --- parity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_parity_with_release(model, case):
    _check(model, case)


@pytest.mark.parametrize("wrap", ["model", "module_prefix", "backbone_prefix"])
def test_wrapped_release_files(official_sd, tmp_path, wrap):
    if wrap == "model":
        payload = {"model": official_sd}
    else:
        prefix = wrap.split("_")[0] + "."
        payload = {prefix + k: v for k, v in official_sd.items()}
    path = tmp_path / f"release_{wrap}.pth"
    torch.save(payload, path)
    m = fluxvit.create_model(MODEL, num_classes=NUM_CLASSES, checkpoint=path).eval()
    cheap = [c for c in CASES if c["frames"] == 2 and c["size"] == 56]
    assert cheap
    for case in cheap:
        _check(m, case)
