"""Offline data sets: UCI regression, a 1-D GP toy, small classification sets, Fashion-MNIST,
and generated sequences for GP-VAEs (:mod:`bayesdl.data.sequences`).

Every loader returns standardised train/test tensors built only from locally installed
packages; nothing is downloaded. See :mod:`bayesdl.data.uci` and
:mod:`bayesdl.data.classification` for where each table comes from.
"""

from __future__ import annotations

from bayesdl.data.binarized_images import (
    BINARIZED_DATASETS,
    BinarizedImages,
    DynamicBinarization,
    binarize,
    load_binarized_images,
)
from bayesdl.data.classification import CLASSIFICATION_DATASETS, load_classification
from bayesdl.data.fashion_mnist import load_fashion_mnist
from bayesdl.data.sequences import (
    SequenceData,
    gp_trajectories,
    healing_fashion_mnist,
    moving_ball,
)
from bayesdl.data.splits import (
    ClassificationData,
    RegressionData,
    standardise,
    train_test_split,
)
from bayesdl.data.toy import load_toy1d
from bayesdl.data.uci import UCI_DATASETS, load_uci

__all__ = [
    "BINARIZED_DATASETS",
    "BinarizedImages",
    "CLASSIFICATION_DATASETS",
    "ClassificationData",
    "DynamicBinarization",
    "RegressionData",
    "SequenceData",
    "UCI_DATASETS",
    "binarize",
    "gp_trajectories",
    "healing_fashion_mnist",
    "load_binarized_images",
    "load_classification",
    "load_fashion_mnist",
    "load_toy1d",
    "load_uci",
    "moving_ball",
    "standardise",
    "train_test_split",
]
