"""The bAbI question-answering tasks (Weston et al., 2015, "Towards AI-complete question
answering: a set of prerequisite toy tasks"): 20 tasks of short stories, each asking about one
reasoning skill, answered with one word (or a list, 'apple,football').

    1 Mary moved to the bathroom.
    2 John went to the hallway.
    3 Where is Mary?        bathroom        1

Read from Facebook's release (`path`: tasks_1-20_v1-2, or its en/, en-10k/, hn/… folder; files
qa{N}_{name}_train.txt and _test.txt, where each line is `ID text`, the ID restarting at 1 with
each story, and a question line is `ID question?<TAB>answer<TAB>supporting IDs`), or generated
here for tasks 1, 2, 3, 6 and 15 (pulse/tasks/babi_gen.py). Every question is one example: the
story's statements so far (the last `max_sentences` of them, if set), then the question, as
lower-case words with '.' and '?' their own tokens. Ids: 0 pads, 1… the sorted vocabulary (of the
task's train and test files, or every word the generator can say, fixed per task); classes: the
sorted answers (of both files, or every answer the generator can give).

A language model or a sequence model answers as every `SequenceClassification` does
(pulse/tasks/classify.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pulse.errors import PulseError
from pulse.specs.tasks import BabiSpec
from pulse.tasks import babi_gen as gen
from pulse.tasks.base import rng_for
from pulse.tasks.classify import SequenceClassification

Line = gen.Line
FORMAT = "`ID text` for a story line, `ID question?<TAB>answer<TAB>supporting IDs` for a question"


@dataclass
class Story:
    """One story, encoded: its statements' ids and its questions (statements before it, question ids, class)."""

    statements: list[np.ndarray]
    questions: list[tuple[int, np.ndarray, int]]


def _line_error(path: Path, number: int, raw: str, what: str) -> PulseError:
    return PulseError(f"{path}, line {number}: {what} (the line reads {raw[:80]!r}); bAbI lines are {FORMAT}, "
                      "the ID counting up from 1 in each story. Fix or remove the line.")


def read_text(path: Path) -> str:
    """A bAbI file's text: a PulseError naming the file and line when it is unreadable, not UTF-8, or binary."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PulseError(f"task.path: cannot read {path} ({err.strerror or err}); give the release's file.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PulseError(f"{path}, line {line}: not UTF-8 text (byte {err.start}: {err.reason}); bAbI files are "
                         "UTF-8 text: give the release's file, or convert this one.") from None
    if "\0" in text:
        raise PulseError(f"{path}, line {text.count(chr(10), 0, text.index(chr(0))) + 1}: a NUL byte, so this is "
                         "binary, not a bAbI text file; give the release's file.")
    return text


def read_stories(path: Path) -> list[list[Line]]:
    """A bAbI file's stories, each a list of lines (text, answer); a statement's answer is None."""
    stories: list[list[Line]] = []
    last = 0
    for number, raw in enumerate(read_text(path).splitlines(), 1):
        if not raw.strip():
            continue
        # tabs are kept: a trailing tab still marks a question (one whose answer is missing)
        head, _, rest = raw.strip(" \r\n\f\v").partition(" ")
        if not (head.isascii() and head.isdigit()) or not rest.strip():
            raise _line_error(path, number, raw, "expected a line ID (a number), a space and text")
        line_id = int(head)
        if line_id == 1:
            stories.append([])
        elif not last:
            raise _line_error(path, number, raw, f"the file starts at line ID {line_id}; a story starts at ID 1")
        elif line_id != last + 1:
            raise _line_error(path, number, raw, f"line ID {line_id} follows {last}; expected {last + 1}, or 1 to "
                                                 "start a new story")
        last = line_id
        fields = [f.strip() for f in rest.split("\t")]
        if len(fields) == 1:
            stories[-1].append((fields[0], None))
            continue
        support = " ".join(fields[2:]).split()
        if len(fields) > 3 or not fields[0] or not fields[1] or not all(s.isascii() and s.isdigit() for s in support):
            raise _line_error(path, number, raw, "a question line needs the question, a tab, the answer and "
                                                 "optionally a tab and the supporting IDs (numbers)")
        if all(answer is not None for _, answer in stories[-1]):
            raise _line_error(path, number, raw, "a question before any story line of its story")
        stories[-1].append((fields[0], fields[1]))
    return stories


def find_files(path: str, subset: str, task_id: int) -> tuple[Path, Path]:
    """The train and test files of a task under the release root (its `subset` folder) or a folder of it."""
    root = Path(path).expanduser()
    redo = ("set task.path to the folder of Facebook's bAbI release (tasks_1-20_v1-2) or one of its folders "
            "(en, en-10k, …), or remove task.path to generate tasks " + ", ".join(map(str, gen.GENERATORS)))
    if not root.is_dir():
        raise PulseError(f"task.path: {root} {'is not a folder' if root.exists() else 'does not exist'}; {redo}.")
    folder = root / subset if (root / subset).is_dir() else root
    train = sorted(folder.glob(f"qa{task_id}_*_train.txt"))
    if not train:
        present = sorted(p.name for p in folder.glob("qa*_train.txt"))
        if not present:
            present = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
        listing = ", ".join(present[:24]) + (", …" if len(present) > 24 else "") or "nothing"
        note = "" if folder != root else f" (it has no `{subset}` folder, task.subset)"
        raise PulseError(f"task.path: no qa{task_id}_*_train.txt for task_id {task_id} in {folder}{note}; it holds "
                         f"{listing}. Point task.path at the release or at its folder of qa*_train.txt files, or "
                         "choose a task_id that is there.")
    if len(train) > 1:
        raise PulseError(f"task.path: several training files for task {task_id} in {folder}: "
                         f"{', '.join(p.name for p in train)}; keep one.")
    test = train[0].with_name(train[0].name[: -len("_train.txt")] + "_test.txt")
    if not test.is_file():
        raise PulseError(f"task.path: {train[0].name} has no test file {test.name} beside it in {folder}; "
                         "add it (the release has both).")
    return train[0], test


class Babi(SequenceClassification):
    """A bAbI task, read from the release or generated; accuracy of the predicted answer."""

    kind = "babi"
    cache_examples = False  # examples are joined from encoded stories, which are kept

    def __init__(self, spec: BabiSpec):
        super().__init__(spec)
        self._words: list[str] | None = None
        self._answers: list[str] = []
        self._stories: dict[tuple[str, int], Story] = {}
        self._index: dict[str, list[tuple[int, int]]] = {}  # file data: example → (story, question)
        self._ids: dict[str, int] = {}
        self._classes: dict[str, int] = {}
        if spec.path is None:
            self._words, self._answers = gen.vocabulary(spec.task_id), gen.answers(spec.task_id)
            self._per_story = gen.questions_per_story(spec.task_id, spec.questions_per_story)

    def _loaded(self) -> None:
        if self._words is None:
            self._load()

    @property
    def words(self) -> list[str]:
        """The vocabulary: word i has id i + 1 (0 pads)."""
        self._loaded()
        return self._words

    @property
    def answers(self) -> list[str]:
        """The classes: answer i is class i."""
        self._loaded()
        return self._answers

    @property
    def vocab_size(self) -> int:
        return len(self.words) + 1

    @property
    def num_classes(self) -> int:
        return len(self.answers)

    def _encode(self, lines: list[Line]) -> Story:
        if not self._ids:
            self._ids = {w: i + 1 for i, w in enumerate(self.words)}
            self._classes = {a: i for i, a in enumerate(self.answers)}
        story = Story([], [])
        for text, answer in lines:
            tokens = np.array([self._ids[t] for t in gen.tokenize(text)], dtype=np.int64)
            if answer is None:
                story.statements.append(tokens)
            else:
                story.questions.append((len(story.statements), tokens, self._classes[answer]))
        return story

    def _load(self) -> None:
        spec = self.spec
        files = dict(zip(("train", "test"), find_files(spec.path, spec.subset, spec.task_id)))
        read = {split: read_stories(path) for split, path in files.items()}
        for split, stories in read.items():
            if not any(answer is not None for story in stories for _, answer in story):
                raise PulseError(f"task.path: {files[split]} holds no questions; use the release's file.")
        lines = [line for stories in read.values() for story in stories for line in story]
        self._answers = sorted({answer for _, answer in lines if answer is not None})
        self._words = sorted({t for text, _ in lines for t in gen.tokenize(text)})
        for split, stories in read.items():
            index = []
            for s, story in enumerate(stories):
                self._stories[split, s] = self._encode(story)
                index += [(s, q) for q in range(len(self._stories[split, s].questions))]
            self._index[split] = index[: spec.num_train if split == "train" else spec.num_test]

    def size(self, split: str) -> int:
        if self.spec.path is None:
            n = self.spec.num_train if split == "train" else self.spec.num_test
            return n or (10_000 if split == "train" else 1_000)
        self._loaded()
        return len(self._index[split])

    def story_lines(self, split: str, number: int) -> list[Line]:
        """Generated story `number` of a split, from its own random stream."""
        seed = int(rng_for(self.spec.seed, split, number).integers(2**63))
        return gen.story(self.spec.task_id, random.Random(seed), self.spec.questions_per_story,
                         self.spec.sentences_per_question)

    def _locate(self, split: str, index: int) -> tuple[Story, int]:
        if self.spec.path is not None:
            self._loaded()
            s, q = self._index[split][index]
            return self._stories[split, s], q
        s, q = divmod(index, self._per_story)
        if (split, s) not in self._stories:
            self._stories[split, s] = self._encode(self.story_lines(split, s))
        return self._stories[split, s], q

    def encoded(self, split: str, index: int) -> tuple[np.ndarray, int]:
        story, q = self._locate(split, index)
        before, question, label = story.questions[q]
        start = max(0, before - self.spec.max_sentences) if self.spec.max_sentences else 0
        return np.concatenate([*story.statements[start:before], question]), label

    def example(self, split: str, index: int) -> tuple[list[str], str]:
        """Example `index` of a split as words (its statements, then the question) and its answer."""
        ids, label = self.encoded(split, index)
        return [self.words[i - 1] for i in ids.tolist()], self.answers[label]
