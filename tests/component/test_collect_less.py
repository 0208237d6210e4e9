"""matchmaker.proc.collect_less: young collections rarer, the older generations untouched."""

from __future__ import annotations

import gc

from matchmaker.proc import GC_THRESHOLD, collect_less


def test_collect_less_raises_only_the_first_threshold():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        collect_less()
        assert gc.get_threshold() == (GC_THRESHOLD, 11, 12)
    finally:
        gc.set_threshold(*before)


def test_the_workers_and_the_matchmaker_collect_less():
    """Both entry points call it before they serve (a source check: they run forked)."""
    import inspect

    from matchmaker import service
    from workers import process

    for module in (service, process):
        assert "collect_less()" in inspect.getsource(module.main)
