"""The [task] section of a recipe: what to train and evaluate on.

Every task is generated locally from its seed or read from local files; nothing is
downloaded. Each spec is one registered `task` kind, derived from `TaskSpec` or `GeneratedSpec`
(pulse/specs/task_base.py: the fields they share, and the tiny example each gives the task contract).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from pulse.specs.task_base import GeneratedSpec, GivenPath, Pattern, TaskSpec, TestCount, TrainCount


class MqarSpec(GeneratedSpec):
    """Multi-query associative recall (Zoology): recall the value of each queried key."""

    kind: Literal["mqar"] = "mqar"
    vocab_size: int = Field(8192, ge=4, description="token vocabulary; lower half keys, upper half values")
    seq_len: int = Field(64, ge=4, description="tokens per example (even)")
    num_kv_pairs: int = Field(4, ge=1, description="distinct key-value pairs at the start of each example")
    num_train: TrainCount = Field(20_000, description="training examples (a fixed set, reshuffled every epoch)")
    power_a: float = Field(0.01, gt=0, description="power-law exponent α of the key→query distance distribution")
    random_non_queries: bool = Field(
        True, description="fill non-query positions after the pairs with random tokens instead of 0"
    )
    mixture: list[tuple[int, int, int]] | None = Field(
        None, description="train on a mixture of settings instead, [[seq_len, num_kv_pairs, examples], …] (Zoology's "
        "protocol), each padded at the end to seq_len; num_train is then their total and the test set stays at "
        "seq_len/num_kv_pairs")
    example_settings = {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2, "num_train": 8, "num_test": 6}

    @model_validator(mode="after")
    def _check(self) -> "MqarSpec":
        for seq, pairs, count in self.mixture or ():
            if count < 1 or seq > self.seq_len or seq % 2 or 4 * pairs > seq or not 1 <= pairs < self.vocab_size // 2:
                raise ValueError(
                    f"mixture entry [{seq}, {pairs}, {count}] needs an even seq_len ≤ task.seq_len ({self.seq_len}), "
                    f"1 ≤ num_kv_pairs ≤ seq_len/4 and < vocab_size/2 ({self.vocab_size // 2}), and examples ≥ 1"
                )
        if self.seq_len % 2:
            raise ValueError(f"seq_len ({self.seq_len}) must be even; use {self.seq_len + 1}")
        if self.vocab_size <= self.seq_len:
            raise ValueError(f"vocab_size ({self.vocab_size}) must exceed seq_len ({self.seq_len})")
        if 4 * self.num_kv_pairs > self.seq_len:
            raise ValueError(
                f"num_kv_pairs ({self.num_kv_pairs}) needs seq_len ≥ 4·num_kv_pairs = {4 * self.num_kv_pairs}; "
                "raise seq_len or lower num_kv_pairs"
            )
        if self.num_kv_pairs > self.vocab_size // 2 - 1:
            raise ValueError(
                f"num_kv_pairs ({self.num_kv_pairs}) exceeds the {self.vocab_size // 2 - 1} available keys"
            )
        return self


class SelectiveCopySpec(GeneratedSpec):
    """Selective copying (H3/Mamba): reproduce the scattered content tokens, in order, after a marker."""

    kind: Literal["selective_copy"] = "selective_copy"
    vocab_size: int = Field(16, ge=3, description="vocabulary; the two highest ids are the blank and the copy marker")
    seq_len: int = Field(256, ge=4, description="total tokens per example: content region, marker, answer region")
    num_tokens: int = Field(16, ge=1, description="content tokens to copy")
    num_train: TrainCount = Field(12_800, description="training examples (a fixed set)")
    example_settings = {"vocab_size": 8, "seq_len": 16, "num_tokens": 3, "num_train": 8, "num_test": 6}

    @model_validator(mode="after")
    def _check(self) -> "SelectiveCopySpec":
        if self.seq_len <= 2 * self.num_tokens + 1:
            raise ValueError(
                f"seq_len ({self.seq_len}) must exceed 2·num_tokens + 1 = {2 * self.num_tokens + 1}; raise seq_len"
            )
        return self


class CopySpec(GeneratedSpec):
    """The NTM copy task: read random bit vectors, then a delimiter, then write them back."""

    kind: Literal["copy"] = "copy"
    bits: int = Field(8, ge=1, le=12, description="bits per vector")
    min_len: int = Field(1, ge=1, description="shortest sequence of vectors")
    max_len: int = Field(20, ge=1, description="longest sequence of vectors in training")
    eval_min_len: int | None = Field(None, ge=1, description="shortest test sequence (default min_len)")
    eval_max_len: int | None = Field(
        None, ge=1, description="longest test sequence (default max_len; 2·max_len tests generalisation)"
    )
    num_train: TrainCount = 100_000
    example_settings = {"bits": 3, "max_len": 4, "eval_max_len": 6, "num_train": 8, "num_test": 6}

    @model_validator(mode="after")
    def _check(self) -> "CopySpec":
        if self.min_len > self.max_len:
            raise ValueError(f"min_len ({self.min_len}) exceeds max_len ({self.max_len})")
        lo, hi = self.test_lengths()
        if lo > hi:
            raise ValueError(f"eval_min_len ({lo}) exceeds eval_max_len ({hi})")
        return self

    def test_lengths(self) -> tuple[int, int]:
        return (self.eval_min_len or self.min_len, self.eval_max_len or self.max_len)


class ListOpsSpec(GeneratedSpec):
    """Generated ListOps: the value (0-9) of nested MIN/MAX/MED/SM expressions over digits."""

    kind: Literal["listops"] = "listops"
    min_len: int = Field(50, ge=3, description="fewest tokens per expression")
    max_len: int = Field(200, ge=3, description="most tokens per expression")
    max_depth: int = Field(
        10, ge=2, description="deepest level of the tree (the root operator is level 1, digits sit at most here)"
    )
    max_args: int = Field(10, ge=2, description="most arguments per operator")
    example_settings = {"min_len": 5, "max_len": 20, "max_depth": 3, "max_args": 3, "num_train": 8, "num_test": 6}

    @model_validator(mode="after")
    def _check(self) -> "ListOpsSpec":
        if self.min_len > self.max_len:
            raise ValueError(f"min_len ({self.min_len}) exceeds max_len ({self.max_len})")
        longest = 1
        for _ in range(self.max_depth - 1):
            longest = 2 + self.max_args * longest
        if longest < self.min_len:
            raise ValueError(
                f"expressions of max_depth {self.max_depth} with max_args {self.max_args} have at most {longest} "
                f"tokens, fewer than min_len {self.min_len}; raise max_depth or max_args, or lower min_len"
            )
        return self


class TextSpec(TaskSpec):
    """Language modelling over a local corpus (text files, JSON Lines, Parquet, a saved dataset), tokenized once
    into a cached token file; reports loss per token, perplexity and bits per byte."""

    kind: Literal["text"] = "text"
    path: GivenPath | None = Field(
        None, description="a file, a directory, a glob, or a saved dataset folder; omit for the Python standard "
                          "library's own sources"
    )
    format: Literal["auto", "text", "jsonl", "parquet", "dataset"] = Field(
        "auto", description="how to read `path`: auto (by suffix; a folder with dataset_info.json is a dataset), "
                            "text (one file = one document), jsonl, parquet (one line / row = one document), dataset"
    )
    text_field: str = Field("text", min_length=1, description="the JSON field, Parquet column or dataset column")
    pattern: Pattern = Field("**/*", description="files to read under a directory `path`")
    tokenizer: str = Field("bytes", min_length=1,
                           description="\"bytes\", or a Hugging Face tokenizer.json (or a folder holding one)")
    invalid_utf8: Literal["skip", "refuse"] = Field(
        "skip", description="a document that is not UTF-8: skip it (and count it), or refuse the corpus"
    )
    seq_len: int = Field(256, ge=1, description="tokens of context per example")
    val_fraction: float = Field(0.05, gt=0, lt=1,
                                description="share of the documents held out for validation (seeded, by document)")
    eval_windows: int = Field(256, ge=1, description="validation windows of seq_len tokens used by evaluation")
    max_bytes: int | None = Field(None, ge=1, description="cap on the training text read, in bytes (whole documents)")
    max_tokens: int | None = Field(None, ge=2, description="cap on the training tokens (the packed stream's prefix)")
    reset_at_eos: bool = Field(
        True, description="every layer starts afresh at each eos of the packed stream (the eos opens the next "
                          "document), so no state or attention crosses documents; false lets them run on"
    )
    cache_dir: str | None = Field(None, description="where tokenized corpora are kept (default: $PULSE_CACHE, else "
                                                    "~/.cache/pulse/corpora)")
    seed: int = Field(0, ge=0, description="seed of the train/validation split")

    @classmethod
    def example(cls, folder: Path) -> dict[str, Any]:
        """Six short documents; windows of 16 tokens, two documents held out."""
        (folder / "corpus").mkdir()
        for i in range(6):
            words = " ".join(f"word{(i * 7 + j) % 13}" for j in range(40))
            (folder / "corpus" / f"doc{i}.txt").write_text(f"Document {i}. {words}.\n")
        return {"task": {"kind": "text", "path": str(folder / "corpus"), "seq_len": 16, "val_fraction": 0.3,
                         "eval_windows": 6, "cache_dir": str(folder / "cache")}}


class PasskeySpec(GeneratedSpec):
    """Passkey retrieval: a number hidden at a depth of filler text, asked for at the end (exact match)."""

    kind: Literal["passkey"] = "passkey"
    seq_len: int = Field(1024, ge=128, description="tokens per example, the answer included")
    digits: int = Field(5, ge=1, le=12, description="digits of the pass key")
    depth_min: float = Field(0.0, ge=0, le=1, description="shallowest depth of the key (0: right at the start)")
    depth_max: float = Field(1.0, ge=0, le=1, description="deepest depth of the key (1: just before the question)")
    tokenizer: str = Field("bytes", min_length=1,
                           description="\"bytes\", or a Hugging Face tokenizer.json (or a folder holding one)")
    num_train: TrainCount = 100_000
    num_test: TestCount = Field(200, description="held-out examples (depths spread evenly)")
    seed: int = Field(0, ge=0, description="seed of the keys and depths")
    example_settings = {"seq_len": 128, "digits": 2, "num_train": 8, "num_test": 6}

    @model_validator(mode="after")
    def _check(self) -> "PasskeySpec":
        if self.depth_min > self.depth_max:
            raise ValueError(f"depth_min ({self.depth_min}) exceeds depth_max ({self.depth_max})")
        return self


class LraTextSpec(TaskSpec):
    """LRA Text: byte-level classification of local documents (IMDb's aclImdb/, or one folder per label)."""

    kind: Literal["lra_text"] = "lra_text"
    path: GivenPath = Field(
        ...,
        description="a local folder: IMDb's aclImdb/ (train|test/pos|neg/*.txt; unsup/ is ignored), or one "
                    "subfolder of text files per label (labels: the sorted folder names), optionally under train/ "
                    "and test/",
    )
    max_len: int = Field(4000, ge=1, description="bytes read from the start of each document (LRA: 4,000)")
    pattern: Pattern = Field("*.txt", description="files that are documents, in each label folder")
    test_fraction: float = Field(
        0.1, gt=0, lt=1,
        description="share of each label's documents held out for testing when the folder has no train/ and test/",
    )
    eval_examples: int | None = Field(
        None, ge=1, description="held-out documents scored, spread evenly over the test split; omit for all (LRA)"
    )
    seed: int = Field(0, ge=0, description="seed of the train/test split of a folder without train/ and test/")

    @classmethod
    def example(cls, folder: Path) -> dict[str, Any]:
        """Two label folders of four documents each; one of each held out."""
        for label in ("neg", "pos"):
            (folder / "reviews" / label).mkdir(parents=True)
            for i in range(4):
                (folder / "reviews" / label / f"{i}.txt").write_text(f"a {label} review, number {i}" + "!" * i)
        return {"task": {"kind": "lra_text", "path": str(folder / "reviews"), "max_len": 32, "test_fraction": 0.25}}


class LraRetrievalSpec(GeneratedSpec):
    """LRA Retrieval: are two byte-level documents related? LRA's AAN pairs from local files, or generated pairs."""

    kind: Literal["lra_retrieval"] = "lra_retrieval"
    path: GivenPath | None = Field(
        None,
        description="LRA's AAN data: a folder holding new_aan_pairs.train.tsv and new_aan_pairs.test.tsv (or "
                    ".eval.tsv), or that common prefix (…/new_aan_pairs); omit for generated pairs",
    )
    held_out: Literal["test", "eval"] = Field(
        "test", description="the AAN file held out for accuracy: test (LRA's reported number) or eval (validation)"
    )
    max_len: int = Field(4000, ge=2, description="bytes read from the start of each document (LRA: 4,000)")
    eval_examples: int | None = Field(
        None, ge=1, description="held-out AAN pairs scored, spread evenly over the file; omit for all (LRA)"
    )
    num_train: TrainCount = Field(20_000, description="generated training pairs (each from its own index)")
    num_test: TestCount = Field(1_000, description="generated held-out pairs")
    num_topics: int = Field(32, ge=2, le=1024, description="generated sources; a pair is related when both "
                                                           "documents come from the same one")
    lexicon_size: int = Field(512, ge=16, le=8192, description="made-up words shared by every generated source")
    topic_strength: float = Field(
        0.15, gt=0, le=1,
        description="share of a generated document's word transitions drawn from its source's own bigrams (the "
                    "rest follow the grammar all sources share); lower spreads the evidence thinner",
    )
    seed: int = Field(0, ge=0,
                      description="seed of the generated sources and pairs (the test set uses a separate stream)")
    example_settings = {"max_len": 48, "num_train": 8, "num_test": 6, "num_topics": 4, "lexicon_size": 32}


class PathfinderSpec(GeneratedSpec):
    """LRA Pathfinder / Path-X: do the two dots sit on the two ends of one dashed curve? Generated images."""

    kind: Literal["pathfinder"] = "pathfinder"
    resolution: Literal[32, 64, 128] = Field(
        32, description="image side in pixels; the sequence is resolution² pixels (LRA Pathfinder: 32, Path-X: 128)"
    )
    contour_length: int = Field(
        6, ge=2, le=16,
        description="paddles per contour (each 4 px at resolution 32, scaled with it), the difficulty: a curve of "
                    "6 spans about 22 px of a 32 px image; longer curves leave room for fewer distractors",
    )
    distractors: int = Field(
        2, ge=0, le=32, description="contours that touch no dot in a negative image; every image draws distractors + 2"
    )
    max_turn: float = Field(40.0, gt=0, le=90, description="largest change of direction between paddles, in degrees")
    example_settings = {"contour_length": 3, "distractors": 0, "num_train": 8, "num_test": 6}


class LraImageSpec(TaskSpec):
    """LRA Image: 10-way classification of 32×32 grey images as 1,024-pixel sequences (CIFAR-10, or shapes)."""

    kind: Literal["lra_image"] = "lra_image"
    path: GivenPath | None = Field(
        None,
        description="CIFAR-10's binary version: the cifar-10-batches-bin folder of cifar-10-binary.tar.gz, a folder "
                    "holding it, or one batch file (its last num_test records are the test split); omit for "
                    "generated shapes",
    )
    num_train: int | None = Field(
        None, ge=1,
        description="training examples: generated (default 10,000), or the first CIFAR records (default all)",
    )
    num_test: int | None = Field(
        None, ge=1,
        description="held-out examples: generated (default 1,000), or the first CIFAR test records (default all; "
                    "for one batch file, a tenth of it)",
    )
    noise: float = Field(12.0, ge=0, le=128, description="standard deviation of the generated images' pixel noise")

    @classmethod
    def example(cls, folder: Path) -> dict[str, Any]:
        """One CIFAR-10 binary batch file of 12 random records (label byte, then R, G, B planes); 4 held out."""
        records = np.random.default_rng(0).integers(0, 256, size=(12, 1 + 3 * 32 * 32), dtype=np.uint8)
        records[:, 0] = np.arange(12) % 10
        (folder / "data_batch_1.bin").write_bytes(records.tobytes())
        return {"task": {"kind": "lra_image", "path": str(folder / "data_batch_1.bin"), "num_test": 4}}


BABI_GENERATED = (1, 2, 3, 6, 15)


class BabiSpec(TaskSpec):
    """The bAbI question-answering tasks: a story, a question about it, a one-word answer (a class)."""

    kind: Literal["babi"] = "babi"
    task_id: int = Field(
        1, ge=1, le=20,
        description="which of the 20 tasks (qa1 … qa20); without `path`, one of the generated ones: 1 (single "
                    "supporting fact), 2 (two), 3 (three), 6 (yes/no questions), 15 (basic deduction)",
    )
    path: GivenPath | None = Field(
        None,
        description="Facebook's bAbI release (the tasks_1-20_v1-2 folder) or one of its folders (en, en-10k, hn, "
                    "…) holding qa{N}_{name}_train.txt and _test.txt; omit to generate the stories",
    )
    subset: str = Field(
        "en", min_length=1,
        description="the release's folder read when `path` is the release root: en (1,000 training questions per "
                    "task), en-10k (10,000), hn, hn-10k, shuffled, shuffled-10k",
    )
    max_sentences: int | None = Field(
        None, ge=1,
        description="keep only the last this many story sentences before each question (MemN2N kept 50); omit "
                    "for all of them",
    )
    num_train: int | None = Field(
        None, ge=1,
        description="training questions: generated (default 10,000, the en-10k size), or the first of the file's "
                    "(default all)",
    )
    num_test: int | None = Field(
        None, ge=1,
        description="held-out questions: generated (default 1,000), or the first of the file's (default all)",
    )
    questions_per_story: int | None = Field(
        None, ge=1,
        description="generated tasks 1, 2, 3, 6: questions in each story (default 5, as in the original); task 15 "
                    "always asks about its 4 people",
    )
    sentences_per_question: int | None = Field(
        None, ge=1,
        description="generated tasks 1, 2, 3, 6: statements before each question (tasks 2 and 3: at least this "
                    "many, until an object can be asked about); omit for the original's pacing: 2 in tasks 1 and "
                    "6; in 2 and 3 a question with probability ½ after each statement from the 3rd on",
    )
    seed: int = Field(0, ge=0, description="seed of the generated stories (each story its own stream; test separate)")
    example_settings = {"task_id": 1, "max_sentences": 4, "num_train": 8, "num_test": 6}

    @model_validator(mode="after")
    def _check(self) -> "BabiSpec":
        shaping = [n for n in ("questions_per_story", "sentences_per_question") if getattr(self, n) is not None]
        if self.path is None and self.task_id not in BABI_GENERATED:
            raise ValueError(
                f"task_id {self.task_id} is not generated here (generated: {', '.join(map(str, BABI_GENERATED))}); "
                "for the others set path to the folder of Facebook's bAbI release (tasks_1-20_v1-2, unpacked "
                "from tasks_1-20_v1-2.tar.gz)"
            )
        if shaping and self.path is not None:
            raise ValueError(f"{' and '.join(shaping)} shape generated stories, but path reads the release's "
                             "stories; remove them (or remove path)")
        if shaping and self.task_id == 15:
            raise ValueError(f"{' and '.join(shaping)} shape generated tasks 1, 2, 3 and 6; task 15's stories are "
                             "the original's (8 facts, then a question about each of 4 people): remove them")
        return self
