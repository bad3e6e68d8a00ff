"""Which Accuracy Checker types the engine supports, read from its registries.

``python -m pot_cli.engines.ac.coverage`` prints the Markdown table kept in
``docs/accuracy_checker_types.md`` (a test checks that the file is what this prints).
"""
from __future__ import annotations

import sys


def supported_types() -> dict[str, tuple[str, ...]]:
    """Every supported Accuracy Checker type by section.

    :return: section (``readers``, ``preprocessing``, ``launcher inputs``, ``adapters``,
        ``converters``, ``postprocessing``, ``metrics``) -> sorted type names.
    """
    from pot_cli.engines import accuracy_checker as ac
    from pot_cli.engines import preprocessing
    from pot_cli.engines.ac import base
    from pot_cli.engines.metrics import METRIC_KEYS

    ac._load_types()
    return {
        "readers": tuple(sorted(preprocessing.READERS)),
        "preprocessing": tuple(sorted(preprocessing.PREPROCESSING)),
        "launcher inputs": ("CONST_INPUT", "INPUT"),
        "adapters": tuple(sorted(ac.adapters())),
        "converters": tuple(sorted(ac.converters())),
        "postprocessing": tuple(sorted(base.POSTPROCESSING)),
        "metrics": tuple(sorted(tuple(METRIC_KEYS) + tuple(base.METRICS))),
    }


def _keys(section: str, name: str) -> str:
    from pot_cli.engines.ac import base
    from pot_cli.engines.metrics import METRIC_KEYS

    table = {"adapters": base.ADAPTERS, "converters": base.CONVERTERS, "postprocessing": base.POSTPROCESSING,
             "metrics": base.METRICS}.get(section, {})
    if name in table:
        keys = table[name].keys
    elif section == "metrics" and name in METRIC_KEYS:
        keys = METRIC_KEYS[name]
    elif section == "preprocessing":
        from pot_cli.engines.preprocessing import _STEP_KEYS
        keys = tuple(k for k in _STEP_KEYS.get(name, ()) if k != "type")
    elif section == "readers":
        from pot_cli.engines.preprocessing import READER_KEYS
        keys = READER_KEYS.get(name, ())
    elif section == "launcher inputs":
        keys = ("name", "layout", "precision", "shape") + (("value",) if name == "CONST_INPUT" else ())
    else:
        keys = ()
    keys = tuple(k for k in keys if k not in ("type", "name", "converter", "apply_to"))
    return ", ".join(f"`{k}`" for k in keys) or "-"


def markdown() -> str:
    """The coverage table as Markdown."""
    lines = ["# Accuracy Checker types supported by the accuracy_checker engine", "",
             "Generated from the engine's registries by `python -m pot_cli.engines.ac.coverage`; "
             "`tests/ac/test_coverage.py` checks that this file is current and that every type of tier R4 in "
             "`../shared/reference/AC_COVERAGE.md` (section 3.2) is here. Any other type, or a key not listed, "
             "is refused before inference with its key path and the supported values.", ""]
    for section, names in supported_types().items():
        lines += [f"## {section} ({len(names)})", "", "| type | keys read besides `type` |", "|---|---|"]
        lines += [f"| `{n}` | {_keys(section, n)} |" for n in names]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown())
