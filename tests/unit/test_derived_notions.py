"""The derived notions of lowres.schema, each worked out in one place."""

from __future__ import annotations

from types import SimpleNamespace

from lowres.schema import alignment_on, measures_distance


def test_the_distance_is_measured_when_alignment_trains_or_when_asked():
    off = SimpleNamespace(weight=0.0, report_distance=False)
    assert not alignment_on(off) and not measures_distance(off)
    assert measures_distance(SimpleNamespace(weight=0.1, report_distance=False))
    asked = SimpleNamespace(weight=0.0, report_distance=True)
    assert not alignment_on(asked) and measures_distance(asked)
