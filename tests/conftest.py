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

torch.set_num_threads(min(2, torch.get_num_threads()))


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
