"""`masklab curate label-errors`: the most likely label errors of a cross-validated dataset."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from masklab.commands.common import hydra_output_dir
from masklab.console import result
from masklab.errors import UserError


def label_errors(cfg: DictConfig) -> None:
    from masklab.data.manifest import load_dataset
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
                              min_margin=float(cfg.min_margin), score=str(cfg.score), seed=int(cfg.seed))
    from masklab.curation.label_errors import region_order

    top = found.top(int(cfg.top))
    issues = found.issues
    order = region_order(issues)
    lines = [f"Most likely label errors of {root} ({len(found.samples)} samples, ranked by score={cfg.score}; "
             "label quality = the share of samples that look worse):",
             f"{'rank':>4}  {'quality':>7}  {'suspicion':>9}  {'disputed share':<22} {'kind':<16} {'fold':>4}  id   "
             "(region x0,y0,x1,y1)"]
    for row in top.itertuples(index=False):
        mine = issues[(issues["sample_id"] == row.id) & (issues["kind"] == row.kind)]
        where = ",".join(map(str, mine.sort_values(order).iloc[-1]["bbox"])) if len(mine) else "-"
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

    from masklab.commands.common import commit_data_version
    from masklab.data.edits import mark_status
    from masklab.files import atomic_write

    root = dataset.root
    picked = found.samples[found.samples["issues"] > 0].head(count)
    rows = {s.id: s for s in dataset.samples}
    from masklab.curation.label_errors import region_order

    worst = found.issues.sort_values(region_order(found.issues), ascending=False)
    worst = worst.drop_duplicates("sample_id").set_index("sample_id")
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


def _dataset(cfg: DictConfig):
    from masklab.data.open import open_dataset

    return open_dataset(cfg.data, cfg.paths.cache_dir, check=False)


def _embedder(cfg: DictConfig):
    from masklab.workflows import make_embedder

    e = cfg.embedder
    return make_embedder(model=cfg.model_ref, weights=e.weights, encoder=e.encoder or "resnet18",
                         size=e.size, device=str(e.device), batch_size=int(e.batch_size),
                         tracking_uri=cfg.logger.tracking_uri)


def duplicates(cfg: DictConfig) -> None:
    """`masklab curate duplicates`: exact and near-duplicate pairs, leaks across splits first."""
    from masklab.data.duplicates import DuplicateRules
    from masklab.workflows import find_duplicates

    dataset = _dataset(cfg)
    rules = DuplicateRules(int(cfg.max_hash_bits), None if cfg.max_distance is None else float(cfg.max_distance),
                           int(cfg.neighbours), str(cfg.index))
    found = find_duplicates(dataset, _embedder(cfg), rules, cfg.paths.cache_dir, hydra_output_dir())
    n = found.counts()
    lines = [f"{dataset.root}: {found.samples} images; {n['exact']} exact and {n['near']} near-duplicate pair(s) in "
             f"{n['groups']} group(s); {n['leaks']} pair(s) across splits (leaks). Near: pHash within "
             f"{found.rules.max_hash_bits} bits or {found.source} embeddings within cosine distance "
             f"{found.rules.max_distance}."]
    if len(found.pairs):
        lines.append(f"{'leak':<5} {'kind':<6} {'bits':>4} {'distance':>8}  {'found by':<22} pair (split)")
        for row in found.pairs.head(int(cfg.top)).itertuples(index=False):
            lines.append(f"{'yes' if row.leak else '':<5} {row.kind:<6} {row.hash_bits:>4} {row.distance:>8.4f}  "
                         f"{row.found_by:<22} {row.id_a} ({row.split_a}) ~ {row.id_b} ({row.split_b})")
    lines.append(f"Table: {found.path}")
    result("\n".join(lines), __name__)


def similarity(cfg: DictConfig) -> None:
    """`masklab curate similarity`: embeddings, uniqueness, representativeness, clusters and the explorer map."""
    from masklab.workflows import describe_similarity, embed, write_similarity_explorer

    dataset = _dataset(cfg)
    embeddings = embed(dataset, _embedder(cfg), cfg.paths.cache_dir, cfg.split)
    found = describe_similarity(dataset, embeddings, hydra_output_dir(), int(cfg.neighbours), str(cfg.map),
                                int(cfg.seed), None if cfg.clusters is None else int(cfg.clusters))
    table = found.table
    lines = [f"{dataset.root}: {len(table)} samples embedded by {embeddings.source} ({embeddings.computed} computed, "
             f"{embeddings.reused} from the cache), {table['cluster'].nunique()} clusters, map by {cfg.map}.",
             "Most unique (uniqueness, representativeness, cluster):"]
    for row in table.sort_values("uniqueness", ascending=False).head(10).itertuples(index=False):
        lines.append(f"  {row.uniqueness:.3f}  {row.representativeness:.3f}  {row.cluster:>3}  {row.id} ({row.split})")
    lines.append("Tables: " + ", ".join(str(p) for p in found.paths))
    if cfg.explorer:
        index = write_similarity_explorer(dataset, found, Path(hydra_output_dir()) / "explorer",
                                          [Path(t) for t in cfg.tables])
        lines.append(f"Explorer with the map: {index}")
    result("\n".join(lines), __name__)
