"""Malformed annotation files (``fluxvit eval``, ``fluxvit train``) and training configs
(``fluxvit train``): one line naming the file (and line) or the key, and the problem; exit 2;
nothing started, nothing written."""

from __future__ import annotations

import pytest

from .conftest import assert_user_error

CSV_CASES = {
    # name: (file content, the line the error names (0: the file), what it must say)
    "no_separator": (b"good.mp4 0\ngood.mp4\n", 2, "expected 'relative/path.mp4<sep>label'"),
    "missing_label": (b"good.mp4 0\ngood.mp4,\n", 2, "expected 'relative/path.mp4<sep>label'"),
    "label_not_a_number": (b"good.mp4 zero\n", 1, "label 'zero' is not an integer"),
    "label_a_float": (b"good.mp4 1.5\n", 1, "label '1.5' is not an integer"),
    "label_negative": (b"good.mp4 -3\n", 1, "unknown label id -3"),
    "label_beyond_the_model": (b"good.mp4 0\ngood.mp4 4\n", 2, "label 4 is outside the model's 4 classes"),
    "label_of_many_digits": (b"good.mp4 1" + b"0" * 5000 + b"\n", 1, "is not an integer"),
    # a header is read by its column names (path, label); Kinetics' own header has no 'path'
    "header_row": (b"youtube_id,label,time_start\ngood.mp4,0,1\n", 1, "a header line without 'path' column"),
    "empty": (b"", 0, "no clips listed"),
    "only_blank_lines": (b"\n  \n\t\n\r\n", 0, "no clips listed"),
    "binary_garbage": (bytes(range(256)) * 8, 0, "cannot read annotation file"),
    "nul_in_path": (b"good.mp4 0\ngo\x00od.mp4 1\n", 2, "the path holds a NUL byte"),
    "one_huge_line": (b"x" * 200_000 + b"\n", 1, "expected 'relative/path.mp4<sep>label'"),
}


@pytest.mark.parametrize("name", sorted(CSV_CASES))
def test_malformed_csv_is_one_line_naming_file_and_line(name, tmp_path, good_video, nano_ckpt, cli):
    content, line, problem = CSV_CASES[name]
    (tmp_path / "good.mp4").symlink_to(good_video)
    csv = tmp_path / f"{name}.csv"
    csv.write_bytes(content)
    run = cli("eval", "--checkpoint", nano_ckpt, "--data", csv, "--json")
    where = f"{csv}:{line}: " if line else f"{csv}: "
    text = assert_user_error(run, "eval", where, problem)
    assert len(text) < 400 and run.out == ""  # the offending line is quoted, shortened


def test_label_beyond_classes_txt_names_the_line(tmp_path, good_video, nano_ckpt, cli):
    (tmp_path / "classes.txt").write_text("red\ngreen\nblue\ngrey\n")
    csv = tmp_path / "val.csv"
    csv.write_text(f"{good_video} green\n{good_video} 9\n")
    run = cli("eval", "--checkpoint", nano_ckpt, "--data", csv)
    assert_user_error(run, "eval", f"{csv}:2: unknown label id 9 (classes.txt has 4 classes)")
    (tmp_path / "classes.txt").write_bytes(b"\xff\xfe\x00garbage")
    run = cli("eval", "--checkpoint", nano_ckpt, "--data", csv)
    assert_user_error(run, "eval", tmp_path / "classes.txt", "cannot read class list")


def test_csv_that_is_a_directory_or_missing(tmp_path, nano_ckpt, cli):
    # a folder is read as a dataset of CLASS/ folders: this one has none
    assert_user_error(cli("eval", "--checkpoint", nano_ckpt, "--data", tmp_path), "eval",
                      f"{tmp_path}: no class folders")
    assert_user_error(cli("eval", "--checkpoint", nano_ckpt, "--data", tmp_path / "nope.csv"), "eval",
                      f"{tmp_path / 'nope.csv'}: no such annotation file")


def test_byte_order_mark_and_crlf_are_read(tmp_path, good_video, nano_ckpt, cli):
    """What spreadsheets write: a UTF-8 byte-order mark, CRLF line ends, a class name as label."""
    (tmp_path / "good.mp4").symlink_to(good_video)
    (tmp_path / "classes.txt").write_bytes("\ufeffred\r\ngreen\r\nblue\r\ngrey\r\n".encode())
    csv = tmp_path / "excel.csv"
    csv.write_bytes("\ufeffgood.mp4,blue\r\ngood.mp4,0\r\n".encode())
    run = cli("eval", "--checkpoint", nano_ckpt, "--data", csv, "--views", "1x1", "--json", "--per-class")
    assert run.code == 0 and run.err == ""
    res = run.json_lines()[0]
    assert (res["videos"], res["broken"]) == (2, 0)
    assert [acc is None for acc in res["per_class"]] == [False, True, False, True]  # labels 0 and 2


def test_malformed_csv_in_a_training_config(tmp_path, cli):
    csv = tmp_path / "train.csv"
    csv.write_text("a.mp4 0\nb.mp4 one\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"out_dir: {tmp_path / 'run'}\ndata:\n  source: csv\n  train: {csv}\n")
    run = cli("train", config)
    assert_user_error(run, "train", f"{csv}:2: label 'one' is not an integer")
    assert not (tmp_path / "run").exists()


def _laughs(depth: int) -> str:
    """YAML whose aliases nest ``depth`` levels of 9-fold lists: a few hundred bytes that build
    9**depth strings (the "billion laughs")."""
    levels = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, depth)]
    return "[[" + ", ".join(levels) + "]]"


CONFIG_CASES = {
    # name: (YAML after an out_dir line, what the error must say, whether it names the file)
    "syntax_error": ("steps: 3\noptim: {lr: [1, 2\n", "line 4: not valid YAML (expected ',' or ']'", True),
    "tab_indent": ("optim:\n\tlr: 0.1\n", "line 3: not valid YAML (found character '\\t'", True),
    "unknown_key": ("stepz: 3\n", "unknown config key 'stepz' (known here: ckpt_every,", True),
    "unknown_nested_key": ("optim:\n  learning_rate: 0.1\n", "unknown config key 'optim.learning_rate'", True),
    "wrong_type": ("steps: many\n", "config key 'steps' must be an integer, got 'many'", True),
    "float_for_int": ("steps: 2.5\n", "config key 'steps' must be an integer, got 2.5", True),
    "list_for_number": ("optim:\n  lr: [0.1, 0.2]\n", "config key 'optim.lr' must be a number, got [0.1, 0.2]",
                        True),
    "number_for_list": ("flux:\n  frames: 8\n", "config key 'flux.frames' must be a list, got 8", True),
    "string_for_bool": ("data:\n  flip: maybe\n", "config key 'data.flip' must be true or false, got 'maybe'",
                        True),
    "scalar_for_section": ("optim: 3\n", "config section 'optim' must be a mapping", True),
    "duplicate_key": ("steps: 3\nsteps: 4\n", "line 3: not valid YAML (key 'steps' is given twice)", True),
    "python_object_tag": ("steps: !!python/object/apply:os.system ['touch {marker}']\n",
                          "could not determine a constructor for the tag "
                          "'tag:yaml.org,2002:python/object/apply:os.system'", True),
    "nested_too_deep": ("steps: " + "[" * 3000 + "]" * 3000 + "\n", "not valid YAML (nested too deeply)", True),
    "integer_of_5000_digits": ("steps: 1" + "0" * 5000 + "\n", "not valid YAML (Exceeds the limit", True),
    "billion_laughs": ("data:\n  classes: " + _laughs(7) + "\n",
                       "config key 'data.classes' must be a string, got [[...], [...], [...], [...], ...]", True),
    "negative_steps": ("steps: -5\n", "config key 'steps' must be at least 1, got -5", True),
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_malformed_config_is_one_line_before_any_work(name, tmp_path, cli):
    body, problem, names_file = CONFIG_CASES[name]
    marker = tmp_path / "payload_ran"
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"out_dir: {tmp_path / 'run'}\n" + body.replace("{marker}", str(marker)))
    run = cli("train", config)
    text = assert_user_error(run, "train", problem, *([config] if names_file else []))
    assert len(text) < 400
    assert not (tmp_path / "run").exists() and not marker.exists()


@pytest.mark.parametrize("content, problem", [
    (bytes(range(256)) * 4, "cannot read config file (not UTF-8 text: byte 0x80 at offset 128)"),
    (None, "is a directory (expected: config file)"),
])
def test_config_that_is_garbage_or_a_directory(tmp_path, cli, content, problem):
    config = tmp_path / "c.yaml"
    if content is None:
        config.mkdir()
    else:
        config.write_bytes(content)
    assert_user_error(cli("train", config), "train", config, problem)


def test_top_level_list_and_bad_overrides(tmp_path, cli):
    config = tmp_path / "c.yaml"
    config.write_text("- steps\n- 3\n")
    assert_user_error(cli("train", config), "train", "config section '<top>' must be a mapping")
    config.write_text(f"out_dir: {tmp_path / 'run'}\n")
    run = cli("train", config, "--set", "optim.lr=[1, 2]")
    assert_user_error(run, "train", "config key 'optim.lr' must be a number, got [1, 2]")
    run = cli("train", config, "--set", "steps=" + "9" * 5000)
    assert_user_error(run, "train", "config key 'steps' must be an integer, got '99999")
    assert not (tmp_path / "run").exists()
