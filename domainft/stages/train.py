"""train stage: models/base + data/splits/{train,val}.jsonl -> models/adapter, metrics/train.json."""
from __future__ import annotations

import os

from domainft.config import Params
from domainft.stages import write_metrics
from domainft.tracking import log_params, param_items, setup_mlflow
from domainft.train import train_adapter


def run(params: Params) -> dict:
    if int(os.environ.get("RANK", "0")) != 0:  # non-main `accelerate launch` workers: train only
        return train_adapter(params.base.out_dir, "data/splits/train.jsonl", "data/splits/val.jsonl",
                             params.train, seed=params.domain.seed)
    mlflow = setup_mlflow(params)
    with mlflow.start_run(run_name="train", tags={"domainft.stage": "train"}) as run:
        log_params(mlflow, param_items(params.train.model_dump(), "train.") | {"domain.seed": params.domain.seed})
        metrics = train_adapter(params.base.out_dir, "data/splits/train.jsonl", "data/splits/val.jsonl",
                                params.train, seed=params.domain.seed, mlflow_run=True)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None})
        metrics["mlflow_run_id"] = run.info.run_id
    write_metrics("train", metrics)
    return metrics
