"""A toy training run in its own process (for the kill-and-resume and torchrun tests).

python -m tests.train.run_toy OUT_DIR STEPS BATCH [--resume]; every rank also writes its final
weights to OUT_DIR/rank<R>.pt so that a test can compare ranks.
"""

import os
import sys

import torch

from fluxvit.train import train

from .toy import toy_config, toy_source


def main() -> None:
    out, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)  # the same reductions in every process: bitwise comparable
    cfg = toy_config(out, "flux", steps, ckpt_every=2, keep_last=2, ema_decay=0.9,
                     data={"batch_size": batch},
                     model={"head_budgets": [64, 48, 32], "drop_path": 0.1},
                     optim={"lr": 1e-3, "warmup_steps": 2, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1,
                            "clip_grad": 1.0, "accum_steps": 2, "layer_decay": 0.75})
    if os.environ.get("TOY_NO_RANDOM_AUG"):  # DDP vs one process: no per-rank random draws
        cfg["model"]["drop_path"] = 0.0
        cfg["optim"].update(mixup=0.0, cutmix=0.0)
    result = train(cfg, toy_source(4, seed=0), None, resume="--resume" in sys.argv)
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    torch.save(state, os.path.join(out, f"rank{os.environ.get('RANK', '0')}.pt"))


if __name__ == "__main__":
    main()
