"""The evaluation tests' shared data: a small synthetic split and a random nano checkpoint."""

import pytest
import torch

import fluxvit
from fluxvit.data.synthetic import make_synthetic_dataset

CLASSES = ["slide_left", "slide_right", "grow", "stripes_h"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(root, the synthetic dataset: 4 classes x 4 clips of 8 frames at 56 px, half in val, the
    checkpoint of a 2-block nano with random weights and default grid 4x56)."""
    root = tmp_path_factory.mktemp("evalcli")
    data = make_synthetic_dataset(root / "data", classes=CLASSES, per_class=4, size=56, frames=8, seed=1,
                                  val_fraction=0.5, workers=1)
    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=4, depth=2, default_grid=(4, 56))
    ckpt = fluxvit.save_checkpoint(model, root / "nano.safetensors", classes=CLASSES)
    return root, data, ckpt
