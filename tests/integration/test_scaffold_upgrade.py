"""A `domainft init` project tracks the installed library's code per stage and the base source:
installing a changed copy of domainft reruns exactly the stages whose code changed."""
import hashlib
import json
import shutil

import pytest

from domainft.hashing import PACKAGE_DIR
from domainft.scenarios import init_project
from pipeline_utils import run, venv_env

pytestmark = pytest.mark.integration


def _ran(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


def test_installing_a_changed_library_reruns_exactly_the_stages_that_run_the_changed_code(tmp_path):
    rows = ["Question,Answer"] + [
        f"What does status code {h[:16]} mean?,Code {h[16:40]} means the transfer {h[40:]} is on hold."
        for h in (hashlib.sha256(str(i).encode()).hexdigest() for i in range(40))]
    (tmp_path / "faq.csv").write_text("\n".join(rows) + "\n")
    proj = tmp_path / "proj"
    init_project(proj, "customer-service", [tmp_path / "faq.csv"])
    # the "installed" library: a copy that PYTHONPATH puts before the real install
    site = tmp_path / "site"
    shutil.copytree(PACKAGE_DIR, site / "domainft", ignore=shutil.ignore_patterns("__pycache__"))
    env = venv_env(PYTHONPATH=str(site))
    assert _ran(run(["dvc", "repro", "split"], proj, env)) == {"fingerprint", "prepare", "split"}
    codes = {p.stem: p.read_text() for p in (proj / "fingerprints").glob("*.code")}
    assert set(codes) == {"prepare", "split", "base", "train", "merge", "evaluate", "preference", "register"}
    assert json.loads((proj / "fingerprints" / "base_source.json").read_text())["kind"] == "gguf"
    assert _ran(run(["dvc", "repro", "split"], proj, env)) == {"fingerprint"}  # nothing else changed

    # an upgrade that changes only the split code: split reruns, prepare does not
    f = site / "domainft" / "data" / "split.py"
    f.write_text(f.read_text() + "\n# upgraded\n")
    assert _ran(run(["dvc", "repro", "split"], proj, env)) == {"fingerprint", "split"}
    # an upgrade of code both run (the records reader): both rerun
    f = site / "domainft" / "data" / "records.py"
    f.write_text(f.read_text() + "\n# upgraded\n")
    assert _ran(run(["dvc", "repro", "split"], proj, env)) == {"fingerprint", "prepare", "split"}
    # evaluation code is no part of prepare or split
    f = site / "domainft" / "evaluation" / "metrics.py"
    f.write_text(f.read_text() + "\n# upgraded\n")
    assert _ran(run(["dvc", "repro", "split"], proj, env)) == {"fingerprint"}
    after = {p.stem: p.read_text() for p in (proj / "fingerprints").glob("*.code")}
    assert {n for n in codes if codes[n] != after[n]} >= {"prepare", "split", "evaluate"}
