"""The command line's error policy: a DomainftError from any command is one `error:` line, exit 1."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import domainft
from domainft.cli import cli


def _one_error_line(res, *needles: str, lines: int = 1) -> None:
    """Exit 1, output ``error: ...`` (``lines`` lines: a params error lists each bad key below)."""
    assert res.exit_code == 1, res.output
    assert res.output.count("\n") == lines and res.output.startswith("error: "), res.output
    assert "Traceback" not in res.output and "Error:" not in res.output
    for n in needles:
        assert n in res.output, res.output


def test_a_bad_params_key_in_a_stage_is_one_line_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(json.dumps({"prepare": {"on_eror": "fail"}}))
    _one_error_line(CliRunner().invoke(cli, ["prepare"]), "invalid params.yaml", "prepare.on_eror", lines=2)


def test_a_records_file_that_is_not_records_is_one_line_naming_file_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("{}")
    Path("data/processed").mkdir(parents=True)
    Path("data/processed/records.jsonl").write_text("not json\n")
    _one_error_line(CliRunner().invoke(cli, ["split"]), "data/processed/records.jsonl:1: not a record")
    assert not Path("data/splits/train.jsonl").exists()


def _exported_review(tmp_path):
    """One prediction and its `review export` under tmp_path/rv; returns (predictions path, runner)."""
    preds = tmp_path / "predictions.jsonl"
    preds.write_text(json.dumps({"id": "a", "prompt": [{"role": "user", "content": "q"}], "reference": "r",
                                 "base_answer": "b", "tuned_answer": "t"}) + "\n")
    runner = CliRunner()
    assert runner.invoke(cli, ["review", "export", "--predictions", str(preds), "--out", str(tmp_path / "rv")]).exit_code == 0
    return preds, runner


def test_errors_of_nested_commands_reach_the_same_policy(tmp_path):
    preds, runner = _exported_review(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("item,preference\nitem-0099,A\n")
    res = runner.invoke(cli, ["review", "import", str(bad), "--key", str(tmp_path / "rv/key.json"),
                              "--predictions", str(preds), "--out", str(tmp_path / "x.json")])
    _one_error_line(res, "unknown item 'item-0099'")
    assert not (tmp_path / "x.json").exists()


def test_review_import_refuses_unreadable_files_in_one_line(tmp_path):
    preds, runner = _exported_review(tmp_path)
    (tmp_path / "latin1.csv").write_bytes(b"item,preference,comment\nitem-0001,A,caf\xe9\n")
    (tmp_path / "quote.csv").write_text('item,preference\n"item-0001,A\n')
    (tmp_path / "key.json").write_text("{")
    (tmp_path / "junk.db").write_text("not sqlite")
    key = ["--key", str(tmp_path / "rv/key.json")]
    for args, needle in [([str(tmp_path / "latin1.csv"), *key], "latin1.csv: not UTF-8 at byte"),
                         ([str(tmp_path / "quote.csv"), *key], "quote.csv: not a readable CSV"),
                         (["--db", str(tmp_path / "junk.db"), *key], "junk.db: not a verdict store"),
                         ([str(tmp_path / "quote.csv"), "--key", str(tmp_path / "key.json")], "key.json: not a key.json")]:
        res = runner.invoke(cli, ["review", "import", *args, "--predictions", str(preds), "--out", str(tmp_path / "x.json")])
        _one_error_line(res, needle)
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("content", ["{", "[1, 2]", "{}", '{"n_samples": 3}'])
def test_compare_refuses_a_file_that_is_not_eval_json(tmp_path, content):
    (tmp_path / "m.json").write_text(content)
    res = CliRunner().invoke(cli, ["compare", "--metrics", str(tmp_path / "m.json")])
    _one_error_line(res, "m.json: not JSON" if content == "{" else "m.json: no base-vs-tuned metric")


def test_init_into_a_non_empty_folder_and_compare_without_metrics(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "keep.txt").write_text("x")
    _one_error_line(CliRunner().invoke(cli, ["init", str(tmp_path / "p"), "--scenario", "finance"]), "not an empty folder")
    assert (tmp_path / "p" / "keep.txt").read_text() == "x"
    _one_error_line(CliRunner().invoke(cli, ["compare", "--metrics", str(tmp_path / "none.json")]), "none.json not found")


def test_usage_errors_keep_clicks_form_and_bugs_keep_their_traceback(tmp_path, monkeypatch):
    bad = CliRunner().invoke(cli, ["init", str(tmp_path / "q"), "--scenario", "retail"])
    assert bad.exit_code == 2 and "Usage:" in bad.output and "retail" in bad.output
    import domainft.scenarios

    def bug(*a, **k):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(domainft.scenarios, "init_project", bug)
    res = CliRunner().invoke(cli, ["init", str(tmp_path / "r"), "--scenario", "finance"])
    assert res.exit_code == 1 and isinstance(res.exception, KeyError)  # not turned into an `error:` line


def test_click_is_imported_only_by_cli_py():
    """House rule: the command line lives in cli.py; library modules raise DomainftError instead."""
    root = Path(domainft.__file__).parent
    users = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "click" or n.startswith("click.") for n in names):
                users.append(path.relative_to(root).as_posix())
    assert users == ["cli.py"]


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["export", "gguf", "--help"],
                                  ["promote", "--help"], ["review", "import", "--help"], ["init", "--help"]])
def test_every_command_is_registered(argv):
    res = CliRunner().invoke(cli, argv)
    assert res.exit_code == 0 and "Usage:" in res.output
