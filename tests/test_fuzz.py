"""Fuzzing, briefly: every parser that takes outside bytes (tests/fuzz_targets.py).

``bench/fuzz.py --seconds N`` runs the same targets for longer.
"""

from __future__ import annotations

import pytest

from tests.fuzz_targets import TARGETS, Target, run_target

EXAMPLES = 300  # each; the whole file stays well under 30 s


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parser_takes_hostile_input_without_an_exception(target: Target) -> None:
    assert run_target(target, EXAMPLES) > EXAMPLES // 2
