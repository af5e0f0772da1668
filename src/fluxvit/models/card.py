"""The model card (``README.md``) of a checkpoint folder: what the model is, its heads' budgets,
the grids Token Optimization chose, its classes, and how to load it.

The card is written from the checkpoint's metadata record each time the folder is saved (so a
``fluxvit optimize`` that stores new choices also updates the card's table). A card without
:data:`MARKER` is the user's own and is left alone. The record comes with the file and is not
trusted: fields of the wrong type are skipped, and text is kept on one table cell (``|`` and
line breaks escaped).
"""

from __future__ import annotations

from fluxvit.evaluate.report import markdown_cell as _cell
from fluxvit.evaluate.token_optimization import META_KEY as TO_KEY

MARKER = "<!-- fluxvit model card: rewritten on every save; delete this line to keep your own edits -->"
_SHOWN_CLASSES = 20


def is_ours(text: str) -> bool:
    """Whether a README.md was written by :func:`model_card` (and may be rewritten)."""
    return MARKER in text


def model_card(meta: dict, folder: str = "path/to/folder") -> str:
    """Markdown card for the metadata record ``meta`` of a checkpoint saved as ``folder``."""
    name = _cell(meta.get("model") or "FluxViT")
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    raw_budgets = meta.get("head_budgets")
    budgets = [b for b in raw_budgets if isinstance(b, int)] if isinstance(raw_budgets, list) else []
    classes = meta.get("classes") if isinstance(meta.get("classes"), list) else []
    version = _cell(meta.get("fluxvit_version") or "unknown")
    grid = cfg.get("default_grid")
    default = f"{grid[0]}x{grid[1]}" if isinstance(grid, list | tuple) and len(grid) == 2 else "unknown"
    shape = ", ".join(f"{k} {_cell(cfg[k])}" for k in ("embed_dim", "depth", "num_heads", "patch_size") if k in cfg)
    first_budget = budgets[-1] if budgets else 256
    lines = [
        "---",
        "library_name: fluxvit",
        "pipeline_tag: video-classification",
        "tags: [fluxvit, video-classification, token-selection]",
        "---",
        MARKER,
        "",
        f"# {name}",
        "",
        f"A FluxViT video classifier ({shape or 'config in config.json'}; {len(classes) or 'unnamed'} classes), "
        f"saved by fluxvit {version}. It reads any sampling grid (frames x height x width, multiples of the "
        "patch size) and keeps the budget's number of tokens, chosen by its group-dynamic token selector; "
        f"each head was trained at one budget. Default grid: {default}.",
        "",
        "## Heads",
        "",
        "| head | training budget (tokens) |",
        "|---|---|",
        *(f"| {i} | {b} |" for i, b in enumerate(budgets)),
        "",
        "## Token Optimization choices",
        "",
        *_to_table(meta.get(TO_KEY)),
        "",
        "## Classes",
        "",
        _classes_line(classes),
        "",
        "## How to load",
        "",
        "```python",
        "import fluxvit",
        "",
        f'model = fluxvit.from_pretrained("{_cell(folder)}")  # this folder, or its repo id on the hub',
        f"logits = model(video, num_tokens={first_budget})  # video: (B, 3, T, H, W), normalised",
        "```",
        "",
        "```bash",
        f"fluxvit predict clip.mp4 --checkpoint {_cell(folder)} --budget {first_budget}",
        "```",
        "",
        "Files: `model.safetensors` (weights; its header repeats `config.json`), `config.json` (model name, "
        "config, head budgets, classes, Token Optimization choices), `classes.txt` (one class a line).",
        "",
    ]
    return "\n".join(lines)


def _to_table(record: object) -> list[str]:
    rows = []
    if isinstance(record, dict):
        for budget, choice in sorted(record.items(), key=lambda kv: _budget_key(kv[0])):
            if not isinstance(choice, dict) or "grid" not in choice:
                continue
            measured = " ".join(_cell(choice[k]) for k in ("device", "dtype") if k in choice)
            rows.append(f"| {_cell(budget)} | {_cell(choice['grid'])} | {_cell(choice.get('top1', ''))} | "
                        f"{_cell(choice.get('decision', ''))} | {measured} |")
    if not rows:
        return ["None stored: `fluxvit optimize --checkpoint FOLDER --data val.csv --budgets 64,128` chooses a "
                "grid per budget and stores it here; until then each budget uses the default grid."]
    return ["`--budget N` without `--grid` uses the grid chosen here for N.", "",
            "| budget (tokens) | grid (T x H x W) | top-1 % (on the search data) | decision | measured on |",
            "|---|---|---|---|---|", *rows]


def _budget_key(budget: object) -> tuple[int, str]:
    text = str(budget)
    return (int(text), text) if text.isdigit() else (1 << 62, text)


def _classes_line(classes: list) -> str:
    if not classes:
        return "No class names stored (outputs are class indices)."
    shown = ", ".join(_cell(c, 40) for c in classes[:_SHOWN_CLASSES])
    more = f", ... ({len(classes) - _SHOWN_CLASSES} more)" if len(classes) > _SHOWN_CLASSES else ""
    return f"{len(classes)} classes, in `classes.txt` in label order: {shown}{more}."
