"""Generated ListOps (Nangia & Bowman, 2018; the LRA generator's rules): the value of a
nested expression over digits, a 10-way classification.

    [MAX 2 9 [MIN 4 7 ] 0 ]   →   9

Operators: MIN, MAX, MED (median; the lower-middle mean, floored, for an even count),
SM (sum mod 10). The root is an operator; below it each node becomes an operator with
probability 0.25 (never at max_depth) with 2 … max_args arguments, otherwise a digit.
Expressions are redrawn until their length lies in min_len … max_len tokens.

A language model or a sequence model answers as every `SequenceClassification` does
(pulse/tasks/classify.py): 16 token ids in, 10 classes out.

# b batch · t time · d model · v vocabulary (16)
"""

from __future__ import annotations

import random

import numpy as np

from pulse.specs.tasks import ListOpsSpec
from pulse.tasks.classify import SequenceClassification

PAD = 0
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VOCAB = ["<pad>", *(str(d) for d in range(10)), *OPERATORS, END]
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}
NUM_CLASSES = 10
OPERATOR_P = 0.25


class _TooLong(Exception):
    pass


def _apply(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    s = sorted(args)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


def _node(rng: random.Random, depth: int, spec: ListOpsSpec, out: list[str]) -> int:
    """Append one node's tokens to `out` and return its value."""
    if depth > 1 and (depth >= spec.max_depth or rng.random() >= OPERATOR_P):
        value = rng.randrange(10)
        out.append(str(value))
        return value
    op = rng.choice(OPERATORS)
    out.append(op)
    args = []
    for _ in range(rng.randint(2, spec.max_args)):
        args.append(_node(rng, depth + 1, spec, out))
        if len(out) > spec.max_len:
            raise _TooLong
    out.append(END)
    return _apply(op, args)


def expression(rng: random.Random, spec: ListOpsSpec) -> tuple[list[str], int]:
    """One expression within the length range, and its value."""
    while True:
        tokens: list[str] = []
        try:
            value = _node(rng, 1, spec, tokens)
        except _TooLong:
            continue
        if spec.min_len <= len(tokens) <= spec.max_len:
            return tokens, value


def evaluate(tokens: list[str]) -> int:
    """The value of a token list, computed independently of the generator (a stack machine)."""
    stack: list[list] = []
    result = None
    for tok in tokens:
        if tok in OPERATORS:
            stack.append([tok])
            continue
        value = _apply(stack[-1][0], stack.pop()[1:]) if tok == END else int(tok)
        if stack:
            stack[-1].append(value)
        else:
            result = value
    return result


class ListOps(SequenceClassification):
    """ListOps classification; accuracy of the predicted value."""

    kind = "listops"
    vocab_size = len(VOCAB)
    num_classes = NUM_CLASSES

    def size(self, split: str) -> int:
        return self.spec.num_train if split == "train" else self.spec.num_test

    def example(self, split: str, index: int) -> tuple[list[str], int]:
        """Expression `index` of a split: its own random stream, so any example can be drawn alone."""
        return expression(random.Random(f"listops:{self.spec.seed}:{split}:{index}"), self.spec)

    def encoded(self, split: str, index: int) -> tuple[np.ndarray, int]:
        tokens, value = self.example(split, index)
        return np.array([TOKEN_ID[tok] for tok in tokens], dtype=np.int64), value
