"""No command loses or overwrites data, and no file argument can hang or flood a command.

- ``fluxvit train`` into the folder of an earlier run: refused (one line), or ``--overwrite``
  moves that run aside; ``--resume`` on a finished run does nothing; a resumed run's metrics
  describe each step once.
- Outputs that would overwrite an input (``--show-tokens`` at the video, ``--save-features`` at
  the annotation file, ``convert`` onto its source) are refused before any work.
- Several ``optimize`` runs storing choices in one checkpoint at once: every budget survives.
- A FIFO, ``/dev/zero`` or a directory given as the config, the annotation file or the
  checkpoint; a path longer than the system allows: one line each (none hangs: each runs under
  a timeout as a real process).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fluxvit
from fluxvit.train import train
from fluxvit.train.metrics import read_metrics

from ..train.toy import toy_config, toy_source
from .conftest import ENV, ROOT, assert_user_error, csv_train_config, run_process
from .media import clip


def _tree(path):
    """{relative path: bytes} of every file under ``path``."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step toy run (checkpoints at 2 and 4, metrics every step)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    train(toy_config(out, "fixed", 4, ckpt_every=2, log_every=1), toy_source(1, 0))
    return out


def test_training_into_a_finished_run_is_refused_and_nothing_changes(tmp_path, cli):
    out = tmp_path / "run"
    config = csv_train_config(tmp_path, out)
    assert cli("train", config).code == 0
    before = _tree(out)
    assert "model.safetensors" in before and "checkpoints/ckpt_000000002.pt" in before
    run = cli("train", config, "--set", "optim.lr=5e-4")
    assert_user_error(run, "train", f"out_dir {out}: holds a finished run (model.safetensors, metrics.jsonl, "
                      "config.yaml, checkpoints)", "--resume", "--overwrite")
    assert _tree(out) == before  # not one byte of the finished run changed
    assert_user_error(cli("train", config, "--resume", "--overwrite"), "train", "not both")


def test_overwrite_moves_the_earlier_run_aside(tmp_path, cli):
    out = tmp_path / "run"
    config = csv_train_config(tmp_path, out)
    assert cli("train", config).code == 0
    before = _tree(out)
    assert cli("train", config, "--overwrite", "--set", "steps=1").code == 0
    assert _tree(tmp_path / "run.old-1") == before  # the earlier run, whole, under its new name
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if not r.get("final")] == [1]
    assert cli("train", config, "--overwrite").code == 0
    assert (tmp_path / "run.old-2" / "model.safetensors").is_file() and (tmp_path / "run.old-1").is_dir()


def test_resuming_a_finished_run_does_nothing(finished):
    before = _tree(finished)
    result = train(toy_config(finished, "fixed", 4, ckpt_every=2, log_every=1), toy_source(1, 0), resume=True)
    assert _tree(finished) == before
    assert result.checkpoint == finished / "model.safetensors" and result.steps == 4
    assert result.metrics["loss"] == [r for r in read_metrics(finished / "metrics.jsonl") if r.get("final")][-1]["loss"]


def test_a_resumed_run_records_each_step_once(tmp_path, finished):
    """An attempt killed after step 4 (its model never saved) resumes from step 2: the metrics of
    steps 3 and 4 it wrote, and a line cut short, are replaced by the resumed run's."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "model.safetensors").unlink()
    (out / "checkpoints" / "ckpt_000000004.pt").unlink()
    lines = [ln for ln in (out / "metrics.jsonl").read_text().splitlines() if '"final"' not in ln]
    (out / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 5, "lo')
    train(toy_config(out, "fixed", 4, ckpt_every=2, log_every=1), toy_source(1, 0), resume=True)
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if not r.get("final")] == [1, 2, 3, 4]
    assert sum(bool(r.get("final")) for r in records) == 1
    # the resumed steps are the uninterrupted run's, bit for bit
    finished_steps = {r["step"]: r["loss"] for r in read_metrics(finished / "metrics.jsonl") if not r.get("final")}
    assert {r["step"]: r["loss"] for r in records if not r.get("final")} == finished_steps


def test_outputs_never_overwrite_inputs(tmp_path, cli, nano_ckpt):
    video = clip(tmp_path, "input.mp4", 8)
    original = video.read_bytes()
    run = cli("predict", video, "--checkpoint", nano_ckpt, "--show-tokens", video)
    assert_user_error(run, "predict", f"--show-tokens {video}: the picture is a PNG file")
    link = tmp_path / "link.png"
    link.symlink_to(video)  # the same file under a picture's name
    assert_user_error(cli("predict", video, "--checkpoint", nano_ckpt, "--show-tokens", link), "predict",
                      f"--show-tokens {link}: is an input of this command")
    assert video.read_bytes() == original
    csv = tmp_path / "val.csv"
    csv.write_text(f"{video.name} 0\n")
    csv_text = csv.read_text()
    run = cli("eval", "--checkpoint", nano_ckpt, "--data", csv, "--views", "1x1", "--save-features", csv)
    assert_user_error(run, "eval", f"--save-features {csv}: is an input of this command")
    assert csv.read_text() == csv_text and run.out == ""
    ckpt_bytes = nano_ckpt.read_bytes()
    run = cli("convert", nano_ckpt, nano_ckpt, "--model", "fluxvit_nano_patch14")
    assert_user_error(run, "convert", "is an input of this command")
    assert nano_ckpt.read_bytes() == ckpt_bytes


_OPTIMIZE_ONE_BUDGET = """
import sys
from fluxvit.cli import main
ckpt, csv, budget, out = sys.argv[1:]
sys.exit(main(["optimize", "--checkpoint", ckpt, "--data", csv, "--budgets", budget, "--frames", "2,4",
               "--sizes", "28,56", "--subset", "1", "--refine", "1", "--min-gain-se", "0", "--out", out]))
"""


def test_concurrent_optimize_runs_each_keep_their_budgets(tmp_path, nano_ckpt):
    """Four ``optimize`` runs on one checkpoint at once, one budget each: all four choices stored."""
    import shutil

    ckpt = shutil.copy(nano_ckpt, tmp_path / "shared.safetensors")
    csv = tmp_path / "tune.csv"
    csv.write_text("".join(f"{clip(tmp_path, f't{i}.mp4', 8).name} {i % 4}\n" for i in range(4)))
    budgets = ["8", "16", "24", "32"]
    env = {**ENV, "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", _OPTIMIZE_ONE_BUDGET, str(ckpt), str(csv), b,
                               str(tmp_path / f"opt{b}")], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for b in budgets]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-500:] for _, err in results]
    stored = fluxvit.load_checkpoint(ckpt).checkpoint_meta["token_optimization"]
    assert sorted(stored, key=int) == budgets
    assert all(stored[b]["grid"] and stored[b]["device"] == "cpu" for b in budgets)


def _fifo(d):
    os.mkfifo(d / "pipe")
    return d / "pipe"


def _folder(d):
    (d / "folder.yaml").mkdir()
    return d / "folder.yaml"


# name -> (make it under a folder, the problem the line names)
NOT_A_FILE = {
    "fifo": (_fifo, "not a regular file"),
    "dev_zero": (lambda d: "/dev/zero", "not a regular file"),
    "directory": (_folder, "is a directory (expected: "),
    "path_too_long": (lambda d: "/" + "x" * 5000, "path too long for this system (5001 characters)"),
}
# the file arguments that must be regular files: name -> argv given the path, a checkpoint, a video
DOORS = {
    "config": lambda path, ckpt, video: ["train", path],
    "annotations": lambda path, ckpt, video: ["eval", "--checkpoint", ckpt, "--data", path],
    "checkpoint": lambda path, ckpt, video: ["predict", video, "--checkpoint", path],
}
CASES = [(door, kind) for door in DOORS for kind in NOT_A_FILE
         if not (door == "checkpoint" and kind == "directory")]  # a folder is a valid checkpoint layout


@pytest.mark.parametrize("door, kind", CASES)
def test_file_arguments_that_are_not_files(tmp_path, nano_ckpt, good_video, door, kind):
    """As a real process under a timeout: a FIFO or a device would block or flood it."""
    make, problem = NOT_A_FILE[kind]
    if (door, kind) == ("annotations", "directory"):  # a folder is a dataset of CLASS/ folders: this one has none
        problem = "no class folders; a folder dataset is FOLDER/CLASS/video.mp4"
    argv = DOORS[door](make(tmp_path), nano_ckpt, good_video)
    assert_user_error(run_process(*argv, timeout=60), argv[0], problem)


def test_an_oversized_text_file_is_refused_by_its_size(tmp_path, nano_ckpt, monkeypatch, cli):
    csv = tmp_path / "big.csv"
    csv.write_text("v.mp4 0\n" * 2000)  # 16 000 bytes
    monkeypatch.setenv("FLUXVIT_MAX_TEXT_FILE_BYTES", "10000")
    run = cli("eval", "--checkpoint", nano_ckpt, "--data", csv)
    assert_user_error(run, "eval", f"{csv}: 16000 bytes is more than the cap of 10000 "
                      "(raise it with FLUXVIT_MAX_TEXT_FILE_BYTES)")


def test_features_on_a_full_disk_end_in_one_line(tmp_path, nano_ckpt):
    """``eval --save-features`` under a 64 KB file-size limit: one line naming the feature file
    (never its temporary name), exit 2, nothing left behind."""
    csv = tmp_path / "val.csv"
    csv.write_text("".join(f"{clip(tmp_path, f'v{i}.mp4', 8).name} {i % 4}\n" for i in range(2)))
    feats = tmp_path / "out" / "feats.safetensors"
    (tmp_path / "out").mkdir()
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))\n"
              "from fluxvit.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", script, "eval", "--checkpoint", str(nano_ckpt), "--data", str(csv),
                           "--views", "1x1", "--save-features", str(feats), "--json"],
                          env={**ENV, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"fluxvit eval: error: {feats}: could not write (File too large); nothing was written", last
    assert "Traceback" not in proc.stderr and os.listdir(tmp_path / "out") == []
    assert proc.stdout == ""  # no result printed for a run whose output was lost


# ---------------------------------------------------------------- found by a red-team pass
def test_optimize_never_stores_into_another_models_checkpoint(tmp_path, cli, nano_ckpt, finished):
    """``--save-to`` naming another model's checkpoint would have replaced its weights with the
    searched model's: refused before the search; a wrong kind of file too."""
    other = finished / "model.safetensors"
    before = other.read_bytes()
    csv = tmp_path / "tune.csv"
    csv.write_text(f"{clip(tmp_path, 't.mp4', 8).name} 0\n")
    base = ["optimize", "--checkpoint", nano_ckpt, "--data", csv, "--budgets", "16", "--frames", "2",
            "--sizes", "28", "--out", tmp_path / "to"]
    assert_user_error(cli(*base, "--save-to", other), "optimize",
                      f"--save-to {other}: exists and is not --checkpoint {nano_ckpt}")
    assert other.read_bytes() == before
    assert_user_error(cli(*base, "--save-to", tmp_path / "choices.csv"), "optimize",
                      "a checkpoint is a .safetensors file or a folder")
    assert not (tmp_path / "to").exists()  # refused before any search or report


def test_existing_outputs_are_never_replaced(tmp_path, cli, nano_ckpt):
    keep = tmp_path / "keep.json"
    keep.write_text("{}")
    assert_user_error(cli("bench", "fluxvit_nano_patch14", "--tokens", "16", "--grid", "2x28", "--out", keep),
                      "bench", f"--out {keep}: exists")
    csv = tmp_path / "val.csv"
    csv.write_text(f"{clip(tmp_path, 'v.mp4', 8).name} 0\n")
    feats = tmp_path / "feats.safetensors"
    feats.write_bytes(b"earlier features")
    assert_user_error(cli("eval", "--checkpoint", nano_ckpt, "--data", csv, "--save-features", feats), "eval",
                      f"--save-features {feats}: exists")
    assert keep.read_text() == "{}" and feats.read_bytes() == b"earlier features"
    assert_user_error(cli("predict", tmp_path / "v.mp4", "--checkpoint", nano_ckpt, "--show-tokens",
                          tmp_path / "t.jpg"), "predict", "the picture is a PNG file; name it .png")


def test_a_class_list_in_another_order_than_the_checkpoints_is_refused(tmp_path, cli, nano_ckpt):
    (tmp_path / "classes.txt").write_text("grey\nblue\ngreen\nred\n")  # the checkpoint: red green blue grey
    csv = tmp_path / "val.csv"
    csv.write_text(f"{clip(tmp_path, 'v.mp4', 8).name} grey\n")
    assert_user_error(cli("eval", "--checkpoint", nano_ckpt, "--data", csv), "eval",
                      "its class list differs from the checkpoint's at class 0 ('grey' there, 'red' in the checkpoint)")


def test_fifos_in_a_run_folder_do_not_block_a_resume(tmp_path, finished):
    """A FIFO where the metrics or the newest training checkpoint should be (opening either would
    block for ever): the metrics are one line, the checkpoint is skipped for the one before it."""
    import shutil

    from fluxvit.errors import ConfigError
    from fluxvit.train.metrics import MetricsWriter
    from fluxvit.train.trainer import _resume_state

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    for name in ("metrics.jsonl", "checkpoints/ckpt_000000004.pt"):
        (out / name).unlink()
        os.mkfifo(out / name)
    with pytest.raises(ConfigError, match=r"metrics.jsonl: not a regular file"):
        MetricsWriter(out / "metrics.jsonl", start_step=2)
    path, state = _resume_state(True, out / "checkpoints")
    assert path.name == "ckpt_000000002.pt" and state["step"] == 2


def test_convert_reads_its_class_list_safely_and_first(tmp_path):
    fifo = tmp_path / "classes.fifo"
    os.mkfifo(fifo)
    run = run_process("convert", tmp_path / "absent.pth", tmp_path / "out.safetensors", "--model",
                      "fluxvit_nano_patch14", "--classes", fifo, timeout=60)
    assert_user_error(run, "convert", f"{fifo}: not a regular file")


@pytest.mark.parametrize("classes", [[1, "b", "c", "d"], ["a", None, "c", "d"], ["a", "", "c", "d"]])
def test_class_names_in_a_checkpoint_are_names(tmp_path, cli, good_video, classes):
    import json as json_

    import torch

    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=4, depth=2, default_grid=(4, 56))
    folder = fluxvit.save_checkpoint(model, tmp_path / "ckpt", classes=["a", "b", "c", "d"])
    config = json_.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json_.dumps({**config, "classes": classes}))
    (folder / "classes.txt").unlink()
    assert_user_error(cli("predict", good_video, "--checkpoint", folder), "predict",
                      "metadata field 'classes' holds", "not a class name")
