"""Document starts inside a window (pulse.ops.documents): the chunked forms against their per-token
references, the convolution's taps, the row-wise states, and bad input. The mixer-level property
(each document as if alone) runs over the registry in test_mixer_properties.py."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pulse
from pulse.contract import assert_close
from pulse.ops import documents
from pulse.ops.causal_conv import causal_depthwise_conv
from pulse.ops.delta_rule import chunk_delta_rule, recurrent_delta_rule
from pulse.ops.documents import RowStates, starts_mask
from pulse.ops.linear_attention import chunk_linear_attention, recurrent_linear_attention
from pulse.ops.ssd import chunk_ssd, recurrent_ssd
from pulse.specs.load import load_recipe

F64 = torch.float64


def rand(*shape, gen):
    return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_(True)


def same_values_and_grads(fast, slow, inputs):
    """fast() and slow() return tuples of tensors; compare them and the gradients of a random projection."""
    outs_f, outs_s = fast(), slow()
    weights = [torch.randn_like(o) for o in outs_f]
    def grads(outs):  # an input a start cuts off entirely (s0 before a start at 0) gets zeros
        got = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), inputs, allow_unused=True)
        return [torch.zeros_like(i) if g is None else g for g, i in zip(got, inputs)]

    grads_f, grads_s = grads(outs_f), grads(outs_s)
    for a, b in zip(outs_f, outs_s):
        assert_close(a, b, "values")
    for a, b in zip(grads_f, grads_s):
        assert_close(a, b, "gradients")


resets_strategy = st.tuples(st.integers(1, 2), st.integers(1, 40), st.integers(1, 12), st.integers(0, 2**16))


def draw_resets(b, t, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, generator=gen) < 0.2, gen


@settings(max_examples=25, deadline=None)
@given(resets_strategy, st.booleans())
def test_chunk_delta_rule_with_starts_matches_the_recurrence(sizes, gated):
    b, t, c, seed = sizes
    r, gen = draw_resets(b, t, seed)
    q, v, s0 = rand(b, 2, t, 4, gen=gen), rand(b, 2, t, 3, gen=gen), rand(b, 2, 4, 3, gen=gen)
    k = torch.nn.functional.normalize(rand(b, 2, t, 4, gen=gen), dim=-1)
    beta = torch.rand(b, 2, t, generator=gen, dtype=F64).requires_grad_(True)
    ld = (-torch.rand(b, 2, t, generator=gen, dtype=F64)).requires_grad_(True) if gated else None
    inputs = [z for z in (q, v, s0, beta, ld) if z is not None]
    same_values_and_grads(lambda: chunk_delta_rule(q, k, v, beta, ld, s0, r, chunk_size=c),
                          lambda: recurrent_delta_rule(q, k, v, beta, ld, s0, r), inputs)


@settings(max_examples=25, deadline=None)
@given(resets_strategy, st.booleans(), st.booleans())
def test_chunk_linear_attention_with_starts_matches_the_recurrence(sizes, decayed, normalize):
    b, t, c, seed = sizes
    r, gen = draw_resets(b, t, seed)
    q, k, v = rand(b, 2, t, 4, gen=gen), rand(b, 2, t, 4, gen=gen), rand(b, 2, t, 3, gen=gen)
    s0 = rand(b, 2, 4, 3, gen=gen)
    ld = (-torch.rand(b, 2, t, generator=gen, dtype=F64)).requires_grad_(True) if decayed else None
    z0 = torch.rand(b, 2, 4, generator=gen, dtype=F64) if normalize else None

    def run(fn, **kw):
        out = fn(q, k, v, ld, s0, z0, normalize=normalize, resets=r, **kw)
        return tuple(z for z in out if z is not None)

    inputs = [z for z in (q, k, v, s0, ld) if z is not None]
    same_values_and_grads(lambda: run(chunk_linear_attention, chunk_size=c),
                          lambda: run(recurrent_linear_attention), inputs)


@settings(max_examples=25, deadline=None)
@given(resets_strategy)
def test_chunk_ssd_with_starts_matches_the_recurrence(sizes):
    b, t, c, seed = sizes
    r, gen = draw_resets(b, t, seed)
    x, B, C = rand(b, 2, t, 3, gen=gen), rand(b, t, 4, gen=gen), rand(b, t, 4, gen=gen)
    s0 = rand(b, 2, 4, 3, gen=gen)
    dt = torch.rand(b, 2, t, generator=gen, dtype=F64).requires_grad_(True)
    A = -torch.rand(2, generator=gen, dtype=F64)
    same_values_and_grads(lambda: chunk_ssd(x, dt, A, B, C, s0, r, chunk_size=c),
                          lambda: recurrent_ssd(x, dt, A, B, C, s0, r), [x, dt, B, C, s0])


@settings(max_examples=25, deadline=None)
@given(resets_strategy, st.integers(2, 5))
def test_causal_conv_taps_stop_at_document_starts(sizes, width):
    b, t, _, seed = sizes
    r, gen = draw_resets(b, t, seed)
    x, w, bias, s0 = rand(b, t, 3, gen=gen), rand(3, width, gen=gen), rand(3, gen=gen), rand(b, width - 1, 3, gen=gen)
    same_values_and_grads(lambda: causal_depthwise_conv(x, w, bias, s0, r), lambda: _conv_alone(x, w, bias, s0, r),
                          [x, w, bias, s0])


def _conv_alone(x, w, bias, s0, r):
    """Each document by itself: the first continues s0, the others start from zeros."""
    outs, finals = [], []
    for row in range(x.shape[0]):
        starts = r[row].nonzero().flatten().tolist()
        bounds = sorted({0, *starts, x.shape[1]})
        state, pieces = s0[row : row + 1], []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if lo in starts:
                state = torch.zeros_like(state)
            y, state = causal_depthwise_conv(x[row : row + 1, lo:hi], w, bias, state)
            pieces.append(y)
        outs.append(torch.cat(pieces, dim=1))
        finals.append(state)
    return torch.cat(outs), torch.cat(finals)


@pytest.mark.parametrize(
    ("starts", "match"),
    [
        ([[0, 9]], "outside the window"),
        ([[-1]], "outside the window"),
        ([[4, 2]], "sorted"),
        ([[2, 2]], "sorted"),
        ([torch.tensor([1.5])], "1-D integer"),
        ([torch.tensor([[1]])], "1-D integer"),
        ([[1], [2]], "one 1-D integer tensor of start positions per batch row"),
        (torch.zeros(1, 8, dtype=torch.long), "bool mask"),
        (torch.zeros(1, 7, dtype=torch.bool), "bool mask"),
        (3, "per batch row"),
    ],
)
def test_bad_doc_starts_are_clear_errors(starts, match):
    m = pulse.build_mixer("gated_deltanet", 16)
    with pytest.raises(pulse.PulseError, match=match):
        m(torch.randn(1, 8, 16), doc_starts=starts)


def test_bad_step_starts_are_clear_errors():
    m = pulse.build_mixer("attention", 16)
    state = m.init_state(2)
    with pytest.raises(pulse.PulseError, match=r"\(2,\) bool tensor"):
        m.step(torch.randn(2, 16), state, doc_starts=torch.tensor([1, 0]))


def test_mask_and_positions_mean_the_same():
    lists = starts_mask([torch.tensor([0, 3]), [5]], 2, 6, torch.device("cpu"))
    assert lists.tolist() == [[True, False, False, True, False, False], [False] * 5 + [True]]
    assert documents.since_start(lists)[0].tolist() == [0, 1, 2, 0, 1, 2]
    assert documents.since_start(lists)[1, 5].item() == 0
    assert documents.since_start(lists)[1, 0].item() >= documents.NO_START


@pytest.mark.parametrize("kind", ["pulse", "sparse_state_attention", "hierarchical"])
def test_rows_at_different_chunk_phases_keep_row_states_and_continue_exactly(kind):
    """A chunk-recurrent mixer's rows whose last documents end at different chunk phases cannot share
    one batched state; the state is RowStates and the batch continues as each row alone would."""
    torch.manual_seed(0)
    m = pulse.build_mixer(kind, 16, dtype=F64).eval()
    c = m.chunk_size
    x, nxt = torch.randn(2, 2 * c + 3, 16, dtype=F64), torch.randn(2, c + 2, 16, dtype=F64)
    _, state = m(x, doc_starts=[[c + 1], [5]])
    assert isinstance(state, RowStates)
    y_batch, state2 = m(nxt, state)
    step_batch, _ = m.step(nxt[:, 0], state2)
    for row, starts in enumerate(([c + 1], [5])):
        _, alone = m(x[row : row + 1, starts[0] :])
        y_alone, alone2 = m(nxt[row : row + 1], alone)
        assert_close(y_batch[row : row + 1], y_alone, f"row {row} continued")
        assert_close(step_batch[row : row + 1], m.step(nxt[row : row + 1, 0], alone2)[0], f"row {row} stepped")


def test_attention_step_resets_where_told():
    """`step` with doc_starts True for a row makes that token see only itself, as a fresh sequence."""
    torch.manual_seed(0)
    m = pulse.build_mixer("attention", 16, dtype=F64)
    x = torch.randn(2, 6, 16, dtype=F64)
    _, state = m(x)
    tok = torch.randn(2, 16, dtype=F64)
    y, state = m.step(tok, state, doc_starts=torch.tensor([True, False]))
    assert_close(y[0], m(tok[:1, None])[0][0, 0], "row 0 restarted")
    assert_close(y[1], m(torch.cat((x[1:], tok[1:, None]), dim=1))[0][0, -1], "row 1 continued")
    nxt = torch.randn(2, 16, dtype=F64)
    y2, _ = m.step(nxt, state)
    assert_close(y2[0], m(torch.stack((tok[0], nxt[0]))[None])[0][0, -1], "row 0 keeps to its document")


@pytest.mark.parametrize("layout", [["pulse", "attn"], ["gdn", "attn"], ["pulse_gru", "attn"]])
@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_language_model_starts_each_document_afresh(layout, positions, tmp_path):
    """A packed window through a whole LM (every layer, learned or rotary positions): each document's
    logits as if alone, and generation after the window continues the last document as if alone."""
    path = tmp_path / "lm.toml"
    tables = "".join(f"[model.mixers.{name}]\n{MIXER_TABLES[name]}\n" for name in layout)
    path.write_text(LM_RECIPE.format(layout=json.dumps(layout), positions=positions) + tables)
    recipe = load_recipe(path)
    torch.manual_seed(0)
    lm = pulse.build_model(recipe, dtype=F64).eval()
    ids = torch.randint(0, 50, (2, 23))
    starts = [[4, 15], [0, 9, 22]]
    logits, state = lm(ids, doc_starts=starts)
    for row, row_starts in enumerate(starts):
        bounds = sorted({0, *row_starts, ids.shape[1]})
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            alone, end = lm(ids[row : row + 1, lo:hi])
            assert_close(logits[row : row + 1, lo:hi], alone, f"row {row}, document {lo}..{hi - 1}")
        step_logits, _ = lm.step(torch.tensor([7, 7]), state)
        assert_close(step_logits[row : row + 1], lm.step(torch.tensor([7]), end)[0],
                     f"row {row} continues its last document")


LM_RECIPE = """
[model]
kind = "lm"
vocab_size = 50
dim = 16
depth = 2
layout = {layout}
[model.positions]
kind = "{positions}"
"""
MIXER_TABLES = {
    "pulse": 'kind = "pulse_delta"\nnum_slots = 4\nchunk_size = 4',
    "pulse_gru": 'kind = "pulse"\ngate = "gru"\nnum_slots = 4\nchunk_size = 4',
    "gdn": 'kind = "gated_deltanet"\nchunk_size = 4\nhead_dim = 4',
    "attn": 'kind = "attention"',
}


def test_attention_reads_long_windows_block_by_block_as_each_document_alone():
    """Windows longer than one block of queries (512): each block reads only the keys from its earliest
    document start, and every position still equals its document alone; so does a window continuing a cache."""
    from pulse import contract

    torch.manual_seed(0)
    m = pulse.build_mixer("attention", 16, num_heads=2, dtype=F64)
    x = torch.randn(2, 1300, 16, dtype=F64)
    contract.check_documents(m, x, [[0, 300, 700, 1299], [511, 512, 1024]], torch.randn(2, 3, 16, dtype=F64))
    _, state = m(x[:, :600])
    y, _ = m(x[:, 600:], state, doc_starts=[[100], [700 - 600]])
    for row, start in ((0, 700), (1, 700)):
        assert_close(y[row : row + 1, start - 600 :], m(x[row : row + 1, start:])[0], f"row {row} after its start")
    assert_close(y[0:1, :100], m(x[:1, :700])[0][:, 600:], "row 0 before its start continues the cache")
