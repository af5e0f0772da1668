"""Write the catalogue of hostile inputs: every case of the suite's tables run through the real
command line once, with the line ``fluxvit`` actually printed for it.

    python -m tests.hostile.catalogue docs/hostile_inputs.md

The tables are the ones the tests assert on (``BROKEN``, ``ODD``, ``CSV_CASES``, ``CONFIG_CASES``,
``FORGED``), so the catalogue lists exactly what ``make test`` checks, and shows the wording a user
meets. Paths under the scratch folder are printed as ``…/``.
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
from .test_text_inputs import CONFIG_CASES, CSV_CASES


def _run(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
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
