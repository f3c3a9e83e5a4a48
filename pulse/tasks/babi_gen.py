"""Generated stories of five bAbI tasks, after Facebook's generator (github.com/facebookarchive/
bAbI-tasks: its world_basic world, WhereIsActor, WhereIsObject, WhereWasObject, IsActorThere and
Deduction) and the wording of its released data (tasks_1-20_v1-2/en):

    1   Mary moved to the bathroom. John went to the hallway. Where is Mary?               bathroom
    2   Mary got the football there. Mary went back to the kitchen. Where is the football?   kitchen
    3   … Mary took the football. Mary went to the office. Mary travelled to the kitchen.
        Where was the football before the kitchen?                                            office
    6   John went to the garden. Is John in the kitchen?                                      no
    15  Sheep are afraid of wolves. Gertrude is a sheep. What is Gertrude afraid of?          wolf

Four people (Mary, John, Daniel, Sandra) move between six places; in tasks 2 and 3 they also pick
up and put down three objects (apple, football, milk). Nobody's starting place is told, so a
question asks only what the story determines: where a person last went; where an object is (its
holder's told place, or where someone whose place was told put it down); where it was before its
current place (its told places in order, asked only when every arrival there came from the same
place). Tasks 1 and 6 tell two moves before each question; 2 and 3 ask with probability ½ after
each statement from the third on (once some object can be asked about); each story has 5
questions (both settable: `questions_per_story`, `sentences_per_question`). Task 6 answers yes
or no with probability ½ each. Task 15 states what each of four animals fears (never itself) and
each of four people's animal (any, repeats allowed, as in the released data), shuffled, then asks
what each person fears. A story is a list of lines (text, answer); a statement's answer is None.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

PEOPLE = ("Mary", "John", "Daniel", "Sandra")
PLACES = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
MOVES = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
GETS = ("got", "grabbed", "picked up", "took")
DROPS = ("dropped", "discarded", "put down", "left")
ANIMALS = {"cat": "cats", "mouse": "mice", "sheep": "sheep", "wolf": "wolves"}  # singular → plural
CREATURES = ("Gertrude", "Winona", "Jessica", "Emily")
DEDUCTION_QUESTIONS = len(CREATURES)

Line = tuple[str, "str | None"]


def tokenize(text: str) -> list[str]:
    """Lower-case words, with '.' and '?' as tokens of their own."""
    return re.findall(r"[^\s.?]+|[.?]", text.lower())


class _World:
    """The true state of one story's world, and how much of it the story has told."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.place = {p: rng.choice(PLACES) for p in PEOPLE}  # where each person is (untold at first)
        self.told: list[str] = []  # people whose place the story has told (by a move)
        self.holder: dict[str, str | None] = dict.fromkeys(OBJECTS)
        self.trail = {o: [rng.choice(PLACES)] for o in OBJECTS}  # each object's places, in order
        self.told_from: dict[str, int | None] = dict.fromkeys(OBJECTS)  # trail index from which the story told it
        self.lines: list[Line] = []

    def where(self, obj: str) -> str:
        return self.trail[obj][-1]

    def _tell(self, obj: str) -> None:
        if self.told_from[obj] is None:
            self.told_from[obj] = len(self.trail[obj]) - 1

    def move(self) -> None:
        person = self.rng.choice(PEOPLE)
        to = self.rng.choice([p for p in PLACES if p != self.place[person]])
        self.place[person] = to
        if person not in self.told:
            self.told.append(person)
        for obj in OBJECTS:
            if self.holder[obj] == person:
                self.trail[obj].append(to)
                self._tell(obj)
        self.lines.append((f"{person} {self.rng.choice(MOVES)} the {to}.", None))

    def handle(self) -> bool:
        """Someone picks up an object lying where they are, or puts down one they hold; False when nobody can."""
        options = [(p, o) for o in OBJECTS for p in PEOPLE
                   if self.holder[o] == p or (self.holder[o] is None and self.place[p] == self.where(o))]
        if not options:
            return False
        person, obj = self.rng.choice(options)
        verbs = DROPS if self.holder[obj] == person else GETS
        self.holder[obj] = None if self.holder[obj] == person else person
        if person in self.told:
            self._tell(obj)
        there = " there" if self.rng.random() < 0.5 else ""
        self.lines.append((f"{person} {self.rng.choice(verbs)} the {obj}{there}.", None))
        return True

    def before(self, obj: str) -> str | None:
        """Where the object was before its current place, when the story tells it unambiguously."""
        start = self.told_from[obj]
        told = [] if start is None else self.trail[obj][start:]
        if len(told) < 2 or told[0] == told[-1]:
            return None
        came_from = {told[i - 1] for i in range(1, len(told)) if told[i] == told[-1]}
        return self.trail[obj][-2] if len(came_from) == 1 else None

    def ask(self, question: str, answer: str) -> None:
        self.lines.append((question, answer))


def _people(rng: random.Random, questions: int, gap: int | None, yes_no: bool) -> list[Line]:
    """Tasks 1 and 6: `gap` (2) moves, then a question about someone whose place was told."""
    world = _World(rng)
    for _ in range(questions):
        for _ in range(gap or 2):
            world.move()
        person = rng.choice(world.told)
        here = world.place[person]
        if not yes_no:
            world.ask(f"Where is {person}?", here)
            continue
        yes = rng.random() < 0.5
        place = here if yes else rng.choice([p for p in PLACES if p != here])
        world.ask(f"Is {person} in the {place}?", "yes" if yes else "no")
    return world.lines


def _objects(rng: random.Random, questions: int, gap: int | None, before: bool) -> list[Line]:
    """Tasks 2 and 3: moves (⅓) and pick-ups / put-downs, a question every few statements."""
    world = _World(rng)
    asked = since = 0
    while asked < questions:
        if rng.random() < 1 / 3 or not world.handle():
            world.move()
        since += 1
        if not (since >= gap if gap else since >= 3 and rng.random() < 0.5):
            continue
        known = [o for o in OBJECTS if (world.before(o) if before else world.told_from[o] is not None)]
        if not known:
            continue
        obj = rng.choice(known)
        if before:
            world.ask(f"Where was the {obj} before the {world.where(obj)}?", world.before(obj))
        else:
            world.ask(f"Where is the {obj}?", world.where(obj))
        asked, since = asked + 1, 0
    return world.lines


def _deduction(rng: random.Random) -> list[Line]:
    """Task 15: each animal fears another, each person is an animal; what does each person fear?"""
    kinds = list(ANIMALS)
    fears = {a: rng.choice([b for b in kinds if b != a]) for a in kinds}
    animal = {c: rng.choice(kinds) for c in CREATURES}
    facts = [f"{ANIMALS[a].capitalize()} are afraid of {ANIMALS[fears[a]]}." for a in kinds]
    facts += [f"{c} is a {animal[c]}." for c in CREATURES]
    rng.shuffle(facts)
    asked = list(CREATURES)
    rng.shuffle(asked)
    return [(f, None) for f in facts] + [(f"What is {c} afraid of?", fears[animal[c]]) for c in asked]


GENERATORS: dict[int, Callable[[random.Random, int, int | None], list[Line]]] = {
    1: lambda rng, q, gap: _people(rng, q, gap, yes_no=False),
    2: lambda rng, q, gap: _objects(rng, q, gap, before=False),
    3: lambda rng, q, gap: _objects(rng, q, gap, before=True),
    6: lambda rng, q, gap: _people(rng, q, gap, yes_no=True),
    15: lambda rng, q, gap: _deduction(rng),
}


def questions_per_story(task_id: int, asked: int | None) -> int:
    """Questions in each generated story: task 15 asks about its 4 people; the others `asked` (5)."""
    return DEDUCTION_QUESTIONS if task_id == 15 else asked or 5


def story(task_id: int, rng: random.Random, questions: int | None = None, gap: int | None = None) -> list[Line]:
    """One generated story of a task: its lines (text, answer), questions among the statements."""
    return GENERATORS[task_id](rng, questions_per_story(task_id, questions), gap)


def _phrases(task_id: int) -> list[str]:
    if task_id == 15:
        return [*CREATURES, *ANIMALS, *ANIMALS.values(), "are afraid of. is a. What ?"]
    moves = [*PEOPLE, *MOVES, "the .", *PLACES]
    handling = [*OBJECTS, *GETS, *DROPS, "there"]
    return {1: [*moves, "Where is ?"], 2: [*moves, *handling, "Where is ?"],
            3: [*moves, *handling, "Where was before ?"], 6: [*moves, "Is in ?"]}[task_id]


def vocabulary(task_id: int) -> list[str]:
    """Every word a generated task can say, sorted: fixed per task, whatever the seed."""
    return sorted({tok for phrase in _phrases(task_id) for tok in tokenize(phrase)})


def answers(task_id: int) -> list[str]:
    """Every answer a generated task can give, sorted (its classes)."""
    return {15: sorted(ANIMALS), 6: ["no", "yes"]}.get(task_id, sorted(PLACES))
