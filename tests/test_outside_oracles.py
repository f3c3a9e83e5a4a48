"""PULSE's existing recurrent ops against outside oracles: fla-core 0.6.0's plain-PyTorch `naive.py` files, written
by others, loaded by path (`oracles.fla_naive`: no fla package, no Triton, every CPU). Each test compares values and
gradients, with respect to every input, in float64 to 1e-8, final states included.

fla's naive files cast to float32 (`.float()`, `.to(torch.float32)`, `dtype=torch.float32`). The oracles run under
`_Float32IsFloat64`, a torch function mode that turns each of those into float64 and changes nothing else, so the
references compute their own arithmetic in float64 and a 1e-8 comparison means something.

Conventions, once for all tests below (each test states what else it maps):
- layouts: PULSE's ops take (b, h, t, ·); fla's delta_rule and dplr files take the same, its gated_delta_rule, kda,
  gated_delta_product, simple_gla and linear_attn files take (b, t, h, ·) — the test transposes dims 1 and 2;
- scale: fla multiplies q by K^−½ inside (its default, or the `scale` passed); PULSE's ops take q already scaled
  (its blocks divide q by √k), so PULSE is given q·K^−½ while the oracle is given q;
- gates are log-space on both sides (PULSE's log_decay / log_alpha / log_w = fla's g / gk, all ≤ 0);
- states are k × v on both sides (S ∈ ℝ^{k×v}, o_t = S_tᵀ q_t), so initial and final states need no transpose.
Sizes are tiny and awkward: b = 2, h = 2, t = 20, k = 8, v = 6 (k ≠ v catches a transposed state) and chunks of 7,
which divide none of 20, 40, 60.

# b batch · h heads · t time · k key dim · v value dim · m Householder steps · s SSD state · p SSD head width
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from oracles import fla_naive
from pulse.blocks.mixers.deltanet import GatedDeltaNet
from pulse.blocks.mixers.deltaproduct import GatedDeltaProduct
from pulse.blocks.mixers.kda import KimiDeltaAttention
from pulse.ops.delta_rule import delta_rule, recurrent_delta_rule
from pulse.ops.generalized_delta import generalized_delta, kda_rule, recurrent_generalized_delta
from pulse.ops.linear_attention import linear_attention, recurrent_linear_attention
from pulse.ops.ssd import as_gla, recurrent_ssd, ssd

F64 = torch.float64
B, H, T, K, V, CHUNK = 2, 2, 20, 8, 6, 7
TOL = 1e-8


class _Float32IsFloat64(TorchFunctionMode):
    """Every float32 a function asks for becomes float64: `Tensor.float()`, `.to(torch.float32)` and
    `dtype=torch.float32` (factories included). The handler runs with the mode off, so it does not recurse."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.float:
            return args[0].to(F64)
        args = tuple(F64 if a is torch.float32 else a for a in args)
        kwargs = {n: F64 if a is torch.float32 else a for n, a in (kwargs or {}).items()}
        return func(*args, **kwargs)


def oracle(fn: Callable, *args, **kwargs):
    with _Float32IsFloat64():
        return fn(*args, **kwargs)


def pick(form: str, chunked: Callable, recurrent: Callable) -> Callable:
    """The op under test: the dispatching (chunked, on the CPU) form at chunk 7, or the per-token loop."""
    return (lambda *a, **kw: chunked(*a, chunk_size=CHUNK, **kw)) if form == "chunked" else recurrent


def bt(x: Tensor) -> Tensor:
    """(b, h, t, ·) ↔ (b, t, h, ·)."""
    return x.transpose(1, 2)


def leaf(x: Tensor) -> Tensor:
    return x.detach().to(F64).requires_grad_(True)


def delta_inputs(gen: torch.Generator, *, t: int = T, gated: bool = False) -> dict[str, Tensor]:
    """q, unit keys (as the blocks make them), v, β ∈ (0, 1), a k × v initial state and, gated, a log decay."""
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=F64)  # noqa: E731
    x = {"q": rand(B, H, t, K), "k": F.normalize(rand(B, H, t, K), dim=-1), "v": rand(B, H, t, V),
         "beta": torch.rand(B, H, t, generator=gen, dtype=F64), "state": rand(B, H, K, V)}
    if gated:
        x["g"] = -torch.rand(B, H, t, generator=gen, dtype=F64)
    return {n: leaf(z) for n, z in x.items()}


def log_w(gen: torch.Generator, strong: bool) -> Tensor:
    """Per-channel log decays (b, h, t, k); `strong` drives channel 0 past e^{−400} even in the shortest chunk the
    generalized rule falls back to (3 tokens from 7), so its chunks take their pairwise (unfactored) form."""
    g = -3 * torch.rand(B, H, T, K, generator=gen, dtype=F64)
    if strong:
        g[..., 0] -= 150
    return g


def check(pulse: Callable, fla: Callable, inputs: dict[str, Tensor], gen: torch.Generator) -> None:
    """`pulse(**inputs)` and `fla(**inputs)` (tuples of tensors, same layout) agree to 1e-8 in values and in the
    gradients of a random linear function of all outputs with respect to every input."""
    got, want = pulse(**inputs), fla(**inputs)
    assert len(got) == len(want)
    for i, (a, e) in enumerate(zip(got, want)):
        assert a.dtype == e.dtype == F64, f"output {i}: {a.dtype} vs {e.dtype}"
        torch.testing.assert_close(a, e, rtol=TOL, atol=TOL, msg=lambda m, i=i: f"output {i}: {m}")
    weights = [torch.randn(e.shape, generator=gen, dtype=F64) for e in want]
    grads = []
    for outs in (got, want):
        loss = sum((z * w).sum() for z, w in zip(outs, weights))
        found = torch.autograd.grad(loss, list(inputs.values()), allow_unused=True)
        grads.append([torch.zeros_like(x) if d is None else d for d, x in zip(found, inputs.values())])
    for name, a, e in zip(inputs, *grads):
        torch.testing.assert_close(a, e, rtol=TOL, atol=TOL, msg=lambda m, name=name: f"d/d{name}: {m}")


@pytest.mark.parametrize("reference", ["delta_rule_recurrence", "delta_rule_chunkwise"])
@pytest.mark.parametrize("form", ["chunked", "recurrent"])
def test_delta_rule_is_fla_delta_rule(form, reference):
    """The delta rule (α = 1) against fla's `delta_rule_recurrence` and its chunkwise (UT) `delta_rule_chunkwise`
    (zero initial state; its chunk must divide t: 5, where PULSE's 7 does not): both (b, h, t, ·), β (b, h, t), state
    k × v; fla scales q by K^−½ inside. PULSE's `delta_rule` (the chunked WY form on the CPU) and its per-token loop."""
    naive, op = getattr(fla_naive("delta_rule"), reference), pick(form, delta_rule, recurrent_delta_rule)
    chunkwise = reference == "delta_rule_chunkwise"

    def pulse(q, k, v, beta, state=None):
        return op(q * K**-0.5, k, v, beta, None, state)

    def fla(q, k, v, beta, state=None):
        if chunkwise:
            return oracle(naive, q, k, v, beta, chunk_size=5)
        return oracle(naive, q, k, v, beta, initial_state=state, output_final_state=True)

    gen = torch.Generator().manual_seed(0)
    inputs = delta_inputs(gen)
    if chunkwise:
        del inputs["state"]
    check(pulse, fla, inputs, gen)


@pytest.mark.parametrize("reference", ["naive_recurrent_gated_delta_rule", "naive_chunk_gated_delta_rule"])
@pytest.mark.parametrize("form", ["chunked", "recurrent"])
def test_gated_delta_rule_is_fla_gated_delta_rule(form, reference):
    """The gated delta rule as Gated DeltaNet calls it, `delta_rule(q, k, v, β, log α, S₀)`, against fla's
    `naive_recurrent_gated_delta_rule` and `naive_chunk_gated_delta_rule` (chunk 7, padded there too): fla takes
    (b, t, h, ·), β and g (b, t, h) with g = PULSE's log α, the decay applied before the correction on both sides."""
    naive = getattr(fla_naive("gated_delta_rule"), reference)
    op = pick(form, delta_rule, recurrent_delta_rule)

    def pulse(q, k, v, beta, state, g):
        return op(q * K**-0.5, k, v, beta, g, state)

    def fla(q, k, v, beta, state, g):
        o, s = oracle(naive, bt(q), bt(k), bt(v), beta=bt(beta), g=bt(g), initial_state=state,
                      output_final_state=True, **({"chunk_size": CHUNK} if "chunk" in reference else {}))
        return bt(o), s

    gen = torch.Generator().manual_seed(2)
    check(pulse, fla, delta_inputs(gen, gated=True), gen)


@pytest.mark.parametrize("strong", [False, True])
@pytest.mark.parametrize("form", ["kda_rule", "step"])
def test_kda_is_fla_kda(form, strong):
    """KDA, S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ, against fla's `naive_recurrent_kda`: fla takes
    (b, t, h, ·), g = PULSE's log α (b, t, h, k), β (b, t, h). PULSE's `kda_rule` (the generalized rule, chunked, with
    w = α, a = −β k, b = k ⊙ α and the write β k) and the form KDA's `step` runs (`recurrent_generalized_delta` with
    the same mapping). `strong` sends the chunks through the generalized rule's pairwise form."""
    naive = fla_naive("kda")

    def pulse(q, k, v, beta, state, g):
        if form == "kda_rule":
            return kda_rule(q * K**-0.5, k, v, beta, g, state, chunk_size=CHUNK)
        bk = beta.unsqueeze(-1) * k
        return recurrent_generalized_delta(q * K**-0.5, bk, v, -bk, k * g.exp(), g, state)

    def fla(q, k, v, beta, state, g):
        o, s = oracle(naive.naive_recurrent_kda, bt(q), bt(k), bt(v), bt(g), bt(beta), initial_state=state,
                      output_final_state=True)
        return bt(o), s

    gen = torch.Generator().manual_seed(3)
    inputs = delta_inputs(gen)
    inputs["g"] = leaf(log_w(gen, strong))
    check(pulse, fla, inputs, gen)


@pytest.mark.parametrize("strong", [False, True])
@pytest.mark.parametrize("form", ["chunked", "recurrent"])
def test_generalized_delta_is_fla_dplr_recurrence(form, strong):
    """The generalized delta rule S_t = (Diag(w_t) + a_t b_tᵀ) S_{t−1} + k_t v_tᵀ against fla's `dplr_recurrence`,
    S_t = Diag(e^{gk_t}) S_{t−1} + β_t (α_tᵀ S_{t−1}) + k_t v_tᵀ: both (b, h, t, ·), gk = PULSE's log w, and the
    names cross — fla's α (the read direction) is PULSE's b, fla's β (the write-back direction) is PULSE's a.
    a and b are independent random vectors (a, b, w, k, v, q, S₀ all differentiated)."""
    naive = fla_naive("generalized_delta_rule/dplr")
    op = pick(form, generalized_delta, recurrent_generalized_delta)

    def pulse(q, k, v, a, b, log_w, state):
        return op(q * K**-0.5, k, v, a, b, log_w, state)

    def fla(q, k, v, a, b, log_w, state):
        return oracle(naive.dplr_recurrence, q, k, v, alpha=b, beta=a, gk=log_w, initial_state=state,
                      output_final_state=True)

    gen = torch.Generator().manual_seed(4)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=F64)  # noqa: E731
    inputs = {"q": rand(B, H, T, K), "k": rand(B, H, T, K) / 2, "v": rand(B, H, T, V), "a": -rand(B, H, T, K) / 3,
              "b": rand(B, H, T, K) / 3, "log_w": log_w(gen, strong), "state": rand(B, H, K, V)}
    check(pulse, fla, {n: leaf(z) for n, z in inputs.items()}, gen)


def micro(q: Tensor, g: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """DeltaProduct's layout of m micro-steps per token, token-major (as `GatedDeltaProduct._micro` lays it out): q
    (b, h, t, k) only on each token's last micro-step, the log decay (b, h, t) only on its first."""
    return F.pad(q.unsqueeze(3), (0, 0, m - 1, 0)).flatten(2, 3), F.pad(g.unsqueeze(-1), (0, m - 1)).flatten(2)


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("form", ["chunked", "recurrent"])
def test_deltaproduct_is_fla_gated_delta_product(form, m):
    """Gated DeltaProduct's rule — the delta rule over m micro-steps a token, decay on the first, q read at the last
    (`micro`) — against fla's `naive_recurrent_gated_delta_product`: q (b, t, h, k), k (b, t·m, h, k), v (b, t·m, h, v),
    β (b, t·m, h) token-major like PULSE's micro-steps, g (b, t, h) = PULSE's log α per token; scale K^−½ passed."""
    naive = fla_naive("gated_delta_product")
    op = pick(form, delta_rule, recurrent_delta_rule)

    def pulse(q, k, v, beta, state, g):
        q_m, g_m = micro(q * K**-0.5, g, m)
        o, s = op(q_m, k, v, beta, g_m, state)
        return o[:, :, m - 1 :: m], s

    def fla(q, k, v, beta, state, g):
        o, s = oracle(naive.naive_recurrent_gated_delta_product, bt(q), bt(k), bt(v), bt(g), bt(beta),
                      scale=K**-0.5, initial_state=state, output_final_state=True, num_householder=m)
        return bt(o), s

    gen = torch.Generator().manual_seed(5)
    inputs = delta_inputs(gen, t=T * m)
    inputs["q"] = leaf(torch.randn(B, H, T, K, generator=gen, dtype=F64))
    inputs["g"] = leaf(-torch.rand(B, H, T, generator=gen, dtype=F64))
    check(pulse, fla, inputs, gen)


def test_deltaproduct_documents_are_fla_cu_seqlens():
    """Document starts in DeltaProduct's micro layout (a reset on each token's first micro-step) against fla's
    `cu_seqlens` (one flat row, every sequence from a zero state): b = 1, documents of 7, 9 and 4 tokens."""
    naive, m, bounds = fla_naive("gated_delta_product"), 2, [0, 7, 16, 20]
    resets = torch.zeros(1, T * m, dtype=torch.bool)
    resets[0, [s * m for s in bounds[1:-1]]] = True
    gen = torch.Generator().manual_seed(6)

    def pulse(q, k, v, beta, g):
        q_m, g_m = micro(q * K**-0.5, g, m)
        o, s = delta_rule(q_m, k, v, beta, g_m, None, resets, chunk_size=CHUNK)
        return o[:, :, m - 1 :: m], s

    def fla(q, k, v, beta, g):
        o, s = oracle(naive.naive_recurrent_gated_delta_product, bt(q), bt(k), bt(v), bt(g), bt(beta),
                      scale=K**-0.5, cu_seqlens=torch.tensor(bounds), output_final_state=True, num_householder=m)
        return bt(o), s[-1:]

    inputs = {n: leaf(z[:1]) for n, z in delta_inputs(gen, t=T * m).items() if n != "state"}
    inputs["q"] = leaf(torch.randn(1, H, T, K, generator=gen, dtype=F64))
    inputs["g"] = leaf(-torch.rand(1, H, T, generator=gen, dtype=F64))
    check(pulse, fla, inputs, gen)


@pytest.mark.parametrize("form", ["ssd", "recurrent", "as_gla"])
def test_ssd_is_fla_simple_gla(form):
    """Mamba-2's SSD, S_t = e^{Δ_t A_h} S_{t−1} + B_t (Δ_t x_t)ᵀ, y_t = S_tᵀ C_t (one group: B, C shared by the
    heads), against fla's `naive_recurrent_simple_gla`, S_t = e^{g_t} S_{t−1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t,
    by an exact map: q = C, k = B for every head (b, t, h, s), v = Δ x (b, t, h, p), g = Δ A (b, t, h), scale 1,
    state s × p = fla's K × V. The oracle gets the mapped inputs, so gradients with respect to SSD's own x, Δ, A,
    B, C, S₀ go through that map. (D skip, z gate and Δ's softplus are outside the op.) "as_gla": PULSE's own
    map (`as_gla`, its CUDA path) with the oracle as the kernel."""
    naive, s = fla_naive("simple_gla"), K

    def gla(q, k, v, g, s0):  # PULSE's (b, h, t, ·) kernel signature around the oracle
        o, st = oracle(naive.naive_recurrent_simple_gla, bt(q), bt(k), bt(v), bt(g), scale=1.0, initial_state=s0,
                       output_final_state=True)
        return bt(o), st

    def pulse(x, dt, A, Bm, Cm, state):
        if form == "as_gla":
            return as_gla(x, dt, A, Bm, Cm, state, gla)
        if form == "ssd":
            return ssd(x, dt, A, Bm, Cm, state, chunk_size=CHUNK)
        return recurrent_ssd(x, dt, A, Bm, Cm, state)

    def fla(x, dt, A, Bm, Cm, state):
        heads = lambda z: z.unsqueeze(1).expand(B, H, T, s)  # noqa: E731
        return gla(heads(Cm), heads(Bm), dt.unsqueeze(-1) * x, dt * A[:, None], state)

    gen = torch.Generator().manual_seed(7)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=F64)  # noqa: E731
    inputs = {"x": rand(B, H, T, V), "dt": F.softplus(rand(B, H, T)), "A": -torch.rand(H, generator=gen, dtype=F64)
              - 0.5, "Bm": rand(B, T, s), "Cm": rand(B, T, s), "state": rand(B, H, s, V)}
    check(pulse, fla, {n: leaf(z) for n, z in inputs.items()}, gen)


def positive_qk(gen: torch.Generator) -> dict[str, Tensor]:
    """Feature-mapped q, k > 0 (so the normaliser q · z stays away from 0), v and a k × v initial state."""
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=F64)  # noqa: E731
    return {"q": F.softplus(rand(B, H, T, K)) + 0.1, "k": F.softplus(rand(B, H, T, K)) + 0.1, "v": rand(B, H, T, V),
            "state": rand(B, H, K, V)}


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("form", ["chunked", "recurrent"])
def test_linear_attention_is_fla_linear_attn(form, normalize):
    """Linear attention against fla's `naive_recurrent_linear_attn`, (b, t, h, ·), scale K^−½ inside. Unnormalised,
    both return S_tᵀ q_t and S. Normalised, fla returns o_t / (q_t · z_t + 1e−10), z_t = z₀ + Σ_{j≤t} k_j, and the
    final (S, z) (z as (b, 1, h, k)); PULSE's op returns the numerator and den_t = q_t · z_t apart (its blocks
    divide), so PULSE's out is divided by den + 1e−10 here; z and z₀ are compared and differentiated too."""
    naive, op = fla_naive("linear_attn"), pick(form, linear_attention, recurrent_linear_attention)

    def pulse(q, k, v, state, z=None):
        r = op(q * K**-0.5, k, v, None, state, z, normalize=normalize)
        return (r.out / (r.den.unsqueeze(-1) + 1e-10), r.state, r.z) if normalize else (r.out, r.state)

    def fla(q, k, v, state, z=None):
        init = (state, z.unsqueeze(1)) if normalize else state
        o, final = oracle(naive.naive_recurrent_linear_attn, bt(q), bt(k), bt(v), initial_state=init,
                          output_final_state=True, normalize=normalize)
        return (bt(o), final[0], final[1].squeeze(1)) if normalize else (bt(o), final)

    gen = torch.Generator().manual_seed(8)
    inputs = {n: leaf(x) for n, x in positive_qk(gen).items()}
    if normalize:
        inputs["z"] = leaf(F.softplus(torch.randn(B, H, K, generator=gen, dtype=F64)))
    check(pulse, fla, inputs, gen)


@pytest.mark.parametrize("form", ["chunked", "recurrent"])
def test_decayed_linear_attention_is_fla_simple_gla(form):
    """Linear attention with a per-head decay (`log_decay`, (b, h, t)) is simple GLA: against fla's
    `naive_recurrent_simple_gla` with g = log_decay (b, t, h), scale K^−½ inside."""
    naive, op = fla_naive("simple_gla"), pick(form, linear_attention, recurrent_linear_attention)

    def pulse(q, k, v, state, g):
        r = op(q * K**-0.5, k, v, g, state)
        return r.out, r.state

    def fla(q, k, v, state, g):
        o, s = oracle(naive.naive_recurrent_simple_gla, bt(q), bt(k), bt(v), bt(g), initial_state=state,
                      output_final_state=True)
        return bt(o), s

    gen = torch.Generator().manual_seed(9)
    inputs = {n: leaf(x) for n, x in positive_qk(gen).items()}
    inputs["g"] = leaf(-torch.rand(B, H, T, generator=gen, dtype=F64))
    check(pulse, fla, inputs, gen)


def _gdn_oracle(block: GatedDeltaNet, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, ...]:
    q, k, v, beta, g, gate, _ = block._inputs(x, state["conv"])
    o, s = oracle(fla_naive("gated_delta_rule").naive_recurrent_gated_delta_rule, bt(q), bt(k), bt(v), bt(beta),
                  bt(g), scale=1.0, initial_state=state["kv"], output_final_state=True)
    return bt(o), s, gate


def _kda_oracle(block: KimiDeltaAttention, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, ...]:
    q, k, v, beta, g, gate, _ = block._kda_inputs(x, state["conv"], None)
    o, s = oracle(fla_naive("kda").naive_recurrent_kda, bt(q), bt(k), bt(v), bt(g), bt(beta), scale=1.0,
                  initial_state=state["kv"], output_final_state=True)
    return bt(o), s, gate


def _deltaproduct_oracle(block: GatedDeltaProduct, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, ...]:
    m = block.num_householder
    q_m, k, v, beta, g_m, _, gate, _ = block._micro(x, state["conv"], None)
    q, g = q_m[:, :, m - 1 :: m], g_m[:, :, ::m]
    assert torch.equal(micro(q, g, m)[0], q_m) and torch.equal(micro(q, g, m)[1], g_m), "not the `micro` layout"
    o, s = oracle(fla_naive("gated_delta_product").naive_recurrent_gated_delta_product, bt(q), bt(k), bt(v), bt(g),
                  bt(beta), scale=1.0, initial_state=state["kv"], output_final_state=True, num_householder=m)
    return bt(o), s, gate


BLOCKS = {"gated_deltanet": (GatedDeltaNet, _gdn_oracle), "kda": (KimiDeltaAttention, _kda_oracle),
          "gated_deltaproduct": (GatedDeltaProduct, _deltaproduct_oracle)}


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_blocks_compute_their_oracle(kind):
    """The ops as the blocks call them: the block's forward against fla's recurrence fed the block's own q, k, v, β
    and gates (`_inputs` / `_kda_inputs` / `_micro`; q is divided by √k there, so fla's scale is 1) and read out by
    its `_output`: outputs, final S and their gradients with respect to x and S₀ (a random conv state given)."""
    cls, rule = BLOCKS[kind]
    gen = torch.Generator().manual_seed(10)
    torch.manual_seed(10)
    block = cls(16, num_heads=H, head_dim=K, expand_v=1.0, chunk_size=CHUNK, dtype=F64)
    conv = torch.randn(block.init_state(B)["conv"].shape, generator=gen, dtype=F64)

    def pulse(x, kv):
        y, state = block(x, {"conv": conv, "kv": kv})
        return y, state["kv"]

    def fla(x, kv):
        o, s, gate = rule(block, x, {"conv": conv, "kv": kv})
        return block._output(o, gate), s

    x, kv = torch.randn(B, T, 16, generator=gen, dtype=F64), torch.randn(B, H, K, K, generator=gen, dtype=F64)
    check(pulse, fla, {"x": leaf(x), "kv": leaf(kv)}, gen)
