"""What a model costs: parameters, recurrent state and FLOPs per token, block by block.

Costs are analytic: each block documents `param_count()`, `state_numel(n)` and
`flops_per_token(n)`, so a summary of a huge model needs no memory (meta device).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torchinfo
from torch import nn

from pulse.contract import count_params


@dataclass
class BlockCost:
    name: str
    type: str
    params: int
    state_bytes: int
    flops_per_token: float
    tied_to: list[str] = field(default_factory=list)  # where this block's weights live when it only reuses them


@dataclass
class LayerRow:
    """One row of the layer table (torchinfo's walk of the forward pass): `params` counts every
    parameter the module holds, `new_params` only those no earlier module holds (tied ones once)."""

    depth: int
    name: str
    type: str
    output_shape: list[int]
    params: int
    new_params: int
    tied_to: list[str]


@dataclass
class Summary:
    seq_len: int
    batch: int
    dtype: str
    blocks: list[BlockCost]
    total_params: int
    trainable_params: int
    layers: list[LayerRow] = field(default_factory=list, repr=False)
    mult_adds: int | None = None

    @property
    def state_bytes(self) -> int:
        return sum(b.state_bytes for b in self.blocks)

    @property
    def flops_per_token(self) -> float:
        return sum(b.flops_per_token for b in self.blocks)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("layers")
        out.pop("mult_adds")
        out.update(state_bytes=self.state_bytes, flops_per_token=self.flops_per_token)
        return out


def tied_parameters(model: nn.Module) -> dict[str, str]:
    """name → the name it first appeared under, for each parameter shared with an earlier module (tied)."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[name] = first[id(p)]
        else:
            first[id(p)] = name
    return out


@dataclass
class ModuleParams:
    params: int
    new_params: int
    tied_to: list[str]


def module_params(model: nn.Module) -> dict[str, ModuleParams]:
    """For each module path ("" is the root): all its parameters, those new to it (a tied copy of an
    earlier one counts once), and the names outside the module that its tied parameters belong to."""
    tied = tied_parameters(model)
    out: dict[str, ModuleParams] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        total, shared, targets = 0, 0, []
        for name, p in module.named_parameters(remove_duplicate=False):
            full = f"{prefix}.{name}" if prefix else name
            total += p.numel()
            if full in tied:
                shared += p.numel()
                if prefix and not tied[full].startswith(prefix + "."):
                    targets.append(tied[full])
        out.setdefault(prefix, ModuleParams(total, total - shared, sorted(set(targets))))
    return out


def _costed(module: nn.Module) -> bool:
    return callable(getattr(module, "flops_per_token", None))


def block_costs(model: nn.Module, *, seq_len: int, batch: int = 1, dtype: torch.dtype | None = None) -> list[BlockCost]:
    """One row per costed block (the outermost module that documents its cost), plus any
    bare embedding or linear layer outside them. Shared (tied) parameters count once."""
    param = next(model.parameters(), None)
    itemsize = (dtype or (param.dtype if param is not None else torch.float32)).itemsize
    seen: set[int] = set()
    rows: list[BlockCost] = []

    def own_params(module: nn.Module, recurse: bool = True) -> int:
        total = 0
        for p in module.parameters(recurse=recurse):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    def visit(prefix: str, module: nn.Module) -> None:
        if _costed(module):
            state = module.state_numel(seq_len) if callable(getattr(module, "state_numel", None)) else 0
            rows.append(BlockCost(prefix, type(module).__name__, own_params(module),
                                  state * batch * itemsize, float(module.flops_per_token(seq_len))))
            return
        if isinstance(module, nn.Embedding):
            rows.append(BlockCost(prefix, "Embedding", own_params(module), 0, 0.0))
            return
        if isinstance(module, nn.Linear):
            flops = 2.0 * module.in_features * module.out_features
            rows.append(BlockCost(prefix, "Linear", own_params(module), 0, flops))
            return
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)
        direct = own_params(module, recurse=False)
        if direct:
            rows.append(BlockCost(prefix or "(model)", type(module).__name__, direct, 0, 0.0))

    visit("", model)
    counts = module_params(model)
    for row in rows:
        if row.params == 0 and row.name in counts:
            row.tied_to = counts[row.name].tied_to
    return rows


def summarize(model: nn.Module, *, seq_len: int, batch: int = 1, table: bool = True, depth: int = 3) -> Summary:
    """Costs of `model` at sequence length `seq_len`. Build the model on device="meta" to
    inspect any size for free; with table=True torchinfo walks a meta forward pass for the
    per-layer rows (output shapes, parameters with tied ones marked) and the mult-adds."""
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    summary = Summary(
        seq_len=seq_len,
        batch=batch,
        dtype=str(dtype).removeprefix("torch."),
        blocks=block_costs(model, seq_len=seq_len, batch=batch, dtype=dtype),
        total_params=count_params(model),
        trainable_params=count_params(model, trainable=True),
    )
    if table and callable(getattr(model, "example_input", None)):
        summary.layers, summary.mult_adds = layer_table(model, seq_len=seq_len, batch=batch, depth=depth)
    return summary


def _signature(layer: nn.Module) -> tuple:
    """What makes two layers walk identically: every submodule's type, scalar settings and parameter shapes."""
    out = []
    for name, m in layer.named_modules():
        settings = tuple(sorted((k, v) for k, v in vars(m).items()
                                if not k.startswith("_") and isinstance(v, (bool, int, float, str, tuple))))
        shapes = tuple((n, tuple(p.shape)) for n, p in m.named_parameters(recurse=False))
        out.append((name, type(m).__name__, settings, shapes))
    return tuple(out)


def layer_table(model: nn.Module, *, seq_len: int, batch: int, depth: int) -> tuple[list[LayerRow], int]:
    """torchinfo's rows and mult-adds for the whole model, walking each distinct layer once.

    Layers with the same signature walk the same way (a layout cycles a few kinds over the
    depth), so torchinfo runs a forward pass over the first layer of each kind only, and its
    rows are repeated, renamed, for the others: the work grows with the kinds of layer, not
    the depth, while the table and the mult-adds still cover every layer.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    holder = getattr(model, "stack", model)  # the module whose child `layers` is (a model's residual stack)
    base = "stack." if holder is not model else ""
    layers = getattr(holder, "layers", None)
    kind_of: list[int] = []  # layer index → position of its kind's representative in the probe
    probe: list[int] = []
    if isinstance(layers, nn.ModuleList):
        first: dict[tuple, int] = {}
        for i, layer in enumerate(layers):
            sig = _signature(layer)
            if sig not in first:
                first[sig] = len(probe)
                probe.append(i)
            kind_of.append(first[sig])
        probed = holder.layers = nn.ModuleList([layers[i] for i in probe])
    try:
        example = model.example_input(batch, seq_len, device=device)
        info = torchinfo.summary(model, input_data=[example], depth=depth, verbose=0, device=device)
    finally:
        if isinstance(layers, nn.ModuleList):
            holder.layers = layers
    counts = module_params(model)
    paths = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(module), prefix)
    if isinstance(layers, nn.ModuleList):
        paths[id(probed)] = f"{base}layers"  # the walked list stands for the whole one
    owner = {}  # module id → representative position, for every module inside a probed layer
    for k, i in enumerate(probe):
        for m in layers[i].modules():
            owner.setdefault(id(m), k)
    before, blocks, after = [], [[] for _ in probe], []
    for row in info.summary_list:
        k = owner.get(id(row.module))
        (blocks[k] if k is not None else after if any(blocks) else before).append(row)
    macs = [sum(r.macs for r in block if r.is_leaf_layer) for block in blocks]
    extra = sum(macs[k] for i, k in enumerate(kind_of) if probe[k] != i)

    def rows(infos: list, index: int | None = None) -> list[LayerRow]:
        out = []
        for layer in infos:
            if layer.depth > depth:
                continue
            path = paths.get(id(layer.module), "")
            name = layer.var_name if layer.depth else "(model)"
            if index is not None and layers is not None:
                rep = f"{base}layers.{probe[kind_of[index]]}"
                path = f"{base}layers.{index}" + path[len(rep):] if path.startswith(rep) else path
                if layer.module is layers[probe[kind_of[index]]]:
                    name = str(index)
            own = counts.get(path, ModuleParams(layer.num_params, layer.num_params, []))
            out.append(LayerRow(layer.depth, name, layer.class_name, list(layer.output_size or []), own.params,
                                own.new_params, own.tied_to))
        return out

    table = rows(before) + [r for i, k in enumerate(kind_of) for r in rows(blocks[k], i)] + rows(after)
    return table, int(info.total_mult_adds + extra)
