"""Cyclic garbage collector settings for the hot services (ingest, processor).

Under load each request's or batch's objects live across a few young collections (many in flight), so
with the default thresholds (700, 10, 10) they were promoted and full collections kept re-walking the
~90,000 long-lived objects of the imports: ~1/3 of ingest's and ~40 % of the processor's CPU. Those
start-up objects are frozen (never walked again) and gen0 collects every 20,000 allocations, by when
most requests and batches are done; nearly all garbage is freed by reference counting anyway.
"""

from __future__ import annotations

import gc

THRESHOLDS = (20_000, 20, 100)


def tune_gc() -> None:
    """Call once, after imports and app creation, before serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
