"""docs/coverage.md is generated from the dispatch tables: it must be current."""

from pathlib import Path

from tracejit import coverage

DOC = Path(__file__).resolve().parent.parent / "docs" / "coverage.md"


def test_coverage_table_is_current():
    assert DOC.read_text() == coverage.markdown(), (
        "docs/coverage.md is stale: run `python -m tracejit.coverage > docs/coverage.md`")


def test_every_dispatch_entry_is_sampled_and_floats_differentiate():
    rows = [row for rows in coverage.entries().values() for row in rows]
    assert len(rows) > 200
    assert not [name for name, modes, _ in rows if modes == "not sampled"]
    assert not [name for name, modes, _ in rows if modes in ("rev", "fwd")], \
        "every floating-point entry has both modes"
