"""torchrun --nproc_per_node=2 on CPU (gloo): completes, rank 0 alone writes, and each epoch takes
the number of optimisation steps the global batch implies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctmodels.preprocess import Preprocessing
from training.config import DataConfig
from training.data.prepare import prepare
from training.jobs.registry import RunStore

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a process-level test (issue 'One assessment path': fast or slow); `make test-all` runs it
def test_torchrun_two_processes(workspace):
    env = {**os.environ, "CTSS_WORKSPACE": str(workspace), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    batch = 4
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "training",
           "train", "--model", "kd", "--size", "32", "--epochs", "2", "--batch-size", str(batch), "--no-augment",
           "--split", "0.5,0.17,0.33", "--name", "ddp"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = RunStore(workspace).list()
    assert len(runs) == 1 and runs[0].status == "completed" and runs[0].nprocs == 2
    data = prepare(DataConfig(source="demo", split=[0.5, 0.17, 0.33]), Preprocessing(size=32), seed=0)
    n_train = len(data.subset(0))
    expected = (n_train // 2) // batch  # DistributedSampler shards, then each rank drops its last partial batch
    steps = [m["steps"] for m in runs[0].metrics()]
    assert steps == [expected, expected]
    assert len(runs[0].metrics()) == 2  # rank 0 alone wrote the metrics
    assert (runs[0].model_dir / "card.json").is_file()
