"""A run directory: what it holds, whether it may be resumed, and which checkpoint to resume from.

    RUN/
      .pulse-lock                  the pid of the one process writing here (see pulse.paths.DirLock)
      run.json                     the recipe this run was started with, and its hash
      metrics.jsonl                one JSON record per log or eval line
      checkpoints/step-00000200/   model.safetensors, head.safetensors, recipe.json, train_state.safetensors
      model.safetensors …          the final weights (a checkpoint directory itself)
      loss.png, <metric>.png, summary.json

The resume policy, in one place (`RunDir.prepare`):

- an empty or new directory starts a fresh run;
- a run of the same recipe continues from its newest readable checkpoint (a damaged
  one is skipped with a message, the previous one is used);
- with `resume=True`, a run whose recipe differs only in [train] or [bench] continues
  from that checkpoint with the new settings *applied*: the optimiser and schedule are
  built from the new recipe; only the per-parameter moments, the step and the RNG come
  from the checkpoint;
- anything else is refused (exit 2), naming the difference and the ways on: --resume,
  --force (moves the old run aside to RUN.replaced-<time>) or another --out.

A step checkpoint is written into a hidden temporary directory and renamed into place
when complete, so a run killed at any moment leaves only whole checkpoints behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from pulse.errors import PulseError
from pulse.paths import LOCK, DirLock, DiskFull, atomic_write_text, check_output_dir, full_disk, move_aside
from pulse.storage.checkpoint import RECIPE, WEIGHTS, read_metadata, read_stored_recipe, recipe_hash, save_checkpoint
from pulse.storage.runfiles import (
    CHECKPOINTS,
    HEAD,
    INIT_RECORD,
    METRICS,
    RUN,
    STATE,
    SUMMARY,
    marked_recipe,
    step_checkpoints,
)
from pulse.storage.state import ResumePoint, read_point, save_state

RUN_FILES = (WEIGHTS, HEAD, METRICS, SUMMARY, RUN, CHECKPOINTS)
RESUMABLE_TABLES = {"train", "bench"}
WAYS_ON = "pass --force to move the old run aside and start afresh, or train into another --out directory"


class RunDir:
    """The files of one training run. Only the writer (rank 0) writes and holds the lock; every rank may read."""

    def __init__(self, root: str | Path, *, writer: bool = True):
        self.root = Path(root)
        self.checkpoints = self.root / CHECKPOINTS
        self.writer = writer
        self._lock = DirLock(self.root)

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS

    def step_dir(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}"

    def complete(self) -> list[tuple[int, Path]]:
        """Whole step checkpoints (renamed into place), oldest first."""
        return step_checkpoints(self.root)

    def holds_run(self) -> list[str]:
        """The files here that a run writes (weights, checkpoints, metrics, recipe.json, plots, …); empty for a
        fresh directory. Any of them present means writing here would replace something."""
        if not self.root.is_dir():
            return []
        present = [n for n in written_files() if (self.root / n).exists()]
        if CHECKPOINTS in present and not any(self.checkpoints.iterdir()):
            present.remove(CHECKPOINTS)
        return present

    def acquire(self) -> None:
        """Become this directory's one writer (a second writer gets a PulseError naming the owner's pid)."""
        if self.writer:
            check_output_dir(self.root)
            self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def replace(self, say: Callable[[str], None]) -> None:
        """--force: move the run here aside (an atomic rename), then hold the lock on a fresh directory."""
        if not (self.writer and self.holds_run()):
            return
        aside = move_aside(self.root)
        self._lock.release()
        (aside / LOCK).unlink(missing_ok=True)
        self._lock.acquire()
        say(f"moved the previous run aside to {aside}")

    def stored_recipe(self) -> dict[str, Any] | None:
        """The verified recipe of the run here: the newest readable checkpoint's, the final weights', or run.json's."""
        for _, path in reversed(self.complete()):
            try:
                return read_stored_recipe(path / WEIGHTS)
            except PulseError:
                continue
        if (self.root / WEIGHTS).is_file():
            try:
                return read_stored_recipe(self.root)
            except PulseError:
                return None
        return self._marked_recipe()

    def _marked_recipe(self) -> dict[str, Any] | None:
        return marked_recipe(self.root)

    def prepare(self, recipe: Any, *, resume: bool, say: Callable[[str], None]) -> ResumePoint | None:
        """The resume policy: where to continue from (None: a fresh start), or a PulseError saying why not."""
        point, reasons = self._newest_readable(say)
        if point is None and reasons:
            raise PulseError(f"{self.root}: none of its {len(reasons)} checkpoint(s) can be read ({reasons[-1]}); "
                             f"nothing was changed. To start afresh, {WAYS_ON}.")
        stored = point.recipe if point is not None else self.stored_recipe()
        current = recipe.to_dict()
        present = self.holds_run()
        if stored is None:
            if present and not set(present) & set(RUN_FILES):
                raise PulseError(_foreign(self.root, present, "pass --force to move the directory aside to "
                                          f"{self.root.name}.replaced-<time> first, or train into another --out"))
            if present:
                raise PulseError(f"{self.root} holds {', '.join(present)} from a run whose recipe cannot be verified; "
                                 f"nothing was changed. To use this directory, {WAYS_ON}.")
            if resume:
                raise PulseError(
                    f"--resume: {self.root} has no checkpoint to continue from; drop --resume to start afresh."
                )
            return None
        changes = _differences(stored, current)
        tables = {path.split(".")[0] for path, _, _ in changes}
        if changes and not (resume and tables <= RESUMABLE_TABLES):
            listed = ", ".join(p for p, _, _ in changes[:6])
            hint = ("pass --resume to continue it with the new [train] settings, or "
                    if tables <= RESUMABLE_TABLES else "an exact resume needs the same model and task; ")
            raise PulseError(f"{self.root} holds a run of a different recipe (differs at {listed}); {hint}{WAYS_ON}.")
        if point is None:
            if resume:
                raise PulseError(
                    f"--resume: {self.root} has no checkpoint to continue from; drop --resume to start afresh."
                )
            if WEIGHTS in present:
                raise PulseError(f"{self.root} holds trained or built weights but no checkpoint to continue from; "
                                 f"nothing was changed. {WAYS_ON[0].upper()}{WAYS_ON[1:]}.")
            return None
        if changes:
            said = ", ".join(f"{p} {_show(a)} → {_show(b)}" for p, a, b in changes[:8])
            say(f"resuming from step {point.step} with changed settings, applied: {said}")
        return point

    def _newest_readable(self, say: Callable[[str], None]) -> tuple[ResumePoint | None, list[str]]:
        reasons = []
        for step, path in reversed(self.complete()):
            try:
                return read_point(step, path), reasons
            except PulseError as err:
                reasons.append(str(err))
                say(f"skipping damaged checkpoint {path.name}: {err}")
        return None, reasons

    def mark(self, recipe: Any) -> None:
        """Record the recipe this run continues with (run.json), so a rerun knows the directory is its own."""
        if self.writer:
            data = recipe.to_dict()
            text = json.dumps({"recipe": data, "recipe_hash": recipe_hash(data)}, indent=2, sort_keys=True) + "\n"
            atomic_write_text(self.root / RUN, text)

    def clean_partial(self) -> None:
        """Remove temporary directories left by a run killed while checkpointing."""
        if self.writer and self.checkpoints.is_dir():
            for p in self.checkpoints.iterdir():
                if p.name.startswith(".step-"):
                    shutil.rmtree(p, ignore_errors=True)

    def save(self, step: int, *, model: nn.Module, head: nn.Module | None, recipe: Any, state: dict[str, Any],
             keep_last: int, tokenizer: Any = None) -> Path:
        """Write a whole step checkpoint atomically, then drop all but the newest `keep_last`."""
        final = self.step_dir(step)
        if not self.writer:
            return final
        tmp = self.checkpoints / f".step-{step:08d}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            save_checkpoint(model, recipe, tmp, tokenizer=tokenizer)
            if head is not None:
                save_checkpoint(head, recipe, tmp, name=HEAD)
            # tie the state to these exact weights: a state beside other weights is not a whole checkpoint
            links = {"recipe_hash": recipe.hash(), "weights_sha256": read_metadata(tmp / WEIGHTS)["pulse_sha256"]}
            save_state(tmp / STATE, {**state, **links})
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, DiskFull) or full_disk(err):
                complete = self.complete()
                kept = f"step {complete[-1][0]}, {complete[-1][1]}" if complete else "none yet"
                raise DiskFull(f"no space left on the device to write the step-{step} checkpoint in {self.root}; its "
                               f"partial files were removed and the newest whole checkpoint ({kept}) is intact. "
                               "Free some space and run the same command again to continue.") from None
            raise
        if final.exists():
            stale = final.with_name(f".{final.name}.{os.getpid()}.old")
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp.rename(final)
        _fsync_dir(self.checkpoints)
        for _, old in self.complete()[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def save_final(self, *, model: nn.Module, head: nn.Module | None, recipe: Any, tokenizer: Any = None) -> Path:
        if self.writer:
            save_checkpoint(model, recipe, self.root, tokenizer=tokenizer)
            if head is not None:
                save_checkpoint(head, recipe, self.root, name=HEAD)
        return self.root / WEIGHTS

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.writer:
            atomic_write_text(self.root / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")


def claim_output_dir(out: str | Path, *, force: bool, what: str) -> Path | None:
    """For commands that write a whole directory (`pulse build --out`): refuse to overwrite a run unless --force.

    With force the old directory is moved aside (renamed, never deleted) and its new place is
    returned (None when nothing was there), so a command that then fails can put it back
    (`restore_output_dir`); a directory another process is writing into is refused either way.
    """
    out = Path(out)
    check_output_dir(out)
    run = RunDir(out)
    present = run.holds_run()
    if not present:
        return None
    if not force and not set(present) & set(RUN_FILES):
        raise PulseError(_foreign(out, present, f"pass --force to move the directory aside to "
                                                f"{out.name}.replaced-<time> first, or pick a new --out"))
    if not force:
        raise PulseError(f"{what} {out}: the directory holds a run ({', '.join(present)}); writing here would destroy "
                         f"it. Pass --force to move it aside to {out.name}.replaced-<time>, or pick a new --out.")
    with DirLock(out) as lock:
        aside = move_aside(out)
        lock.release()
        (aside / LOCK).unlink(missing_ok=True)
    return aside


def restore_output_dir(out: str | Path, aside: Path | None) -> str:
    """Undo claim_output_dir after a failed write: the partial `out` goes, the old directory comes back.
    Returns a sentence saying what became of the old directory."""
    if aside is None:
        shutil.rmtree(out, ignore_errors=True)
        return "nothing was there before"
    shutil.rmtree(out, ignore_errors=True)
    try:
        Path(aside).rename(out)
    except OSError:
        return f"the previous contents are in {aside}"
    return f"the previous contents of {out} are back in place"


def written_files() -> tuple[str, ...]:
    """Every file a run or `pulse build --out` writes at the top of its directory (plots: one per task metric)."""
    from pulse import registry
    from pulse.data.tokenizer import CONFIG, FILE

    metrics = sorted({e.module.metric for e in registry.entries(role="task")})
    return (*RUN_FILES, RECIPE, INIT_RECORD, FILE, CONFIG, "loss.png", *(f"{m}.png" for m in metrics))


def _foreign(root: Path, present: list[str], ways: str) -> str:
    return (f"{root} holds {', '.join(present)}, which this command would overwrite, and no run of PULSE wrote "
            f"them (there is no run.json, checkpoint or weights); nothing was changed. Move them away, or {ways}.")


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [(prefix or "(top level)", a, b)]


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "…"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
