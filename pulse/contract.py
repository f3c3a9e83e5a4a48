"""The contracts every sequence mixer and every task follow, and checks that hold them to it.

A mixer maps (b, t, d) → (b, t, d) and carries a state that lets it continue a
sequence later. The checks below are the properties of docs/architecture.md; the test suite
runs them over every registered mixer, and you can run them on your own block.

A task (pulse.tasks.base.Task, taken here by what it does) makes batches that depend only on
(seed, step, micro-batch, rank, world size) and scores a model's outputs as summed statistics;
`check_task` holds one to that (docs/tasks.md), and the test suite runs it over every registered
task kind.

# b batch · t time · d model
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from pulse.errors import PulseError


def count_params(module: nn.Module, *, trainable: bool = False) -> int:
    """Parameters counted once each, however many modules share them (tied embeddings: `parameters()`
    yields a shared tensor once); `trainable` counts only those that require gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def no_weight_decay(param: nn.Parameter) -> nn.Parameter:
    """Tag a parameter that weight decay would harm (a log-decay rate, learned initial slots or
    memory): the optimiser never decays it, whatever its shape. Returns the parameter."""
    param._no_weight_decay = True  # type: ignore[attr-defined]
    return param


# One place for tolerances: (rtol, atol) per dtype.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (2e-2, 2e-2),
}


@runtime_checkable
class Mixer(Protocol):
    """A sequence mixer: forward over a chunk of tokens, or step one token at a time.

    `doc_starts` (pulse.ops.documents) marks where documents start inside the window: there the
    state is reset to the initial state (forward: a (b, t) bool mask or one 1-D integer tensor of
    positions per row; step: a (b,) bool tensor, True for rows whose token starts a document)."""

    def forward(self, x: Tensor, state: Any = None, *, doc_starts: Any = None) -> tuple[Tensor, Any]: ...

    def init_state(self, batch: int, *, device=None, dtype=None) -> Any: ...

    def step(self, x_t: Tensor, state: Any, *, doc_starts: Tensor | None = None) -> tuple[Tensor, Any]: ...

    def flops_per_token(self, seq_len: int) -> float: ...

    def state_numel(self, seq_len: int) -> int: ...

    def param_count(self) -> int: ...


def check_input(module: nn.Module, x: Tensor, ndim: int = 3) -> None:
    """Raise PulseError unless x is (batch, time, dim) — or (batch, dim) with ndim=2 — of the module's width."""
    dim = getattr(module, "dim", None)
    if x.ndim != ndim or (dim is not None and x.shape[-1] != dim) or (ndim == 3 and x.shape[1] == 0):
        want = "(batch, time, dim)" if ndim == 3 else "(batch, dim)"
        raise PulseError(
            f"{type(module).__name__} expects input of shape {want} with dim={dim} and time ≥ 1, "
            f"got {tuple(x.shape)}; reshape the input or build the block with dim={x.shape[-1] if x.ndim else '?'}."
        )
    if not x.is_floating_point():
        raise PulseError(
            f"{type(module).__name__} expects floating-point features, got {x.dtype}; embed token ids first."
        )
    param = next(module.parameters(), None)
    if param is None:
        return
    if x.device != param.device:
        raise PulseError(
            f"{type(module).__name__} lives on {param.device} but got input on {x.device}; "
            f"move one of them, e.g. x.to('{param.device}')."
        )
    if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
        raise PulseError(
            f"{type(module).__name__} has {param.dtype} weights but got {x.dtype} input; cast one of them "
            f"(x.to({param.dtype}) or module.to({x.dtype})), or run under torch.autocast."
        )


def tensors(tree: Any) -> list[Tensor]:
    """Every tensor in a nested state (dicts, lists, tuples, dataclass-like objects)."""
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in tensors(v)]
    if hasattr(tree, "__dict__"):
        return [t for v in vars(tree).values() for t in tensors(v)]
    return []


def assert_close(actual: Tensor, expected: Tensor, what: str) -> None:
    rtol, atol = TOLERANCES.get(actual.dtype, (1e-5, 1e-5))
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def check_shape(mixer: nn.Module, x: Tensor) -> None:
    y, _ = mixer(x)
    assert y.shape == x.shape, f"shape: output {tuple(y.shape)} != input {tuple(x.shape)}"
    assert torch.isfinite(y).all(), "shape: output has non-finite values"


def check_causal(mixer: nn.Module, x: Tensor, t: int) -> None:
    """Changing x[:, t:] leaves y[:, :t] unchanged."""
    y, _ = mixer(x)
    x2 = x.clone()
    x2[:, t:] = torch.randn_like(x2[:, t:]) * 3
    y2, _ = mixer(x2)
    assert_close(y2[:, :t], y[:, :t], f"causal: outputs before t={t} moved when inputs from t on changed")


def check_split(mixer: nn.Module, x: Tensor, k: int) -> None:
    """forward(x) == forward(x[:, :k]) then forward(x[:, k:], state)."""
    y, _ = mixer(x)
    y1, state = mixer(x[:, :k])
    y2, _ = mixer(x[:, k:], state)
    assert_close(torch.cat((y1, y2), dim=1), y, f"split at k={k}")


def check_step(mixer: nn.Module, x: Tensor) -> None:
    """forward(x) == step applied token by token from init_state."""
    y, _ = mixer(x)
    state = mixer.init_state(x.shape[0], device=x.device, dtype=x.dtype)
    outs = []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        outs.append(y_t)
    assert_close(torch.stack(outs, dim=1), y, "step vs forward")


def check_batch(mixer: nn.Module, x: Tensor, row: int = 0) -> None:
    """Row `row` of y depends only on row `row` of x."""
    y, _ = mixer(x)
    x2 = torch.randn_like(x) * 3
    x2[row] = x[row]
    y2, _ = mixer(x2)
    assert_close(y2[row], y[row], f"batch: row {row} changed when other rows changed")
    alone, _ = mixer(x[row : row + 1])
    assert_close(alone[0], y[row], f"batch: row {row} alone differs from row {row} in a batch")


def check_gradient(mixer: nn.Module, x: Tensor) -> None:
    """Finite gradients for the input and for every trainable parameter."""
    mixer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y, state = mixer(x)
    loss = y.square().mean() + sum(s.float().square().mean() for s in tensors(state) if s.is_floating_point())
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), "gradient: input gradient missing or not finite"
    for name, p in mixer.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"gradient: parameter `{name}` got no gradient"
            assert torch.isfinite(p.grad).all(), f"gradient: parameter `{name}` has non-finite gradient"


def check_documents(mixer: nn.Module, x: Tensor, starts: list[list[int]], x_next: Tensor) -> None:
    """With document starts, the output at every position (values and gradients) equals that of its
    document run alone from the initial state, and the state after the window continues the last
    document as its own state does (forward over x_next and one `step`; equal tensors where the
    two states have equal shapes). starts: sorted positions per row; x_next: (b, t2, d)."""
    from pulse.ops.documents import split_rows

    b, t, _ = x.shape
    weights = torch.randn_like(x)
    mixer.zero_grad(set_to_none=True)
    packed = x.clone().requires_grad_(True)
    y, state = mixer(packed, doc_starts=[torch.tensor(s, dtype=torch.long) for s in starts])
    (y * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in mixer.named_parameters() if p.grad is not None}
    mixer.zero_grad(set_to_none=True)
    alone_x = x.clone().requires_grad_(True)
    ends: list[Any] = []
    total = 0
    for row in range(b):
        bounds = sorted({0, *starts[row], t})
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            y_doc, end = mixer(alone_x[row : row + 1, lo:hi])
            assert_close(y[row : row + 1, lo:hi].detach(), y_doc.detach(),
                         f"documents: row {row}, document {lo}..{hi - 1} differs from that document alone")
            total = total + (y_doc * weights[row : row + 1, lo:hi]).sum()
        ends.append(end)
    total.backward()
    assert_close(packed.grad, alone_x.grad, "documents: input gradients differ from the documents' alone")
    for name, p in mixer.named_parameters():
        if name in grads:
            assert p.grad is not None, f"documents: `{name}` gets a gradient packed but not alone"
            assert_close(grads[name], p.grad, f"documents: gradient of `{name}` differs from the documents' alone")
    mixer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for row, (packed_state, end) in enumerate(zip(split_rows(state, b), ends)):
            a, e = tensors(packed_state), tensors(end)
            if len(a) == len(e) and all(u.shape == v.shape for u, v in zip(a, e)):
                for u, v in zip(a, e):
                    assert_close(u, v, f"documents: row {row}'s state differs from its last document's alone")
            nxt = x_next[row : row + 1]
            assert_close(mixer(nxt, packed_state)[0], mixer(nxt, end)[0],
                         f"documents: row {row} continues differently from its last document alone")
            assert_close(mixer.step(nxt[:, 0], packed_state)[0], mixer.step(nxt[:, 0], end)[0],
                         f"documents: row {row} steps differently from its last document alone")


# --- The task contract ------------------------------------------------------------------------------------------

SPLITS = ((1, 2), (2, 1), (2, 2))  # (world, grad_accum): ways to share out one global batch


def check_task(task: Any, model: nn.Module, *, twin: Any, batch_size: int = 4, seed: int = 0, steps: int = 3) -> None:
    """Every task check on a task and a model that fits it; `twin` is a second task built from the same spec,
    not used before. batch_size must be a multiple of 4 (shared out over 2 processes × 2 micro-batches)."""
    assert isinstance(task.kind, str) and isinstance(getattr(type(task), "metric", None), str), \
        "task: kind and metric must be names, metric declared on the class (a run names a plot per task metric)"
    assert isinstance(task.higher_is_better, bool), "task: higher_is_better must be true or false"
    task.check_model(model)
    head = task.make_head(model)
    check_task_batches_repeat(task, twin, batch_size=batch_size, seed=seed, steps=steps)
    check_task_split(task, model, head, batch_size=batch_size, seed=seed)
    check_task_eval_shards(task, batch_size=batch_size)
    check_task_gradient(task, model, head, task.train_batch(0, batch_size=batch_size, seed=seed))
    check_task_metrics(task, model, head, batch_size=batch_size, seed=seed)


def batch_rows(batch: dict[str, Tensor], what: str) -> list[dict[str, Tensor]]:
    """A batch as its examples: every value a tensor whose first dimension is the example."""
    assert isinstance(batch, dict) and batch, f"{what}: a batch is a non-empty dict of tensors"
    sizes = {k: v.shape[0] if isinstance(v, Tensor) and v.ndim else None for k, v in batch.items()}
    assert len(set(sizes.values())) == 1 and None not in sizes.values(), \
        f"{what}: every value must be a tensor with one row per example, got first dimensions {sizes}"
    return [{k: v[i] for k, v in batch.items()} for i in range(next(iter(sizes.values())))]


def same_example(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    """Two rows of batches hold one example: equal tensors, up to right padding along time (one is a prefix of
    the other, whose rest repeats one value), since a batch pads its examples to its own longest."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if x.ndim == 0 or x.shape[1:] != y.shape[1:]:
            if x.shape != y.shape or not torch.equal(x, y):
                return False
            continue
        short, long = (x, y) if len(x) <= len(y) else (y, x)
        rest = long[len(short):]
        if not torch.equal(long[: len(short)], short) or not bool((rest == rest[:1]).all()):
            return False
    return True


def _same_batch(a: dict[str, Tensor], b: dict[str, Tensor], what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: keys {sorted(a)} != {sorted(b)}"
    for key in a:
        assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), f"{what}: `{key}` differs"


def check_task_batches_repeat(task: Any, twin: Any, *, batch_size: int, seed: int, steps: int) -> None:
    """Batches depend only on (seed, step, …): two tasks from one spec, asked for the same steps in other orders
    (the twin first for a late micro-batch of another rank), give the same batches; so does asking again."""
    last = steps - 1
    late = twin.train_batch(last, batch_size=batch_size, seed=seed, micro=1, accum=2, rank=1, world=2)
    first = {s: task.train_batch(s, batch_size=batch_size, seed=seed) for s in range(steps)}
    again = {s: twin.train_batch(s, batch_size=batch_size, seed=seed) for s in reversed(range(steps))}
    for s in range(steps):
        _same_batch(first[s], again[s], f"train batch of step {s}: two tasks from one spec differ")
    _same_batch(task.train_batch(0, batch_size=batch_size, seed=seed), first[0], "train batch of step 0, asked again")
    quarter = batch_size // 4
    rows = batch_rows(first[last], "train batch")[3 * quarter:]
    assert all(same_example(a, b) for a, b in zip(batch_rows(late, "micro-batch"), rows, strict=True)), \
        f"step {last}: micro-batch 1 of rank 1 (of 2 × 2), asked first, differs from its rows of the global batch"
    held, held_twin = list(task.eval_batches(batch_size)), list(twin.eval_batches(batch_size))
    assert len(held) == len(held_twin), "eval batches: two tasks from one spec give different numbers of batches"
    for i, (a, b) in enumerate(zip(held, held_twin)):
        _same_batch(a, b, f"eval batch {i}: two tasks from one spec differ")


def _sums(task: Any, model: nn.Module, head: nn.Module | None, batch: dict[str, Tensor]) -> dict[str, float]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in task.forward(model, head, batch).items()}
    finally:
        model.train(was)


def _add(totals: dict[str, float], sums: dict[str, float]) -> dict[str, float]:
    return {k: totals.get(k, 0.0) + sums.get(k, 0.0) for k in {*totals, *sums}}


def check_task_split(task: Any, model: nn.Module, head: nn.Module | None, *, batch_size: int, seed: int,
                     step: int = 1) -> None:
    """Ranks and micro-batches make up exactly the global batch: for 2 processes and/or 2 micro-batches, their
    batches in order (rank, then micro-batch) hold the examples of the one-process batch, and their summed
    statistics are its statistics."""
    whole = task.train_batch(step, batch_size=batch_size, seed=seed)
    rows = batch_rows(whole, f"train batch of step {step}")
    assert len(rows) == batch_size, f"train batch of step {step}: {len(rows)} examples, not batch_size {batch_size}"
    expected = _sums(task, model, head, whole)
    for world, accum in SPLITS:
        parts = [task.train_batch(step, batch_size=batch_size, seed=seed, micro=m, accum=accum, rank=r, world=world)
                 for r in range(world) for m in range(accum)]
        split = f"{world} process{'es' if world > 1 else ''} × {accum} micro-batch{'es' if accum > 1 else ''}"
        mine = [row for p in parts for row in batch_rows(p, f"a micro-batch of {split}")]
        assert len(mine) == len(rows), f"{split}: {len(mine)} examples, not {len(rows)}"
        for i, (a, b) in enumerate(zip(mine, rows)):
            assert same_example(a, b), f"{split}: example {i} is not the global batch's"
        got: dict[str, float] = {}
        for p in parts:
            got = _add(got, _sums(task, model, head, p))
        for key, value in expected.items():
            assert math.isclose(got.get(key, math.nan), value, rel_tol=1e-4, abs_tol=1e-4), \
                f"{split}: summed `{key}` {got.get(key)} != global {value}"


def check_task_eval_shards(task: Any, *, batch_size: int) -> None:
    """The held-out set shared out over 2 processes: each example on exactly one, none left out."""
    whole = [row for b in task.eval_batches(batch_size) for row in batch_rows(b, "eval batch")]
    assert whole, "eval batches: the held-out set is empty"
    shards = [row for r in range(2) for b in task.eval_batches(batch_size, rank=r, world=2)
              for row in batch_rows(b, f"eval batch of rank {r}")]
    assert len(shards) == len(whole), f"eval batches: 2 processes hold {len(shards)} examples, one holds {len(whole)}"
    left = list(whole)
    for row in shards:
        match = next((i for i, other in enumerate(left) if same_example(row, other)), None)
        assert match is not None, "eval batches: an example of a rank's share is not in the held-out set (or twice)"
        left.pop(match)


def check_task_gradient(task: Any, model: nn.Module, head: nn.Module | None, batch: dict[str, Tensor]) -> None:
    """`loss_sum` is a finite scalar that carries a gradient to the model (some parameter gets a non-zero one)
    and to every parameter of the task's head; every gradient is finite."""
    modules: Iterable[nn.Module] = (model,) if head is None else (model, head)
    for m in modules:
        m.train()
        m.zero_grad(set_to_none=True)
    loss = task.forward(model, head, batch)["loss_sum"]
    assert loss.ndim == 0 and loss.requires_grad, "gradient: loss_sum must be a scalar that carries a gradient"
    assert torch.isfinite(loss), f"gradient: loss_sum is {float(loss)}"
    loss.backward()
    for m in modules:
        for name, p in m.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), f"gradient: `{name}` has a non-finite gradient"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), \
        "gradient: no parameter of the model gets a gradient from loss_sum"
    for name, p in (head.named_parameters() if head is not None else ()):
        assert p.grad is not None, f"gradient: the task's head parameter `{name}` gets no gradient from loss_sum"
    for m in modules:
        m.zero_grad(set_to_none=True)


def check_task_metrics(task: Any, model: nn.Module, head: nn.Module | None, *, batch_size: int, seed: int) -> None:
    """`targets(batch)` is the `count` of its statistics, `tokens(batch)` is positive, and the metrics of the
    held-out set include `loss` and the task's headline metric, finite."""
    totals: dict[str, float] = {}
    batches = [task.train_batch(0, batch_size=batch_size, seed=seed), *task.eval_batches(batch_size)]
    for i, batch in enumerate(batches):
        sums = _sums(task, model, head, batch)
        what = "train batch" if i == 0 else f"eval batch {i - 1}"
        assert "loss_sum" in sums and "count" in sums, f"{what}: forward must give `loss_sum` and `count`"
        assert task.targets(batch) == round(sums["count"]), \
            f"{what}: targets(batch) = {task.targets(batch)} but the statistics count {sums['count']}"
        assert task.tokens(batch) > 0, f"{what}: tokens(batch) must count the positions fed to the model"
        if i:
            totals = _add(totals, sums)
    metrics = task.metrics(totals)
    for name in ("loss", task.metric):
        assert name in metrics, f"metrics: `{name}` missing from {sorted(metrics)}"
        assert math.isfinite(metrics[name]), f"metrics: `{name}` is {metrics[name]}"
