"""Datasets: the one internal format, ``data/<name>/{classes.yaml, manifest.jsonl, images/, masks/, objects/}``,
and everything that imports, checks, splits and edits it.

Importers write the format through :class:`masklab.data.writer.DatasetWriter`; everything downstream reads it
through :func:`masklab.data.manifest.load_dataset` (rows) and :mod:`masklab.data.images` /
:func:`masklab.data.objects.read_objects` (pixels). Nothing else in masklab touches these files directly. The
format, one concern a module: :mod:`~masklab.data.classes` (classes.yaml), :mod:`~masklab.data.manifest` (rows,
splits, statuses), :mod:`~masklab.data.sample_files` (file names, checksums), :mod:`~masklab.data.images`,
:mod:`~masklab.data.rle` (compressed COCO RLE), :mod:`~masklab.data.objects`, :mod:`~masklab.data.writer`, and
:mod:`~masklab.data.errors` (:class:`DatasetFormatError`).

Format v2 (a v1 dataset is a valid v2 dataset): a manifest row may also hold ``objects`` (a JSON
file of instance objects, overlaps allowed), any split name (``pool`` = unlabeled images), ``fold``,
``status`` and any other key, which every rewrite keeps verbatim (:attr:`Sample.extra`).
v1 synthetic datasets keep their ``instances/`` 16-bit instance-id maps; :func:`read_objects`
reads both.
"""
