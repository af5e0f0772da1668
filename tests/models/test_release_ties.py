"""Parity with the release where the token selector's exact ties straddle the budget's cut.

``golden_ties.json`` holds logits of the official implementation (run once on CPU, see its
"note") for plain Gaussian inputs, on which frames 0 and 1 of every selector group tie exactly
at every position, and every case cuts between such a pair. Two sets of logits per case:

* ``logits``: the release as it is. It sorts with an unstable ``argsort``, which resolves those
  ties with no rule (on CPU it kept the later token in 19 of 44 straddling pairs);
* ``logits_if_stable_ties``: the same release code with one change, its sort made stable, so
  that an exact tie goes to the earlier token: fluxvit's documented rule.

So fluxvit must equal the second set in every case (everything but the tie rule is the
release's: scores, groups, per-group counts, positions, heads), the first set wherever the
release happened to break every tie the same way, and the tie rule must matter (the opposite rule
fails every case). The release's per-group rounding keeps fewer than N on two grids; there the
``group_dynamic_release`` selector is used, as a user comparing against the release would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from official_format import NUM_CLASSES, WEIGHTS_SEED, official_state_dict

import fluxvit
from fluxvit.flux.selectors import _keep_top, _mask_to_indices, equal_shares, num_groups

pytestmark = pytest.mark.slow

GOLDEN = json.loads(Path(__file__).with_name("golden_ties.json").read_text())
CASES = GOLDEN["cases"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("release") / "fluxvit_s.pth"
    torch.save(official_state_dict(GOLDEN["weights_seed"]), path)
    return fluxvit.create_model(GOLDEN["model"], num_classes=NUM_CLASSES, checkpoint=path).eval()


def _video(case: dict) -> torch.Tensor:
    t, s = case["frames"], case["size"]
    video = torch.randn(2, 3, t, s, s, generator=torch.Generator().manual_seed(case["input_seed"]))
    return video[: case["batch"]]  # batch-1 cases are row 0 (the release crashes at batch 1)


def _later_wins(embeddings: torch.Tensor, num_tokens: int, generator=None) -> torch.Tensor:
    """The opposite tie rule, as an oracle: group-dynamic scores, ties to the *later* token."""
    b, t, l, _ = embeddings.shape
    g = num_groups(t)
    x = embeddings.reshape(b, g, t // g, l, -1)
    dist = torch.linalg.vector_norm(x[:, :, 1:] - x[:, :, :-1], dim=-1)
    scores = torch.cat([dist[:, :, :1], dist], dim=2).reshape(b, g, -1).float()
    order = torch.sort(scores.flip(-1), dim=-1, descending=True, stable=True).indices  # later first
    order = scores.shape[-1] - 1 - order
    shares = equal_shares(num_tokens, g)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for grp in range(g):
        mask[:, grp].scatter_(-1, order[:, grp, : int(shares[grp])], True)
    return _mask_to_indices(mask, num_tokens)


def test_the_fixture():
    assert GOLDEN["weights_seed"] == WEIGHTS_SEED and len(GOLDEN["official_commit"]) == 40
    assert sorted({c["frames"] for c in CASES}) == [6, 8, 12, 16, 24]  # T = 4 and odd T: the release fails
    assert all(c["straddling_pairs"] >= 1 for c in CASES)
    total = sum(c["straddling_pairs"] for c in CASES if c["batch"] == 2)
    later = sum(c["straddling_pairs_later_kept"] for c in CASES if c["batch"] == 2)
    assert (total, later) == (44, 19)  # the release has no tie rule: later kept 19 times, earlier 25


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_parity_with_the_release_at_straddling_ties(model, case):
    video, n, head = _video(case), case["num_tokens"], case["head"]
    selector = "group_dynamic_release" if case["release_kept"] < n else "group_dynamic"
    with torch.no_grad():
        tokens, kept = model.forward_features(video, n, selector=selector, return_indices=True)
        logits = model.forward_head(tokens, head)
        other = model.forward_head(model.forward_features(video, n, selector=_later_wins), head)
    assert kept.shape == (case["batch"], case["release_kept"])
    stable = torch.tensor(case["logits_if_stable_ties"])
    release = torch.tensor(case["logits"])
    diff = float((logits - stable).abs().max())
    assert diff <= ATOL, f"{case['name']}: {diff:.3g} from the release with the earlier-token tie rule"
    if case["release_equals_stable_ties"]:
        assert float((logits - release).abs().max()) <= ATOL
    else:  # the release broke some tie the other way: its logits differ by far more than noise
        assert float((logits - release).abs().max()) > 100 * ATOL
    if case["release_kept"] == n:  # the tie rule matters in every case: the opposite one fails
        assert float((other - stable).abs().max()) > 100 * ATOL


def test_release_rounding_and_the_default():
    case = next(c for c in CASES if c["name"] == "T16_H196_N1024_head0_b1")
    video = _video(case)
    m = fluxvit.create_model("fluxvit_nano_patch14", num_classes=3, depth=1).eval()
    with torch.no_grad():
        _, exact = m.forward_features(video, 1024, return_indices=True)
        _, release = m.forward_features(video, 1024, selector="group_dynamic_release", return_indices=True)
    assert exact.shape == (1, 1024) and release.shape == (1, 1020) == (1, sum(case["release_per_group"]))
    per_group = 16 // 4 * 14 * 14
    assert torch.bincount(release[0] // per_group).tolist() == case["release_per_group"] == [255] * 4
    assert torch.bincount(exact[0] // per_group).tolist() == [256] * 4


def test_top_k_cut_is_the_stable_sort_rule():
    """The selector's top-k cut equals a stable descending sort's first k (earlier wins at ties),
    on scores full of exact ties, for any shares."""
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        b, groups, m = 2, int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 40, (1,), generator=g))
        scores = torch.randint(0, 4, (b, groups, m), generator=g).float()  # few values: many ties
        if trial % 7 == 0:
            scores[0, 0, 0] = float("nan")
        shares = torch.randint(1, m + 1, (groups,), generator=g)
        mask = _keep_top(scores, shares)
        ref = torch.zeros_like(mask)
        order = torch.sort(torch.nan_to_num(scores, nan=float("inf")), dim=-1, descending=True, stable=True).indices
        for grp in range(groups):
            ref[:, grp].scatter_(-1, order[:, grp, : int(shares[grp])], True)
        assert torch.equal(mask, ref), (trial, scores, shares)
        assert mask.sum(-1).tolist() == [shares.tolist()] * b
