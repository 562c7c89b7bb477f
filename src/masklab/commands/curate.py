"""`masklab curate label-errors`: the most likely label errors of a cross-validated dataset."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from masklab.commands.common import hydra_output_dir
from masklab.console import result
from masklab.errors import UserError


def label_errors(cfg: DictConfig) -> None:
    from masklab.data.format import load_dataset
    from masklab.tracking.runs import RunLog
    from masklab.workflows import find_label_errors, write_label_error_explorer

    run = None
    if cfg.run_id:
        run = RunLog(cfg.logger.tracking_uri, str(cfg.run_id))
        try:
            _, _, tags = run.run_data()
        except Exception as exc:  # MlflowException: no such run in this store
            raise UserError(f"run_id={cfg.run_id}: no such run in {cfg.logger.tracking_uri}") from exc
        if tags.get("masklab.command") != "cv" or "masklab.out_of_fold" not in tags:
            raise UserError(f"run_id={cfg.run_id}: not a cross-validation with out-of-fold predictions "
                            f"(masklab.command={tags.get('masklab.command')}); run `masklab cv` and pass its "
                            "parent run")
        oof, root, task = tags["masklab.out_of_fold"], tags["masklab.dataset_root"], tags.get("masklab.task")
    elif cfg.out_of_fold and cfg.data_root:
        oof, root, task = cfg.out_of_fold, cfg.data_root, None
    else:
        raise UserError("curate label-errors needs run_id=<the cv parent run> or out_of_fold=<folder> "
                        "data_root=<dataset folder>")
    if not Path(root).is_dir():
        raise UserError(f"dataset {root} (the one cross-validated) does not exist here")
    dataset = load_dataset(root)
    # Objects without class masks: an instance dataset, compared as its objects' class map.
    task = task or ("instance" if any(s.objects and not s.mask for s in dataset.samples) else "semantic")
    found = find_label_errors(oof, dataset, hydra_output_dir(), run, task=task, min_area=int(cfg.min_area),
                              min_margin=float(cfg.min_margin), score=str(cfg.score))
    top = found.top(int(cfg.top))
    issues = found.issues
    lines = [f"Most likely label errors of {root} ({len(found.samples)} samples, ranked by score={cfg.score}; "
             "label quality = the share of samples that look worse):",
             f"{'rank':>4}  {'quality':>7}  {'suspicion':>9}  {'disputed share':<22} {'kind':<16} {'fold':>4}  id   "
             "(region x0,y0,x1,y1)"]
    for row in top.itertuples(index=False):
        mine = issues[(issues["sample_id"] == row.id) & (issues["kind"] == row.kind)]
        where = ",".join(map(str, mine.sort_values("evidence").iloc[-1]["bbox"])) if len(mine) else "-"
        share = f"{getattr(row, row.side):.2f} {row.side}"
        lines.append(f"{row.rank:>4}  {row.label_quality:>7.3f}  {row.suspicion:>9.3f}  {share:<22} "
                     f"{row.kind or '-':<16} {row.fold:>4}  {row.id}   ({where})")
    lines.append(f"Tables: {found.folder}" + (f"; logged to MLflow run {found.run_id}" if found.run_id else ""))
    if int(cfg.explorer_top) > 0:
        index = write_label_error_explorer(found, dataset, oof, int(cfg.explorer_top), task=task, run=run)
        lines.append(f"Explorer (likely label errors, top {min(int(cfg.explorer_top), len(found.samples))}): {index}")
    result("\n".join(lines), __name__)
    if int(cfg.review_top) > 0:
        mark_for_review(dataset, found, int(cfg.review_top))


def mark_for_review(dataset, found, count: int) -> None:
    """Mark the ``count`` most suspicious samples (with any issue) ``needs_review`` in the manifest, write the
    review list (``review.csv``: id, image, mask, kind, label quality, region) and commit the data version."""
    import pandas as pd

    from masklab.commands.data import commit_data_version
    from masklab.data.edits import mark_status
    from masklab.files import atomic_write

    root = dataset.root
    picked = found.samples[found.samples["issues"] > 0].head(count)
    rows = {s.id: s for s in dataset.samples}
    worst = found.issues.sort_values("evidence", ascending=False).drop_duplicates("sample_id").set_index("sample_id")
    listing = pd.DataFrame([{"id": r.id, "image": rows[r.id].image, "mask": rows[r.id].mask, "kind": r.kind,
                             "label_quality": r.label_quality,
                             "region": list(worst.loc[r.id, "bbox"]) if r.id in worst.index else None}
                            for r in picked.itertuples(index=False)])
    path = atomic_write(found.folder / "review.csv", lambda tmp: listing.to_csv(tmp, index=False))
    changed = mark_status(root, list(picked["id"]), "needs_review")
    result(f"Marked {len(changed)} sample(s) needs_review in {root / 'manifest.jsonl'}; review list: {path}. "
           f"After fixing their masks: `masklab data record-edits data.root={root}` marks them fixed.", __name__)
    if changed:
        commit_data_version(root)
