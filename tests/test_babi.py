"""bAbI: the reader takes the release's format exactly, the generator's answers follow from its
stories (checked by an independent reader of the text), and both drive the two model families."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import pulse
from pulse.errors import PulseError
from pulse.specs.tasks import BABI_GENERATED, BabiSpec
from pulse.tasks import Babi, build_task
from pulse.tasks import babi_gen as gen
from test_tasks import check_task_head, tiny_lm, tiny_sequence

TRAIN = (
    "1 Mary moved to the bathroom.\n"
    "2 John went to the hallway.\n"
    "3 Where is Mary? \tbathroom\t1\n"
    "4 Daniel went back to the hallway.\n"
    "5 Where is Daniel? \thallway\t4\n"
    "1 John picked up the apple.\n"
    "2 John grabbed the football there.\n"
    "3 What is John carrying? \tapple,football\t1 2\n"
)
TEST = "1 Sandra journeyed to the garden.\n2 Where is Sandra? \tgarden\t1\n"


def release(root, folder="en", train=TRAIN, test=TEST, name="qa1_single-supporting-fact"):
    """A bAbI release root with one task in one folder; returns the root."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / f"{name}_train.txt").write_text(train)
    (root / folder / f"{name}_test.txt").write_text(test)
    return root


# ---- the release's files ----------------------------------------------------------------------

def test_reader_makes_one_example_per_question_with_the_story_so_far(tmp_path):
    task = Babi(BabiSpec(path=str(release(tmp_path))))
    assert task.size("train") == 3 and task.size("test") == 1
    first = "mary moved to the bathroom . john went to the hallway . where is mary ?"
    assert task.example("train", 0) == (first.split(), "bathroom")
    words, answer = task.example("train", 1)
    assert words[-4:] == "where is daniel ?".split()
    assert words.count(".") == 3 and answer == "hallway"
    # ID 1 starts a new story: nothing of the first one is left
    assert task.example("train", 2) == ("john picked up the apple . john grabbed the football there . "
                                        "what is john carrying ?".split(), "apple,football")
    assert task.example("test", 0) == ("sandra journeyed to the garden . where is sandra ?".split(), "garden")
    # vocabulary of train ∪ test (sorted, 0 pads); classes: every answer, sorted
    assert task.answers == ["apple,football", "bathroom", "garden", "hallway"] and task.num_classes == 4
    assert "sandra" in task.words and task.words == sorted(task.words) and "?" in task.words
    assert task.vocab_size == len(task.words) + 1
    ids, label = task.encoded("train", 0)
    assert ids.dtype == np.int64 and ids.min() >= 1 and label == 1


def test_max_sentences_keeps_the_last_ones_and_num_train_caps(tmp_path):
    task = Babi(BabiSpec(path=str(release(tmp_path)), max_sentences=1, num_train=2))
    assert task.example("train", 1)[0] == "daniel went back to the hallway . where is daniel ?".split()
    assert task.size("train") == 2


def test_the_subset_folder_is_found_under_the_release_root(tmp_path):
    release(tmp_path)
    release(tmp_path, "en-10k", train=TEST, test=TEST)
    assert Babi(BabiSpec(path=str(tmp_path))).size("train") == 3
    assert Babi(BabiSpec(path=str(tmp_path), subset="en-10k")).size("train") == 1
    assert Babi(BabiSpec(path=str(tmp_path / "en-10k"))).size("train") == 1
    assert Babi(BabiSpec(path=str(tmp_path / "en"), subset="hn")).size("train") == 3


@pytest.mark.parametrize("train, message", [
    ("1 Mary moved to the bathroom.\nMary went to the hallway.\n", r"line 2: expected a line ID"),
    ("1 Mary moved to the bathroom.\n3 John went to the hallway.\n", r"line 2: line ID 3 follows 1; expected 2"),
    ("2 Mary moved to the bathroom.\n", r"line 1: the file starts at line ID 2; a story starts at ID 1"),
    ("1 Mary moved to the bathroom.\n2 Where is Mary? \t\t1\n", r"line 2: a question line needs"),
    ("1 Mary moved to the bathroom.\n2 Where is Mary? \tbathroom\tone\n", r"line 2: a question line needs"),
    ("1 Where is Mary? \tbathroom\t\n2 Mary moved to the bathroom.\n", r"line 1: a question before any story line"),
    ("1 Mary moved to the bathroom.\n", r"holds no questions"),
])
@pytest.mark.audit("LRA and bAbI files", "clean")
def test_malformed_files_name_the_file_and_line(tmp_path, train, message):
    release(tmp_path, train=train)
    with pytest.raises(PulseError, match=message) as err:
        Babi(BabiSpec(path=str(tmp_path))).size("train")
    assert "qa1_single-supporting-fact_train.txt" in str(err.value)


@pytest.mark.parametrize("data, message", [
    (b"1 Mary moved to the bathroom.\n2 Where is Mary?\t\n", r"line 2: a question line needs the question, a tab, "
                                                           r"the answer"),
    (b"1 Mary moved to the bathroom.\n2 Where is Mary?\tbath\xffroom\t1\n", r"line 2: not UTF-8 text \(byte 51"),
    (b"1 Mary moved to the bathroom.\n\x00\x01\x02\x00garbage\n", r"line 2: a NUL byte, so this is binary"),
])
@pytest.mark.audit("LRA and bAbI files", "clean")
def test_a_missing_answer_or_binary_bytes_name_the_file_and_line(tmp_path, data, message):
    path = release(tmp_path) / "en" / "qa1_single-supporting-fact_train.txt"
    path.write_bytes(data)
    with pytest.raises(PulseError, match=message) as err:
        Babi(BabiSpec(path=str(tmp_path))).size("train")
    assert str(path) in str(err.value)


@pytest.mark.audit("LRA and bAbI files", "clean")
def test_missing_folders_and_files_say_what_is_there(tmp_path):
    with pytest.raises(PulseError, match="does not exist; set task.path to the folder of Facebook's bAbI release"):
        Babi(BabiSpec(path=str(tmp_path / "nope"))).size("train")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(PulseError, match="is not a folder"):
        Babi(BabiSpec(path=str(tmp_path / "file.txt"))).size("train")
    release(tmp_path / "r")
    with pytest.raises(PulseError, match=r"no qa2_\*_train.txt for task_id 2 .* holds "
                                         r"qa1_single-supporting-fact_train.txt"):
        Babi(BabiSpec(path=str(tmp_path / "r"), task_id=2)).vocab_size
    with pytest.raises(PulseError, match=r"it has no `en-10k` folder, task.subset\); it holds en/"):
        Babi(BabiSpec(path=str(tmp_path / "r"), subset="en-10k")).vocab_size
    (tmp_path / "r/en/qa1_single-supporting-fact_test.txt").unlink()
    with pytest.raises(PulseError, match="has no test file qa1_single-supporting-fact_test.txt"):
        Babi(BabiSpec(path=str(tmp_path / "r"))).vocab_size


@pytest.mark.parametrize("task, message", [
    ({"task_id": 4}, r"task_id 4 is not generated here \(generated: 1, 2, 3, 6, 15\); for the others set path"),
    ({"path": "x", "questions_per_story": 3}, "questions_per_story shape generated stories"),
    ({"task_id": 15, "sentences_per_question": 3}, "task 15's stories are the original's"),
    ({"task_id": 21}, "task_id"),
])
def test_settings_are_checked(task, message):
    with pytest.raises(PulseError, match=message):
        pulse.recipe_from_dict({"model": {"from": "transformer-small"}, "task": {"kind": "babi", **task}})


# ---- the generator ----------------------------------------------------------------------------

PLURAL = {"cat": "cats", "mouse": "mice", "sheep": "sheep", "wolf": "wolves"}
MOVE = re.compile(r"(\w+) (?:moved|went|journeyed|travelled|went back) to the (\w+)\.")
GET = re.compile(r"(\w+) (?:got|grabbed|picked up|took) the (\w+)(?: there)?\.")
DROP = re.compile(r"(\w+) (?:dropped|discarded|put down|left) the (\w+)(?: there)?\.")


def check(lines):
    """Recompute every answer of a generated story from its text alone; returns the answers."""
    place, holder, trail, fears, animal, answers = {}, {}, {}, {}, {}, []
    for text, answer in lines:
        if m := MOVE.fullmatch(text):
            person, to = m.groups()
            assert place.get(person) != to, text
            place[person] = to
            for obj in [o for o, who in holder.items() if who == person]:
                assert trail.get(obj, [None])[-1] != to
                trail.setdefault(obj, []).append(to)
        elif m := GET.fullmatch(text) or DROP.fullmatch(text):
            person, obj = m.groups()
            assert holder.get(obj) == (person if DROP.fullmatch(text) else None), text
            holder[obj] = None if DROP.fullmatch(text) else person
            if person in place:  # telling where someone handles it tells where it is
                assert trail.setdefault(obj, [place[person]])[-1] == place[person]
        elif m := re.fullmatch(r"(\w+) are afraid of (\w+)\.", text):
            fears[m[1].lower()] = m[2]
        elif m := re.fullmatch(r"(\w+) is a (\w+)\.", text):
            animal[m[1]] = m[2]
        elif m := re.fullmatch(r"Where is (\w+)\?", text):
            assert answer == place[m[1]]
        elif m := re.fullmatch(r"Where is the (\w+)\?", text):
            assert answer == trail[m[1]][-1]
        elif m := re.fullmatch(r"Where was the (\w+) before the (\w+)\?", text):
            told = trail[m[1]]
            assert told[-1] == m[2] and told[0] != m[2]
            assert {told[i - 1] for i in range(1, len(told)) if told[i] == m[2]} == {answer}
        elif m := re.fullmatch(r"Is (\w+) in the (\w+)\?", text):
            assert answer == ("yes" if place[m[1]] == m[2] else "no")
        elif m := re.fullmatch(r"What is (\w+) afraid of\?", text):
            assert PLURAL[answer] == fears[PLURAL[animal[m[1]]]]
        else:
            raise AssertionError(f"unexpected line {text!r}")
        if answer is not None:
            answers.append(answer)
    return answers


@pytest.mark.parametrize("task_id", BABI_GENERATED)
def test_generated_answers_follow_from_the_story(task_id):
    task = Babi(BabiSpec(task_id=task_id))
    used, given = set(), []
    for number in range(300):
        lines = task.story_lines("train", number)
        answers = check(lines)
        assert len(answers) == (4 if task_id == 15 else 5) and lines[-1][1] is not None
        used |= {t for text, _ in lines for t in gen.tokenize(text)}
        given += answers
    # the fixed vocabulary and answer set are exactly what the stories use
    assert used == set(task.words) and set(given) == set(task.answers)
    if task_id == 6:
        assert 0.45 < given.count("yes") / len(given) < 0.55
    if task_id in (1, 6):
        assert all(lines[3 * i + 2][1] is not None for i in range(5))  # two statements, then a question


def test_generated_tasks_cover_the_spec_and_keep_their_sizes_across_seeds():
    assert tuple(gen.GENERATORS) == BABI_GENERATED
    sizes = {t: (Babi(BabiSpec(task_id=t)).vocab_size, Babi(BabiSpec(task_id=t)).num_classes) for t in BABI_GENERATED}
    assert sizes == {1: (22, 6), 2: (36, 6), 3: (37, 6), 6: (22, 2), 15: (20, 4)}
    for seed in (1, 7):
        for t in BABI_GENERATED:
            task = Babi(BabiSpec(task_id=t, seed=seed, sentences_per_question=None if t == 15 else 4))
            task.encoded("train", 3)
            assert (task.vocab_size, task.num_classes) == sizes[t]


def test_generated_examples_are_the_story_so_far_and_repeat_by_index():
    task = Babi(BabiSpec(task_id=2, num_train=50, num_test=20))
    assert task.size("train") == 50 and task.size("test") == 20
    lines = task.story_lines("train", 1)
    questions = [i for i, (_, answer) in enumerate(lines) if answer is not None]
    words, answer = task.example("train", 5 + 2)  # story 1, question 2
    statements = [text for text, a in lines[: questions[2]] if a is None]
    assert words == [t for text in [*statements, lines[questions[2]][0]] for t in gen.tokenize(text)]
    assert answer == lines[questions[2]][1]
    fresh = Babi(task.spec)
    assert np.array_equal(fresh.encoded("train", 7)[0], task.encoded("train", 7)[0])
    assert not np.array_equal(task.encoded("test", 0)[0], task.encoded("train", 0)[0])
    short = Babi(BabiSpec(task_id=3, max_sentences=5, sentences_per_question=6, questions_per_story=2))
    assert all(short.example("train", i)[0].count(".") == 5 for i in range(10))


def test_a_recipe_builds_the_task():
    recipe = pulse.recipe_from_dict({"model": {"from": "transformer-small"}, "task": {"kind": "babi", "task_id": 15}})
    task = build_task(recipe.task)
    assert isinstance(task, Babi) and task.size("train") == 10_000 and task.size("test") == 1_000


# ---- models -----------------------------------------------------------------------------------

def test_a_language_model_answers_through_a_task_head():
    task = Babi(BabiSpec(task_id=2, num_train=40))
    with pytest.raises(PulseError, match="set model.vocab_size = 36"):
        task.check_model(tiny_lm(20))
    model = tiny_lm(64)
    task.check_model(model)
    check_task_head(task, model, 6)


def test_a_sequence_model_answers_with_a_mask():
    task = Babi(BabiSpec(task_id=6, num_train=20))
    model = tiny_sequence(task.vocab_size, task.num_classes, "last")
    task.check_model(model)
    assert task.make_head(model) is None
    batch = task.train_batch(0, batch_size=4, seed=0)
    for row, length in enumerate(batch["lengths"].tolist()):
        assert (batch["ids"][row, length:] == 0).all() and (batch["ids"][row, :length] > 0).all()
    sums = task.forward(model, None, batch)
    sums["loss_sum"].backward()
    assert torch.isfinite(sums["loss_sum"]) and sums["total"].item() == 4
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
