"""base stage: params `base` -> models/base (plain HF folder), metrics/base.json."""
from __future__ import annotations

from domainft.atomic import atomic_dir
from domainft.config import Params
from domainft.modeling.base import materialize_base
from domainft.stages import write_metrics


def run(params: Params) -> dict:
    b = params.base
    with atomic_dir(b.out_dir) as tmp:  # a killed run never leaves a half-written models/base
        info = materialize_base(b.source, tmp, revision=b.revision, chat_template=b.chat_template,
                                trust_remote_code=b.trust_remote_code)
    write_metrics("base", info)
    return info
