"""base stage: params `base` -> models/base (plain HF folder), metrics/base.json."""
from __future__ import annotations

from domainft.config import Params
from domainft.modeling.base import materialize_base
from domainft.stages import write_metrics


def run(params: Params) -> dict:
    b = params.base
    info = materialize_base(b.source, b.out_dir, revision=b.revision, chat_template=b.chat_template,
                            trust_remote_code=b.trust_remote_code)
    write_metrics("base", info)
    return info
