"""Datasets: :mod:`decomp.data.tabular` for the numpy problems (LIBSVM files, built-in and
synthetic sets, contiguous/iid shards) and :mod:`decomp.data.classification` for torch
training (:class:`~decomp.data.classification.SplitDataset`, partitions over workers), with
:mod:`decomp.data.unpickle` (the restricted pickle reader of CIFAR-10's batches). None imports
torch. Every loader refuses NaN/inf features with a DataError naming the file and entry.

``from decomp.data import load_dataset`` is the tabular loader; the classification loaders are
``decomp.data.classification.load`` (also reachable as ``decomp.datasets``).
"""

from decomp.data.tabular import Dataset, data_dir, find_data_file, load_dataset, partition

__all__ = ["Dataset", "data_dir", "find_data_file", "load_dataset", "partition"]
