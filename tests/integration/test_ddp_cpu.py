"""Two-process data parallel training on CPU (gloo) through torchrun: the multi-process path
that `accelerate launch` takes on a GPU box, checked where no GPU exists."""
import json
import sys

import pytest
from safetensors.torch import load_file

from pipeline_utils import run, tiny_project

pytestmark = pytest.mark.integration


def test_train_stage_under_torchrun_two_processes(tmp_path, tiny_model_dir):
    proj = tiny_project(tmp_path / "proj", tiny_model_dir)
    for stage in ("prepare", "split", "base"):
        run([sys.executable, "-m", "domainft.stages", stage], proj)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "domainft.stages", "train"], proj)
    m = json.loads((proj / "metrics/train.json").read_text())
    assert m["world_size"] == 2 and m["steps"] == 3
    # each optimizer step took batch_size samples on each of the 2 ranks: 3 steps of a global batch
    # of 8 out of ceil(254 / 8) = 32 steps per epoch
    assert abs(m["epochs"] - 3 / -(-m["train_samples"] // 8)) < 1e-6
    lora = load_file(proj / "models/adapter/adapter_model.safetensors")  # one writer, a complete adapter
    assert len(lora) == 2 * 2 * 7 and all(float(t.abs().sum()) > 0 for t in lora.values())
    assert not (proj / "models/adapter.tmp").exists()
