"""PULSE in the Hugging Face ecosystem (`pip install "pulse[hf]"`): the Transformers classes (pulse.hf.modeling).
The export directory's files are pulse.storage.hf_dir's (read and written without Transformers); writing one is
pulse.export.hf.

`register()` makes `AutoConfig` / `AutoModelForCausalLM` know model type "pulse", so an export
loads without `trust_remote_code`. `import pulse` arranges for it to run as soon as
`transformers` is imported (or at once, if it already is), without importing Transformers
itself: PULSE's own commands stay as quick to start as before.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

from pulse.errors import PulseError

EXTRA = 'pip install "pulse[hf]"'


def require_transformers() -> None:
    if importlib.util.find_spec("transformers") is None:
        raise PulseError(f"this needs Hugging Face Transformers, the `hf` extra ({EXTRA}).")


def register() -> None:
    """AutoConfig and AutoModelForCausalLM learn model type "pulse" (importing pulse.hf.modeling does it)."""
    import pulse.hf.modeling  # noqa: F401


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Runs register() right after `transformers` finishes importing, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            try:
                register()
            except Exception:  # noqa: BLE001 (a Transformers that cannot take the classes must not break its import)
                pass

        spec.loader.exec_module = exec_module
        return spec


def register_when_imported() -> None:
    if "transformers" in sys.modules:
        try:
            register()
        except Exception:  # noqa: BLE001
            pass
    elif importlib.util.find_spec("transformers") is not None and \
            not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
