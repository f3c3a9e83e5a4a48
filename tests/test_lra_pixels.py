"""LRA's pixel tasks: Pathfinder draws what its docstring says (the label is exactly whether the
dots are connected, with no cue besides), LRA Image reads CIFAR-10's binary files exactly (and
refuses the pickled ones), and both drive token and sequence models."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

import pulse
from pulse.errors import PulseError
from pulse.specs.tasks import LraImageSpec, PathfinderSpec
from pulse.tasks import LraImage, Pathfinder, build_task
from pulse.tasks.image import SHAPES, shape_image
from pulse.tasks.pathfinder import pathfinder_image
from test_tasks import tiny_lm, tiny_sequence


def connected(image) -> bool:
    """Whether a breadth-first search over the solid contour pixels (8-neighbours) leads from one dot to the other."""
    side = image.pixels.shape[0]
    on = np.zeros((side, side), dtype=bool)
    for pixels in image.contours:
        on[pixels[:, 0], pixels[:, 1]] = True
    start, goal = (tuple(int(v) for v in dot) for dot in image.dots)
    seen, todo = {start}, deque([start])
    while todo:
        y, x = todo.popleft()
        if (y, x) == goal:
            return True
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                nxt = (y + dy, x + dx)
                if 0 <= nxt[0] < side and 0 <= nxt[1] < side and on[nxt] and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
    return False


# ---- Pathfinder ---------------------------------------------------------------------------------------

def test_pathfinder_is_a_registered_task_kind():
    recipe = pulse.recipe_from_dict({"model": {"from": "transformer-small"},
                                     "task": {"kind": "pathfinder", "num_train": 16, "num_test": 4}})
    task = build_task(recipe.task)
    assert isinstance(task, Pathfinder) and task.vocab_size == 256 and task.num_classes == 2
    with pytest.raises(PulseError, match="resolution"):
        pulse.recipe_from_dict({"model": {"from": "transformer-small"},
                                "task": {"kind": "pathfinder", "resolution": 48}})


def test_pathfinder_images_repeat_by_index_and_differ_by_split_and_seed():
    spec = PathfinderSpec(num_train=8)
    first = pathfinder_image(spec, "train", 5)
    again = Pathfinder(spec).image("train", 5)
    assert np.array_equal(first.pixels, again.pixels) and np.array_equal(first.dots, again.dots)
    assert not np.array_equal(first.pixels, pathfinder_image(spec, "train", 7).pixels)
    assert not np.array_equal(first.pixels, pathfinder_image(spec, "test", 5).pixels)
    assert not np.array_equal(first.pixels, pathfinder_image(PathfinderSpec(seed=1), "train", 5).pixels)


@pytest.mark.parametrize("spec", [PathfinderSpec(), PathfinderSpec(contour_length=5, distractors=3),
                                  PathfinderSpec(resolution=64, contour_length=4, max_turn=60)],
                         ids=["default", "crowded", "64px"])
def test_the_label_is_whether_the_contours_connect_the_dots(spec):
    for index in range(40):
        image = pathfinder_image(spec, "test", index)
        assert image.label == index % 2 and image.pixels.shape == (spec.resolution,) * 2
        assert connected(image) == bool(image.label)
        assert len(image.contours) == spec.distractors + 2
        solid = {tuple(p) for pixels in image.contours for p in pixels.tolist()}
        assert all(tuple(dot) in solid for dot in image.dots.tolist())  # each dot on a contour's end pixel
        assert set(np.unique(image.pixels).tolist()) == {0, 255}


def test_every_inked_pixel_is_on_a_contour_or_a_dot_and_contours_are_dashed():
    spec = PathfinderSpec()
    for index in range(20):
        image = pathfinder_image(spec, "train", index)
        solid = np.zeros_like(image.pixels, dtype=bool)
        for pixels in image.contours:
            solid[pixels[:, 0], pixels[:, 1]] = True
        near_dot = np.zeros_like(solid)
        for y, x in image.dots:
            near_dot[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = True
        ink = image.pixels == 255
        assert not (ink & ~solid & ~near_dot).any()
        assert (solid & ~ink & ~near_dot).sum() > 0.25 * (solid & ~near_dot).sum()  # gaps between the dashes


def test_pathfinder_has_no_cue_but_the_path():
    spec = PathfinderSpec()
    images = [pathfinder_image(spec, "train", i) for i in range(300)]
    labels = np.array([image.label for image in images])
    distance = np.array([np.linalg.norm(image.dots[0] - image.dots[1]) for image in images])
    ink = np.array([(image.pixels > 0).sum() for image in images])
    assert labels.sum() == 150
    assert abs(distance[labels == 1].mean() - distance[labels == 0].mean()) < 1.0  # of about 22 px
    assert abs(ink[labels == 1].mean() - ink[labels == 0].mean()) < 0.03 * ink.mean()


def test_settings_too_crowded_to_draw_are_refused_when_the_task_is_built():
    with pytest.raises(PulseError, match="lower task.contour_length or task.distractors"):
        Pathfinder(PathfinderSpec(contour_length=9, distractors=4))


def test_pathfinder_batches_are_balanced_pixel_sequences():
    task = Pathfinder(PathfinderSpec(num_train=64, num_test=10))
    batch = task.train_batch(0, batch_size=32, seed=0)
    assert batch["ids"].shape == (32, 1024) and batch["ids"].dtype == torch.int64
    assert (batch["lengths"] == 1024).all() and 0 <= batch["ids"].min() and batch["ids"].max() <= 255
    assert set(batch["labels"].tolist()) == {0, 1}
    assert sum(len(b["labels"]) for b in task.eval_batches(4)) == 10
    row = task.batch("test", np.array([3]))["ids"][0]
    assert torch.equal(row, torch.from_numpy(task.image("test", 3).pixels.reshape(-1).astype(np.int64)))
    assert Pathfinder(PathfinderSpec(resolution=64, contour_length=4, num_train=4)).batch(
        "train", np.array([0, 1]))["ids"].shape == (2, 4096)


def test_pathfinder_reads_a_language_model_through_a_task_head():
    task = Pathfinder(PathfinderSpec(num_train=8))
    model = tiny_lm(256)
    head = task.make_head(model)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 2
    sums = task.forward(model, head, task.train_batch(0, batch_size=4, seed=0))
    sums["loss_sum"].backward()
    assert head.weight.grad is not None and sums["count"].item() == 4


def test_pixel_tasks_drive_a_sequence_model_with_a_mask():
    for task, classes in ((Pathfinder(PathfinderSpec(num_train=8)), 2), (LraImage(LraImageSpec(num_train=8)), 10)):
        model = tiny_sequence(256, classes, "mean")
        task.check_model(model)
        assert task.make_head(model) is None
        sums = task.forward(model, None, task.train_batch(0, batch_size=4, seed=0))
        sums["loss_sum"].backward()
        assert torch.isfinite(sums["loss_sum"]) and sums["total"].item() == 4
        assert task.fit_model({"kind": "sequence_pulse", "input_dim": 16, "output_dim": 3})["output_dim"] == classes


# ---- LRA Image: generated shapes -------------------------------------------------------------------------

def test_generated_images_are_balanced_and_repeat_by_index():
    task = LraImage(LraImageSpec(num_train=40, num_test=20))
    assert task.size("train") == 40 and task.size("test") == 20 and task.num_classes == len(SHAPES) == 10
    ids, label = task.encoded("train", 13)
    assert ids.shape == (1024,) and ids.dtype == np.int64 and label == 3 and 0 <= ids.min() and ids.max() <= 255
    assert np.array_equal(LraImage(task.spec).encoded("train", 13)[0], ids)
    assert not np.array_equal(task.encoded("test", 13)[0], ids)
    assert np.bincount(task.train_batch(0, batch_size=40, seed=0)["labels"].numpy(), minlength=10).tolist() == [4] * 10
    assert LraImage(LraImageSpec()).size("train") == 10_000


def test_each_shape_is_ink_on_a_background():
    rng = np.random.default_rng(0)
    for label in range(10):
        clean = shape_image(rng, label, noise=0.0)
        levels = np.unique(clean)
        assert len(levels) == 2 and int(levels[1]) - int(levels[0]) >= 96
        assert min((clean == level).sum() for level in levels) >= 4  # the shape is drawn, inside the image


# ---- LRA Image: CIFAR-10 binary files ----------------------------------------------------------------

def cifar_records(labels: list[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, (len(labels), 3073), dtype=np.uint8)
    records[:, 0] = labels
    return records


def expected_grey(record: np.ndarray) -> list[int]:
    r, g, b = (record[1 + 1024 * c : 1 + 1024 * (c + 1)].tolist() for c in range(3))
    return [(299 * x + 587 * y + 114 * z + 500) // 1000 for x, y, z in zip(r, g, b)]


@pytest.fixture
def cifar_dir(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    parts = {"data_batch_1.bin": [3, 0, 9], "data_batch_2.bin": [7, 1], "test_batch.bin": [5, 2]}
    for n, (name, labels) in enumerate(parts.items()):
        records = cifar_records(labels, n)
        if name == "data_batch_1.bin":  # pure red, green, blue, white and a dim grey in the first pixels
            records[0, 1:] = 0
            for pixel, rgb in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (1, 1, 1)]):
                records[0, [1 + pixel, 1025 + pixel, 2049 + pixel]] = rgb
        records.tofile(root / name)
    return tmp_path


def test_cifar_binary_batches_are_read_in_order_and_greyed_exactly(cifar_dir):
    task = build_task(pulse.recipe_from_dict({"model": {"from": "transformer-small"},
                                              "task": {"kind": "lra_image", "path": str(cifar_dir)}}).task)
    assert task.size("train") == 5 and task.size("test") == 2
    assert [task.encoded("train", i)[1] for i in range(5)] == [3, 0, 9, 7, 1]
    assert [task.encoded("test", i)[1] for i in range(2)] == [5, 2]
    assert task.encoded("train", 0)[0][:6].tolist() == [76, 150, 29, 255, 1, 0]
    for split, file, index, row in (("train", "data_batch_2.bin", 4, 1), ("test", "test_batch.bin", 1, 1)):
        records = np.fromfile(cifar_dir / "cifar-10-batches-bin" / file, dtype=np.uint8).reshape(-1, 3073)
        ids, _ = task.encoded(split, index)
        assert ids.dtype == np.int64 and ids.tolist() == expected_grey(records[row])
    batch = task.batch("train", np.array([4, 0]))
    assert batch["ids"].shape == (2, 1024) and batch["labels"].tolist() == [1, 3]
    assert LraImage(LraImageSpec(path=str(cifar_dir), num_train=4)).size("train") == 4
    with pytest.raises(PulseError, match="num_train = 9 exceeds the 5 train records"):
        LraImage(LraImageSpec(path=str(cifar_dir), num_train=9))


def test_one_batch_file_holds_out_its_last_records(tmp_path):
    file = tmp_path / "data_batch_1.bin"
    cifar_records([i % 10 for i in range(20)], 0).tofile(file)
    task = LraImage(LraImageSpec(path=str(file)))
    assert task.size("train") == 18 and task.size("test") == 2 and task.encoded("test", 0)[1] == 8
    assert LraImage(LraImageSpec(path=str(file), num_test=5)).size("train") == 15


def test_pickled_cifar_is_refused_never_unpickled(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "test_batch"):
        (folder / name).write_bytes(b"\x80\x02}q\x00" + bytes(100))
    for path in (tmp_path, folder, folder / "data_batch_1"):
        with pytest.raises(PulseError, match=r"data_batch_1 is CIFAR-10's pickled Python version.*cifar-10-binary"):
            LraImage(LraImageSpec(path=str(path)))
    renamed = tmp_path / "data_batch_1.bin"
    renamed.write_bytes((folder / "data_batch_1").read_bytes())
    with pytest.raises(PulseError, match="pickled"):
        LraImage(LraImageSpec(path=str(renamed)))


def test_files_that_are_not_cifar_binary_are_refused(tmp_path):
    odd = tmp_path / "odd.bin"
    odd.write_bytes(bytes(3073 * 2 + 5))
    with pytest.raises(PulseError, match=r"odd.bin has 6151 bytes, not a whole number of CIFAR-10 binary records"):
        LraImage(LraImageSpec(path=str(odd)))
    bad_label = tmp_path / "labels.bin"
    cifar_records([1, 12, 3], 0).tofile(bad_label)
    with pytest.raises(PulseError, match="record 1 has label byte 12"):
        LraImage(LraImageSpec(path=str(bad_label), num_test=1))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PulseError, match="without CIFAR-10 binary batches.*cifar-10-batches-bin"):
        LraImage(LraImageSpec(path=str(empty)))
    with pytest.raises(PulseError, match="does not exist"):
        LraImage(LraImageSpec(path=str(tmp_path / "nowhere")))
