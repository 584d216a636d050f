"""Ready integrations for pipelines: consumer loops here; Celery in ``.celery``.

``gated(gate, records, key=...)`` iterates a consumer's records (sync or async) and yields
``(record, permit)`` for the admitted ones, each permit held while the loop's body runs;
denied records go to ``on_denied`` so the loop can still commit their offsets.
"""

from __future__ import annotations

from ._consumer import gated

__all__ = ["gated"]
