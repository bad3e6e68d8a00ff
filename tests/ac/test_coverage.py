"""The supported-types table in docs/ is generated from the registries and covers tier R4 of
../shared/reference/AC_COVERAGE.md (section 3.2)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pot_cli.engines.ac.coverage import markdown, supported_types

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "accuracy_checker_types.md"
COVERAGE = ROOT.parent / "shared" / "reference" / "AC_COVERAGE.md"


def _tier_items(upto: str = "R4") -> set[str]:
    items: set[str] = set()
    for line in COVERAGE.read_text().splitlines():
        m = re.match(r"\| (R\d) ", line)
        if m and m.group(1) <= upto:
            adds = line.split("|")[3]
            items |= set(re.findall(r"`([^`]+)`", adds))
    return items


def test_doc_is_generated_from_the_registries():
    assert DOC.read_text() == markdown(), "regenerate: python -m pot_cli.engines.ac.coverage > " + str(DOC)


@pytest.mark.skipif(not COVERAGE.is_file(), reason="needs ../shared/reference/AC_COVERAGE.md")
def test_every_tier_r4_type_is_supported():
    wanted = _tier_items("R4")
    assert len(wanted) == 46  # the tier's item count in AC_COVERAGE.md
    supported = {n for names in supported_types().values() for n in names}
    assert sorted(wanted - supported) == []
