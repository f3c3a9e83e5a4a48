"""`pulse eval RUN --harness TASKS`: lm-evaluation-harness on a PULSE model (`pip install "pulse[eval]"`).

The model goes to the harness as what `pulse export --format hf` writes, built in memory
(PulseHFForCausalLM and a PreTrainedTokenizerFast of the run's tokenizer), through the
harness's own `HFLM`, so the numbers are the ones `lm_eval --model hf` gives on the export.

PULSE ships two small local tasks, built from files in the package, that run offline:

- `pulse_arith_mc` (multiple choice: the sum of two digits among four answers; metric acc);
- `pulse_continuation` (loglikelihood: the usual end of 30 common phrases and code lines;
  metrics perplexity and acc, whether the continuation is the greedy one).

They are written, with absolute paths to their data, into a folder the harness includes
(`local_tasks_dir()`; `pulse eval --harness` prints it, for `lm_eval --include_path`).
Hugging Face Hub access is off unless --online: a task whose data would be downloaded
fails at once with one line saying so, instead of waiting on a network that is not there.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

from pulse.errors import PulseError

EXTRA = 'pip install "pulse[eval]"'
TASKS = Path(__file__).resolve().parent / "harness_tasks"
LOCAL = {
    "pulse_arith_mc": ("arith_mc.jsonl", """output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""),
    "pulse_continuation": ("continuation.jsonl", """output_type: loglikelihood
doc_to_text: "{{context}}"
doc_to_target: "{{continuation}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""),
}


def local_tasks_dir() -> Path:
    """A folder of the shipped tasks' YAML files, pointing at their data by absolute path (rewritten each call)."""
    from pulse.paths import atomic_write_text

    root = Path(os.environ.get("PULSE_CACHE") or Path.home() / ".cache" / "pulse").expanduser() / "harness-tasks"
    for name, (data, body) in LOCAL.items():
        head = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: "
                f"{json.dumps(str(TASKS / data))}\ntest_split: test\n")
        atomic_write_text(root / f"{name}.yaml", head + body + "metadata:\n  version: 1.0\n")
    return root


def _require() -> None:
    try:
        import accelerate  # noqa: F401 (the harness's HF model imports it)
        import lm_eval  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        raise PulseError(f"--harness needs lm-evaluation-harness and Transformers, the `eval` extra ({EXTRA}); "
                         f"{err}.") from None


def run_harness(lm: Any, tasks: list[str], *, include_path: Path | None = None, limit: float | None = None,
                num_fewshot: int | None = None, batch_size: int = 1, online: bool = False) -> dict[str, Any]:
    """Evaluate PulseForCausalLM `lm` on harness `tasks`; returns the harness's results dict."""
    if not online:  # before the harness imports datasets / huggingface_hub, which read these once
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    _require()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    paths = [str(local_tasks_dir())]
    if include_path is not None:
        if not include_path.is_dir() or not any(include_path.rglob("*.yaml")):
            raise PulseError(f"--include-path {include_path}: no task files (*.yaml) in it; give the folder that "
                             "holds your lm-eval task YAMLs.")
        paths.append(str(include_path))
    # the shipped tasks alone need no index of the harness's ~15,000 (a minute to build)
    manager = _task_manager(tuple(paths), defaults=not set(tasks) <= set(LOCAL))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        close = difflib.get_close_matches(unknown[0], manager.all_tasks, n=3)
        hint = f" (did you mean {', '.join(f'`{c}`' for c in close)}?)" if close else ""
        raise PulseError(f"--harness: no task named `{unknown[0]}`{hint}; the local tasks are "
                         f"{', '.join(LOCAL)}, and `lm_eval ls tasks` lists the harness's own.")
    model, tokenizer = hf_pair(lm)  # the export's tokenizer: a vocabulary without bos/eos declares them (export.py)
    with _quiet_about_accelerate():
        wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    try:
        return lm_eval.simple_evaluate(model=wrapped, tasks=tasks, num_fewshot=num_fewshot, limit=limit,
                                       task_manager=manager, log_samples=False, bootstrap_iters=0,
                                       verbosity="ERROR")
    except Exception as err:  # noqa: BLE001 (the harness and datasets raise many types; offline ones are named)
        if _offline(err):
            raise PulseError(f"--harness {','.join(tasks)}: the task's data would be downloaded from the Hugging Face "
                             "Hub, and this run is offline. Download it where there is a network (datasets' "
                             "save_to_disk), point a task YAML's dataset_path at the local copy and give its folder "
                             "with --include-path DIR; or pass --online.") from None
        raise


@functools.lru_cache(maxsize=4)
def _task_manager(paths: tuple[str, ...], *, defaults: bool):
    """lm-eval's index of the tasks under `paths` (and its own, with `defaults`), built once per process."""
    from lm_eval.tasks import TaskManager

    try:
        return TaskManager(include_path=list(paths), include_defaults=defaults)
    except TypeError:  # an lm-eval from before include_defaults
        return TaskManager(include_path=list(paths))


# what lm-eval logs whenever it is handed a model object, as here, rather than a name to load
ACCELERATE_NOTE = "`pretrained` model kwarg is not of type `str`"


class _DropNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(ACCELERATE_NOTE)


@contextlib.contextmanager
def _quiet_about_accelerate():
    """Drop lm-eval's "do not launch via accelerate" warning (this process launches nothing), and only it."""
    log = logging.getLogger("lm_eval.models.huggingface")
    note = _DropNote()
    log.addFilter(note)
    try:
        yield
    finally:
        log.removeFilter(note)


def _offline(err: BaseException) -> bool:
    while err is not None:
        text = f"{type(err).__name__} {err}".lower()
        if any(k in text for k in ("offline", "connection", "couldn't reach", "name resolution", "max retries")):
            return True
        err = err.__cause__ or err.__context__
    return False


def hf_pair(lm: Any):
    """PulseForCausalLM → (PulseHFForCausalLM with its weights, PreTrainedTokenizerFast of its tokenizer)."""
    from transformers import PreTrainedTokenizerFast

    from pulse.hf.modeling import hf_model
    from pulse.storage.hf_dir import hf_tokenizer, special_tokens

    tok = hf_tokenizer(lm.tokenizer)
    names, _ = special_tokens(tok)
    copy = type(tok.tokenizer).from_str(tok.tokenizer.to_str())  # Transformers adds declared tokens to its argument
    return hf_model(lm).eval(), PreTrainedTokenizerFast(tokenizer_object=copy, **names)


def table(results: dict[str, Any]) -> str:
    from lm_eval.utils import make_table

    return make_table(results)
