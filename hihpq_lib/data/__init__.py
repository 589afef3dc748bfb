"""Datasets and retrieval splits: CIFAR-10, Flickr25K, NUS-WIDE and user image folders.

This package is the first stage of the pipeline (data → backbone features → quantizer → ...).
It finds the images, loads them into an :class:`ImageDataset` and draws the index splits
(:class:`Splits`) of the retrieval protocols used by HiHPQ (Qiu et al., AAAI 2024), which
follow the reference implementation ``zexuanqiu/HiHPQ`` (``data.py``):

* **CIFAR-10 protocol I**: the 60,000 train+test images are pooled; per class 1,000 random
  images are queries and the other 5,000 are both the database and the training set
  (10,000 queries / 50,000 database / 50,000 training images).
* **CIFAR-10 protocol II**: same queries and database; the training set is 500 images per
  class taken from the database (10,000 / 50,000 / 5,000).
* **Flickr25K**: 2,000 random queries, the rest is the database, 5,000 of which train.
* **NUS-WIDE**: the published lists ``test.txt`` (queries), ``database.txt`` and
  ``train.txt`` (or ``train_10500.txt``).

On top of the reference, every split carries a **validation** pair carved from the database
side only: ``val_query`` (``n_val_per_class`` images per class drawn from the database) and
``val_database`` (the database minus ``val_query``). Model selection must use only
``(val_query, val_database)``; the test queries are never looked at.

Modules: ``dataset`` (the :class:`ImageDataset` container), ``images`` (image I/O),
``sources`` (archives and the dataset readers), ``splits`` (the protocols' splits),
``taxonomy`` (class hierarchies read from files and their levels); their
public names are re-exported here. Next to them, ``transforms`` (evaluation transform and
augmentations), ``backbones`` (frozen feature extractors) and ``features`` (the feature cache)
are imported on their own.

Examples
--------
>>> import numpy as np
>>> labels = np.repeat(np.arange(10), 6000)          # CIFAR-10 sized labels, no images
>>> s = cifar10_splits(labels, protocol="II", seed=0)
>>> s.sizes()
{'train': 5000, 'query': 10000, 'database': 50000, 'val_query': 1000, 'val_database': 49000}
"""

from __future__ import annotations

from hihpq_lib.utils.optional import require as _require

for _name in ("PIL",):  # the ``data`` extra: say so before any import fails
    _require(_name, "data")

from hihpq_lib.data.dataset import (
    CorruptImageError,
    DatasetNotFoundError,
    ImageDataset,
    content_fingerprint,
)
from hihpq_lib.data.images import (
    AUGMENT_READ_MARGIN,
    IMAGE_EXTENSIONS,
    EncodedImages,
    LazyImages,
    folder_read_size,
    read_image_file,
    read_images,
    reference_read_size,
)
from hihpq_lib.data.sources import (
    CIFAR10_CLASSES,
    CIFAR10_SUPERCLASSES,
    DATASETS,
    folder_title,
    load_cifar10,
    load_dataset,
    load_flickr25k,
    load_image_folder,
    load_nuswide,
    looks_like_image_folder,
    read_list_file,
    read_superclass_file,
    resolve_cifar10,
)
from hihpq_lib.data.splits import (
    FOLDER_RULE,
    QUERY_FOLDER_RULE,
    Splits,
    add_validation,
    cifar10_splits,
    flickr25k_splits,
    folder_splits,
    list_splits,
    load_splits,
    make_splits,
    per_class_splits,
    save_splits,
    subsample_split,
)
from hihpq_lib.data.taxonomy import (
    ClassTree,
    auto_levels,
    class_tree,
    example_chains,
    level_labels,
    read_hierarchy_file,
    resolve_levels,
    superclass_chains,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_SUPERCLASSES",
    "IMAGE_EXTENSIONS",
    "DATASETS",
    "CorruptImageError",
    "DatasetNotFoundError",
    "content_fingerprint",
    "ImageDataset",
    "Splits",
    "resolve_cifar10",
    "load_cifar10",
    "load_flickr25k",
    "load_nuswide",
    "load_image_folder",
    "folder_title",
    "looks_like_image_folder",
    "load_dataset",
    "read_hierarchy_file",
    "superclass_chains",
    "auto_levels",
    "resolve_levels",
    "ClassTree",
    "class_tree",
    "example_chains",
    "level_labels",
    "folder_splits",
    "FOLDER_RULE",
    "QUERY_FOLDER_RULE",
    "read_superclass_file",
    "read_list_file",
    "read_images",
    "read_image_file",
    "LazyImages",
    "EncodedImages",
    "folder_read_size",
    "reference_read_size",
    "AUGMENT_READ_MARGIN",
    "per_class_splits",
    "cifar10_splits",
    "flickr25k_splits",
    "list_splits",
    "make_splits",
    "add_validation",
    "subsample_split",
    "save_splits",
    "load_splits",
]
