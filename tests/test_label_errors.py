"""Label-error issues from out-of-fold probabilities: each planted kind is found, typed and located, and a
missing object outranks the ordinary boundary disagreement every sample has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from masklab.curation.label_errors import (
    disagreement,
    evidence_by_kind,
    find_issues,
    pixel_quality,
    suspicion,
    typical_width,
    worst_kind,
)


def confident(class_map: np.ndarray, classes: int = 3, p: float = 0.9) -> np.ndarray:
    """(C, H, W) probabilities: ``p`` on the class of ``class_map``, the rest shared by the others."""
    probs = np.full((classes, *class_map.shape), (1 - p) / (classes - 1), np.float32)
    np.put_along_axis(probs, class_map[None].astype(np.int64), p, axis=0)
    return probs.astype(np.float16)  # what cross-validation stores


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def scene() -> np.ndarray:
    label = np.zeros((48, 64), np.uint8)
    label[disc(label.shape, (14, 14), 7)] = 1
    label[disc(label.shape, (30, 44), 9)] = 2
    return label


def erased_object_case(root: Path, oof: Path, count: int, seed: int, folds: int):
    """A synthetic dataset at ``root`` whose out-of-fold predictions (in ``oof``, dealt over ``folds``) are
    confident copies of its clean masks; then one sample with two or more objects loses its last class
    from the mask on disk (a person forgot to draw it). Returns (dataset, victim, erased class id, the
    erased pixels (H, W) bool)."""
    from PIL import Image

    from masklab.curation.out_of_fold import OutOfFoldWriter
    from masklab.data.images import read_mask
    from masklab.data.synth import synthesize

    dataset = synthesize(root, count=count, size=48, seed=seed)
    writer = OutOfFoldWriter(oof, "model")
    for k, sample in enumerate(dataset.samples):
        writer.add(sample.id, k % folds, confident(read_mask(dataset.root / sample.mask), classes=4))
    writer.close()
    victim = next(s for s in dataset.samples if len(np.unique(read_mask(dataset.root / s.mask))) >= 3)
    mask = read_mask(dataset.root / victim.mask).copy()
    erased = int(np.unique(mask)[-1])
    was_there = mask == erased
    mask[was_there] = 0
    Image.fromarray(mask).save(dataset.root / victim.mask)
    return dataset, victim, erased, was_there


def kinds(issues) -> list[str]:
    return sorted(i.kind for i in issues)


def test_agreement_is_no_issue():
    label = scene()
    assert find_issues("a", confident(label), label, label.shape) == []


def test_missing_object_is_found_where_it_is():
    model = scene()
    model[disc(model.shape, (38, 10), 5)] = 1  # an object the mask lacks
    (issue,) = find_issues("a", confident(model), scene(), (96, 128))  # the image is twice the size
    assert issue.kind == "missing_object" and (issue.label_class, issue.model_class) == (0, 1)
    assert issue.area == disc(model.shape, (38, 10), 5).sum() and issue.area_original == 4 * issue.area
    assert issue.bbox == (10, 66, 32, 88)  # x 5..15, y 33..43 (inclusive) at half size
    assert issue.confidence == pytest.approx(0.85, abs=1e-3) and issue.evidence == pytest.approx(0.85 * issue.area,
                                                                                                  rel=1e-3)


def test_spurious_object_and_class_swap_are_typed_by_what_the_model_says():
    label = scene()
    label[disc(label.shape, (38, 10), 5)] = 1  # a blob drawn where nothing is
    model = scene()
    model[model == 2] = 1  # the model is sure the class-2 object is class 1
    found = {i.kind: i for i in find_issues("a", confident(model), label, label.shape)}
    assert sorted(found) == ["class_swap", "spurious_object"]
    assert (found["class_swap"].label_class, found["class_swap"].model_class) == (2, 1)
    assert (found["spurious_object"].label_class, found["spurious_object"].model_class) == (1, 0)


@pytest.mark.parametrize("grow, detail", [(2, "dilated"), (-2, "eroded")])
def test_a_mask_grown_or_shrunk_by_two_pixels_is_a_boundary_issue_about_two_pixels_wide(grow, detail):
    model = scene()
    label = model.copy()
    obj = model == 2
    changed = ndimage.binary_dilation(obj, iterations=abs(grow)) if grow > 0 else \
        ndimage.binary_erosion(obj, iterations=-grow)
    label[obj] = 0
    label[changed] = 2
    (issue,) = find_issues("a", confident(model), label, label.shape)
    assert issue.kind == "boundary" and issue.detail == detail and issue.label_class == 2
    assert 1.0 <= issue.width / 0.85 <= 3.0  # mean width of the disputed band, in px


def test_a_small_object_drawn_far_too_wide_is_a_dilated_boundary_not_a_spurious_object():
    model = np.zeros((48, 64), np.uint8)
    model[disc(model.shape, (24, 30), 3)] = 1  # a small nucleus
    label = np.zeros_like(model)
    label[disc(label.shape, (24, 30), 8)] = 1  # its outline drawn 5 px too wide: 85% of the mask is disputed
    (issue,) = find_issues("a", confident(model), label, label.shape)
    assert (issue.kind, issue.detail) == ("boundary", "dilated")


def test_ignored_and_barely_disputed_pixels_do_not_count():
    model = scene()
    model[disc(model.shape, (38, 10), 5)] = 1
    label = scene()
    label[disc(label.shape, (38, 10), 6)] = 255  # the region is ignore_index in the mask
    assert find_issues("a", confident(model), label, label.shape, ignore_index=255) == []
    # a model that prefers the object by a hair (0.45 vs 0.35) is no evidence
    assert find_issues("a", confident(model, p=0.45), scene(), label.shape) == []


@pytest.mark.parametrize("score", ["pixels", "objects"])
@pytest.mark.parametrize("planted, side, kind", [("missing", "unlabelled", "missing_object"),
                                                  ("spurious", "unsupported", "spurious_object"),
                                                  ("small_spurious", "unsupported", "spurious_object")])
def test_a_planted_error_outranks_the_boundary_noise_every_sample_has(planted, side, kind, score):
    """20 samples whose masks are 1-2 px larger than the model's objects (ordinary imprecision); one also has a
    planted error. It ranks first by either score (a blob of a few pixels only by the object shares), on the
    side and with the kind the error is."""
    rng = np.random.default_rng(0)
    issues, columns = {}, {}
    for k in range(20):
        model = scene()
        label = model.copy()
        label[ndimage.binary_dilation(label == 1, iterations=int(rng.integers(1, 3)))] = 1
        if k == 7 and planted == "missing":
            model[disc(model.shape, (40, 12), 4)] = 2  # an object nobody drew
        elif k == 7:  # a blob drawn where nothing is; a small one disputes far fewer pixels than the noise
            label[disc(label.shape, (40, 12), 4 if planted == "spurious" else 1.5)] = 2
        probs = confident(model)
        issues[f"s{k}"] = find_issues(f"s{k}", probs, label, label.shape)
        columns[f"s{k}"] = {"pixel_quality": pixel_quality(probs, label), **disagreement(probs, label)}
    width = typical_width(issues.values())
    assert 0.85 <= width <= 2 * 0.85
    ids = list(columns)
    scores, sides = suspicion({n: np.array([columns[i][n] for i in ids]) for n in columns["s0"]}, score)
    order = np.argsort(-scores, kind="stable")
    if planted == "small_spurious" and score == "pixels":
        # Its few contradicted pixels are fewer than the noise's: only the object shares see it.
        assert ids[order[0]] != "s7"
        return
    assert ids[order[0]] == "s7" and sides[order[0]] == side and scores[order[0]] == 1.0
    assert worst_kind(evidence_by_kind(issues["s7"], width), side) == kind
    assert columns["s7"][side] > 2 * max(columns[i][side] for i in ids if i != "s7")


def test_scores_are_registered_objects_chosen_by_name(tmp_path):
    """``score=`` names a registered LabelScore: an unknown name is a UserError naming the known ones, and a newly
    registered score ranks find_label_errors' table (here: by pixel quality alone, the erased object first)."""
    from masklab.curation.label_errors import SCORES, LabelScore, ObjectsScore, label_score, register_score
    from masklab.errors import UserError
    from masklab.workflows.label_errors import find_label_errors

    assert list(SCORES) == ["pixels", "objects", "learned"] and isinstance(label_score("objects"), ObjectsScore)
    with pytest.raises(UserError, match=r"score=pixel: expected one of \['pixels', 'objects', 'learned'\]"):
        label_score("pixel")
    columns = {"pixel_quality": np.array([0.9, 0.2, 0.5]), "unsupported": np.array([0.1, 0.0, 0.3]),
               "unlabelled": np.array([0.0, 0.6, 0.1])}
    by_object, sides = suspicion(columns, ObjectsScore())
    assert by_object.tolist() == suspicion(columns, "objects")[0].tolist() == [2 / 3, 1.0, 1.0]
    assert sides.tolist() == ["unsupported", "unlabelled", "unsupported"]

    @register_score
    class Trusting(LabelScore):
        name = "trusting_test"

        def suspicion(self, columns):
            return 1.0 - np.asarray(columns["pixel_quality"], float)

    try:
        dataset, victim, _, _ = erased_object_case(tmp_path / "d", tmp_path / "oof", count=6, seed=3, folds=2)
        found = find_label_errors(tmp_path / "oof", dataset, tmp_path / "out", score="trusting_test")
        assert found.samples["id"].iloc[0] == victim.id
        assert found.samples["suspicion"].tolist() == sorted(1.0 - found.samples["pixel_quality"], reverse=True)
        with pytest.raises(ValueError, match="registered already"):
            register_score(type("Other", (Trusting,), {"name": "trusting_test"}))
    finally:
        del SCORES["trusting_test"]

def test_pixel_quality_is_the_softmin_of_the_labelled_class_probability():
    label = scene()
    assert pixel_quality(confident(label, p=1.0), label) == pytest.approx(1.0)
    probs = confident(label, p=0.9).astype(np.float32)
    assert pixel_quality(probs, label) == pytest.approx(0.9, abs=1e-3)  # every pixel equally sure
    wrong = label.copy()
    wrong[disc(label.shape, (38, 10), 5)] = 2  # a blob the model calls background (P = 0.05)
    q = np.take_along_axis(probs, wrong[None].astype(np.int64), 0)[0].astype(np.float64)
    w = np.exp(-q / 0.1)
    assert pixel_quality(probs, wrong) == pytest.approx((q * w).sum() / w.sum(), rel=1e-5)
    assert pixel_quality(probs, wrong) < 0.2  # 2% of the pixels are contradicted: they dominate
    ignored = wrong.copy()
    ignored[wrong != label] = 255
    assert pixel_quality(probs, ignored, ignore_index=255) == pytest.approx(0.9, abs=1e-3)


def test_disputed_shares_of_agreement_disagreement_and_an_empty_mask():
    label = scene()
    agree = disagreement(confident(label, p=1.0), label)
    assert agree == {"unsupported": 0.0, "unlabelled": 0.0}
    swapped = scene()
    swapped[swapped == 2] = 1  # the model sees the class-2 object as class 1
    shares = disagreement(confident(swapped, p=1.0), label)
    assert shares["unsupported"] == pytest.approx(1.0)  # none of the class-2 object is class 2 to the model
    fg = (label > 0).sum()  # mass 0.9 per object pixel (above the floor of 0.1)
    assert shares["unlabelled"] == pytest.approx(0.9 * (label == 2).sum() / (0.9 * fg + 0.01 * label.size))
    empty = np.zeros_like(label)
    assert disagreement(confident(empty, p=0.98), empty)["unlabelled"] < 0.5  # a faint model on an empty mask
    assert disagreement(confident(label, p=1.0), empty)["unlabelled"] > 0.7  # objects the mask lacks entirely


def test_workflow_and_command_rank_an_erased_object_first(project, capsys, seed_store):
    """find_label_errors over stored out-of-fold predictions (here: confident copies of the clean masks), after
    one mask on disk lost an object: that sample ranks first as a missing object, the tables are keyed by id and
    logged to the cross-validation's run, and `masklab curate label-errors run_id=...` prints it first."""
    import pandas as pd

    from masklab.tracking.runs import start_run

    from conftest import command_in

    dataset, victim, erased, was_there = erased_object_case(project / "data/synthetic", project / "oof", count=12,
                                                            seed=3, folds=3)
    seed_store(project)
    uri = f"sqlite:///{project}/experiments/mlflow.db"
    parent = start_run(uri, str(project / "experiments/mlartifacts"), "synthetic", "cv-3-folds",
                       {"masklab.command": "cv", "masklab.out_of_fold": str(project / "oof"),
                        "masklab.dataset_root": str(dataset.root)})
    out = project / "experiments/runs/label-errors"
    command_in(project, "curate label-errors", [f"run_id={parent.run_id}", "top=3"], out=out)
    printed = capsys.readouterr().out.splitlines()
    first = next(line for line in printed if line.strip().startswith("1 "))
    assert victim.id in first and "missing_object" in first

    samples = pd.read_parquet(out / "label_errors.parquet")
    assert samples.iloc[0]["id"] == victim.id and samples.iloc[0]["kind"] == "missing_object"
    assert samples.iloc[0]["side"] == "unlabelled" and samples.iloc[0]["unlabelled"] > 0.1
    assert samples.iloc[0]["label_quality"] < samples.iloc[1:]["label_quality"].min()
    assert (samples.iloc[1:]["issues"] == 0).all()
    assert sorted(samples["id"]) == sorted(s.id for s in dataset.samples)
    issues = pd.read_parquet(out / "label_issues.parquet")
    mine = issues[issues["sample_id"] == victim.id]
    assert set(mine["kind"]) == {"missing_object"} and set(mine["model_class"]) == {erased}
    parts = np.bincount(ndimage.label(was_there, np.ones((3, 3)))[0].ravel())[1:]
    assert mine["area"].sum() == parts[parts >= 4].sum()  # every erased pixel (in regions of min_area), nothing else
    for x0, y0, x1, y1 in mine["bbox"]:
        assert was_there[y0:y1, x0:x1].any()
    from mlflow.tracking import MlflowClient

    logged = {f.path for f in MlflowClient(uri).list_artifacts(parent.run_id, "label_errors")}
    assert logged == {"label_errors/label_errors.parquet", "label_errors/label_issues.parquet", "label_errors/explorer"}
    assert "explorer/index.html" in {f.path.split("label_errors/")[1] for f in
                                     MlflowClient(uri).list_artifacts(parent.run_id, "label_errors/explorer")}
    assert any("Explorer (likely label errors, top 12)" in line for line in printed)


def test_review_loop_marks_suspects_then_record_edits_fixes_them_as_new_dvc_versions(project, capsys):
    """Suspects marked needs_review (a review list, the manifest committed as a DVC data version); the person
    fixes the mask; `data record-edits` marks it fixed and commits the next version; git sees both."""
    import pandas as pd
    from PIL import Image

    from masklab.data.edits import record_mask_edits
    from masklab.data.images import read_mask
    from masklab.data.manifest import read_manifest

    from conftest import command_in
    from dvc_project import dvc, git

    git("init", "-q", "-b", "main", cwd=project)
    dvc("init", "-q", cwd=project)
    dataset, victim, erased, was_there = erased_object_case(project / "data/synthetic", project / "oof", count=8,
                                                            seed=5, folds=1)
    record_mask_edits(dataset.root)  # the error is part of the tracked data
    (project / ".gitignore").write_text("experiments/\n")
    dvc("add", "-q", "data/synthetic", cwd=project)
    git("add", "-A", cwd=project)
    git("commit", "-qm", "data v1", cwd=project)

    out = project / "experiments/runs/review"
    command_in(project, "curate label-errors", [f"out_of_fold={project / 'oof'}", f"data_root={dataset.root}",
                                                "review_top=1"], out=out)
    assert {s.id: s.status for s in read_manifest(dataset.root)}[victim.id] == "needs_review"
    assert list(pd.read_csv(out / "review.csv")["id"]) == [victim.id]
    assert "up to date" in dvc("status", "data/synthetic.dvc", cwd=project).stdout  # committed by the command
    assert git("status", "--porcelain", cwd=project).splitlines() == ["M data/synthetic.dvc"]  # (stripped)
    git("commit", "-qam", "data v2: marked for review", cwd=project)

    fixed = read_mask(dataset.root / victim.mask).copy()
    fixed[was_there] = erased
    Image.fromarray(fixed).save(dataset.root / victim.mask)  # the person's fix
    capsys.readouterr()
    command_in(project, "data record-edits", [f"data.root={dataset.root}"])
    assert f"recorded 1 new or edited label(s): {victim.id}" in capsys.readouterr().out
    rows = {s.id: s for s in read_manifest(dataset.root)}
    assert rows[victim.id].status == "fixed" and sum(s.status == "fixed" for s in rows.values()) == 1
    assert "up to date" in dvc("status", "data/synthetic.dvc", cwd=project).stdout
    git("commit", "-qam", "data v3: fixed", cwd=project)
    assert len(git("log", "--oneline", "--", "data/synthetic.dvc", cwd=project).splitlines()) == 3


def test_data_mark_reads_review_lists_and_names_what_is_wrong(project, capsys):
    """`data mark ids=...`: a CSV with an id column, a text file of ids or a list; a CSV without an id
    column, an unknown id or status is a one-line error, and nothing is written."""
    from masklab.commands.data import mark
    from masklab.config import compose
    from masklab.data.manifest import read_manifest
    from masklab.data.synth import synthesize

    from conftest import exits_as_user_error

    dataset = synthesize(project / "data/synthetic", count=6, size=32, seed=1)
    ids = [s.id for s in dataset.samples]
    root = dataset.root

    def run(*overrides: str) -> None:
        mark(compose("data_mark", [f"data.root={root}", *overrides]))

    (project / "ids.txt").write_text(f"{ids[0]}\n\n{ids[1]}\n")
    run(f"ids={project / 'ids.txt'}")
    run(f"ids=[{ids[2]}]", "status=fixed")
    assert {s.id: s.status for s in read_manifest(root) if s.status} == {ids[0]: "needs_review", ids[1]: "needs_review",
                                                                          ids[2]: "fixed"}
    (project / "bad.csv").write_text("sample\nx\n")
    before = (root / "manifest.jsonl").read_bytes()
    assert "no 'id' column" in exits_as_user_error("data mark", lambda: run(f"ids={project / 'bad.csv'}"), capsys)
    assert "no sample ['ghost']" in exits_as_user_error("data mark", lambda: run("ids=[ghost]"), capsys)
    assert "status=wrong" in exits_as_user_error("data mark", lambda: run(f"ids=[{ids[3]}]", "status=wrong"), capsys)
    assert (root / "manifest.jsonl").read_bytes() == before
