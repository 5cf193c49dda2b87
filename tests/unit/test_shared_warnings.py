"""A cause every watcher meets is one warning; another cause keeps its own."""

from __future__ import annotations

import logging

from circus_sd.shared_warnings import WINDOW, SharedWarnings


def test_the_first_warning_of_a_shared_cause_stays_the_others_are_info() -> None:
    warnings = SharedWarnings()
    assert warnings.level(logging.WARNING, "shortage", 0.0) == logging.WARNING
    assert warnings.level(logging.WARNING, "shortage", 10.0) == logging.INFO
    # A lost spawner is news even during a shortage.
    assert warnings.level(logging.WARNING, "spawner_lost", 11.0) == logging.WARNING
    assert warnings.level(logging.WARNING, "shortage", WINDOW + 1.0) == logging.WARNING


def test_lines_of_no_shared_cause_and_other_levels_are_left_alone() -> None:
    warnings = SharedWarnings()
    assert warnings.level(logging.WARNING, None, 0.0) == logging.WARNING
    assert warnings.level(logging.WARNING, None, 1.0) == logging.WARNING
    assert warnings.level(logging.ERROR, "shortage", 2.0) == logging.ERROR
    assert warnings.level(logging.DEBUG, "shortage", 3.0) == logging.DEBUG
