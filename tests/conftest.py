"""Hypothesis profiles: `ci` (bounded, used when CI is set) and `dev` (more examples)."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=6, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# the CPUs are shared by the pytest-xdist workers (the README runs `-n 2`): each takes its part of them
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // _workers))
# `pulse` subprocesses (kill + resume, torchrun) use the test process's thread count, not the CPUs free at their
# start (pulse.threads): a resumed run compared bit for bit with one trained here must not depend on the load
os.environ.setdefault("PULSE_THREADS", str(torch.get_num_threads()))


@pytest.fixture(autouse=True, scope="session")
def _corpus_cache(tmp_path_factory):
    """Tokenized corpora go to a folder of this test session, never the user's ~/.cache (subprocesses inherit it)."""
    old = os.environ.get("PULSE_CACHE")
    os.environ["PULSE_CACHE"] = str(tmp_path_factory.mktemp("pulse-cache"))
    yield
    if old is None:
        os.environ.pop("PULSE_CACHE", None)
    else:
        os.environ["PULSE_CACHE"] = old


if os.environ.get("PULSE_TEST_REGISTER"):  # a module of tests/ whose register() adds kinds before collection
    import importlib

    importlib.import_module(os.environ["PULSE_TEST_REGISTER"]).register()


# The audit table (issue 35): a test marked `audit(surface, outcome)` is one reproduction of a bad input or a fault
# on that surface, whose expected outcome is `clean` (one PulseError paragraph, exit 2) or `correct` (the right
# result). The summary counts them per surface from what the tests did: a failed one is a traceback, a hang, a
# silently wrong result or lost data until looked at.
AUDIT_OUTCOMES = ("clean", "correct")
_audit_results: dict[str, tuple[str, str, str]] = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "audit(surface, outcome): a reproduction of the bad-input audit (issue 35)")


def pytest_collection_modifyitems(items):
    for item in items:  # carried on every report as a user property, so pytest-xdist's workers hand it back too
        marker = item.get_closest_marker("audit")
        if marker is not None:
            surface, outcome = marker.args
            assert outcome in AUDIT_OUTCOMES, f"{item.nodeid}: audit outcome {outcome!r}"
            item.user_properties.append(("audit", f"{surface}|{outcome}"))


def pytest_runtest_logreport(report):
    marks = [value for name, value in report.user_properties if name == "audit"]
    if marks and (report.when == "call" or report.outcome != "passed"):
        surface, outcome = marks[0].split("|")
        if _audit_results.get(report.nodeid, ("", "", "passed"))[2] == "passed":
            _audit_results[report.nodeid] = (surface, outcome, report.outcome)


def pytest_terminal_summary(terminalreporter):
    if not _audit_results:
        return
    rows: dict[str, dict[str, int]] = {}
    for surface, outcome, result in _audit_results.values():
        row = rows.setdefault(surface, {"tried": 0, "clean": 0, "correct": 0, "not handled": 0, "skipped": 0})
        row["tried"] += 1
        row[outcome if result == "passed" else "skipped" if result == "skipped" else "not handled"] += 1
    keys = ["tried", "clean", "correct", "not handled", "skipped"]
    terminalreporter.write_sep("-", "audit of bad inputs and faults (tests marked audit)")
    for surface, row in sorted(rows.items()):
        terminalreporter.write_line(f"{surface:<28} " + " · ".join(f"{k} {row[k]}" for k in keys))
    total = {k: sum(r[k] for r in rows.values()) for k in keys}
    terminalreporter.write_line(f"{'all':<28} " + " · ".join(f"{k} {total[k]}" for k in keys))
