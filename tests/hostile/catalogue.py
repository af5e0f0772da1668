"""Write the catalogue of hostile inputs: every case of the suite's tables run through the real
command line once, with the line ``fluxvit`` actually printed for it.

    python -m tests.hostile.catalogue docs/hostile_inputs.md

The tables are the ones the tests assert on (``BROKEN``, ``ODD``, ``CSV_CASES``, ``CONFIG_CASES``,
``FORGED``, ``NOT_A_FILE``, ``VALUE_CASES``, ``TRAIN_VALUE_CASES``), so the catalogue lists exactly
what ``make test`` checks, and shows the wording a user meets. Paths under the scratch folder are printed as ``…/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch

import fluxvit
from fluxvit.cli import main

from .conftest import CLASSES
from .media import BROKEN, ODD, clip
from .test_checkpoints import FORGED
from .test_nothing_lost import CASES as NOT_A_FILE_CASES
from .test_nothing_lost import DOORS, NOT_A_FILE
from .test_text_inputs import CONFIG_CASES, CSV_CASES
from .test_values import VALUE_CASES


def _run(*args: object) -> tuple[int, str, str]:
    """``fluxvit ARGS`` in-process; argparse's refusals (SystemExit) read as their exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


class Catalogue:
    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.lines: list[str] = []

    def short(self, text: str) -> str:
        text = text.replace(str(self.scratch) + "/", "…/").replace("|", "\\|").replace("\n", " ⏎ ")
        return text if len(text) <= 220 else text[:217] + "..."

    def section(self, title: str, intro: str, header: str) -> None:
        self.lines += ["", f"## {title}", "", intro, "", header, "|" + "---|" * (header.count("|") - 1)]

    def row(self, *cells: object) -> None:
        self.lines.append("| " + " | ".join(self.short(str(c)) for c in cells) + " |")


def build(scratch: Path) -> list[str]:
    torch.manual_seed(0)
    model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=len(CLASSES), depth=2, default_grid=(4, 56))
    ckpt = fluxvit.save_checkpoint(model, scratch / "nano.safetensors", classes=CLASSES)
    good = clip(scratch, "good.mp4", 12)
    cat = Catalogue(scratch)

    cat.section("Broken videos", "`fluxvit predict BAD good.mp4` (exit 2 once all are done; the good one is "
                "still predicted) and `fluxvit eval` over a CSV holding both (exit 0, the bad one skipped and "
                "counted).", "| case | predict: the line on stderr | exit | eval: broken / videos |")
    for i, name in enumerate(sorted(BROKEN)):
        folder = scratch / f"broken_{i:02d}"
        folder.mkdir()
        path = BROKEN[name][0](folder)
        code, out, err = _run("predict", path, good, "--checkpoint", ckpt)
        assert out.startswith(f"{good}: "), (name, out)
        csv = folder / "val.csv"
        csv.write_text(f"{good} 0\n{path} 1\n")
        ecode, eout, _ = _run("eval", "--checkpoint", ckpt, "--data", csv, "--views", "1x1", "--json")
        result = json.loads(eout.splitlines()[-1])
        cat.row(name, err.strip(), code, f"{result['broken']} / {result['videos'] + result['broken']} (exit {ecode})")

    cat.section("Strange but valid videos", "Decoded, predicted and evaluated like any other clip.",
                "| case | frames x height x width | predict | exit |")
    for i, name in enumerate(sorted(ODD)):
        folder = scratch / f"odd_{i:02d}"
        folder.mkdir()
        odd = ODD[name](folder)
        code, out, err = _run("predict", odd.path, "--checkpoint", ckpt)
        cat.row(name, f"{odd.frames} x {odd.height} x {odd.width}", (out or err).strip(), code)

    cat.section("Malformed annotation files", "`fluxvit eval --data BAD.csv`: one line naming the file and "
                "line, nothing on stdout.", "| case | the line on stderr | exit |")
    (scratch / "good_link").mkdir()
    (scratch / "good_link" / "good.mp4").symlink_to(good)
    for name in sorted(CSV_CASES):
        csv = scratch / "good_link" / f"{name}.csv"
        csv.write_bytes(CSV_CASES[name][0])
        code, out, err = _run("eval", "--checkpoint", ckpt, "--data", csv, "--json")
        cat.row(name, err.strip(), code)

    cat.section("Malformed training configs", "`fluxvit train BAD.yaml`: refused before any work; no run "
                "folder is created; a YAML Python tag never runs.", "| case | the line on stderr | exit |")
    for name in sorted(CONFIG_CASES):
        config = scratch / f"{name}.yaml"
        marker = scratch / "payload_ran"
        config.write_text(f"out_dir: {scratch / 'run'}\n" + CONFIG_CASES[name][0].replace("{marker}", str(marker)))
        code, out, err = _run("train", config)
        assert not (scratch / "run").exists() and not marker.exists(), name
        cat.row(name, err.strip(), code)

    cat.section("Forged checkpoints", "`fluxvit predict good.mp4 --checkpoint FORGED.safetensors`: refused in one "
                "line, no large allocation (peak RSS growth under 20 MB, see `test_forged_sizes_allocate_nothing_"
                "large`).", "| case | the line on stderr | exit |")
    for name in sorted(FORGED):
        path = FORGED[name][0](scratch / f"{name}.safetensors", ckpt)
        code, out, err = _run("predict", good, "--checkpoint", path)
        cat.row(name, err.strip(), code)

    cat.section("File arguments that are not files", "A FIFO, a device, a folder or an over-long path given where "
                "a file is read: refused before it is opened (none blocks or floods the command).",
                "| argument | case | the line on stderr | exit |")
    for i, (door, kind) in enumerate(NOT_A_FILE_CASES):
        folder = scratch / f"special_{i:02d}"
        folder.mkdir()
        code, out, err = _run(*DOORS[door](NOT_A_FILE[kind][0](folder), ckpt, good))
        cat.row(door, kind, err.strip(), code)

    cat.section("Runs and inputs are never overwritten", "Refused before any work; the earlier run or the "
                "input is left byte for byte as it was.", "| case | the line on stderr | exit |")
    run_dir = scratch / "finished_run"
    for name in ("model.safetensors", "metrics.jsonl", "config.yaml"):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("an earlier run's file")
    config = scratch / "again.yaml"
    config.write_text(f"out_dir: {run_dir}\nsteps: 2\n")
    csv = scratch / "kept.csv"
    csv.write_text(f"{good} 0\n")
    picture_link = scratch / "good_video.png"
    picture_link.symlink_to(good)
    for name, argv in (
        ("train into a finished run", ["train", config]),
        ("--show-tokens at the input video (a .png link to it)", ["predict", good, "--checkpoint", ckpt,
                                                                  "--show-tokens", picture_link]),
        ("--out at the input video", ["predict", good, "--checkpoint", ckpt, "--out", good]),
        ("--save-features at the annotation file", ["eval", "--checkpoint", ckpt, "--data", csv, "--save-features",
                                                    csv]),
        ("convert onto its source", ["convert", ckpt, ckpt, "--model", "fluxvit_nano_patch14"]),
    ):
        code, out, err = _run(*argv)
        cat.row(name, err.strip(), code)

    cat.section("Hostile values on the command line", "Every numeric option out of range, not finite, over its cap "
                "(caps at their defaults) or not a number: one line, nothing on stdout, nothing written.",
                "| case | the line on stderr | exit |")
    import torch as _torch

    from tests.models.official_format import official_state_dict

    release = scratch / "release.pth"
    _torch.save({"model": official_state_dict(0, num_classes=4)}, release)
    fill = {"ckpt": ckpt, "video": good, "csv": csv, "release": release}
    for i, name in enumerate(sorted(VALUE_CASES)):
        argv, _ = VALUE_CASES[name]
        code, out, err = _run(*(a.format(**fill, out=scratch / f"value_out_{i:03d}") for a in argv))
        cat.row(name, err.strip(), code)

    from tests.train.test_config_values import BASE, TRAIN_VALUE_CASES

    cat.section("Hostile training config values", "`fluxvit train configs/nano_synthetic_flux_multi.yaml --set "
                "KEY=VALUE`: refused before a model, a data read or a run folder is made.",
                "| --set | the line on stderr | exit |")
    (scratch / "teacher.safetensors").write_bytes(b"weights")
    for case, problem in TRAIN_VALUE_CASES:
        if problem is None:
            continue  # a boundary value that is accepted
        texts = [case] if isinstance(case, str) else list(case)
        argv = ["train", BASE, "--set", f"out_dir={scratch / 'value_run'}"]
        for text in texts:
            argv += ["--set", text.replace("{tmp}", str(scratch))]
        code, out, err = _run(*argv)
        cat.row(" ".join(texts), err.strip(), code)
    return cat.lines


def main_(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.hostile.catalogue OUT.md", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        lines = build(Path(tmp).resolve())
    head = ["# Hostile inputs: what fluxvit says", "",
            "Generated by `python -m tests.hostile.catalogue docs/hostile_inputs.md` from the tables that "
            "`tests/hostile/` asserts on; every line below is what the command printed. Checkpoints carrying "
            "pickled code, interruption (SIGKILL, crash while saving, full disk) and the 200-video load run "
            "are summarised in the README's *Reliability* section and described in the tests' docstrings."]
    Path(argv[0]).write_text("\n".join(head + lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_(sys.argv[1:]))
