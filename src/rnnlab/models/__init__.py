"""Models built from :mod:`rnnlab.nn` layers, which tasks (:mod:`rnnlab.tasks`) train: the
tutorial's classifiers of image rows and of word ids, sharing :class:`RecurrentStack`."""

from rnnlab.models.classifiers import (
    RecurrentStack,
    SequenceClassifier,
    TextClassifier,
    check_bf16,
)

__all__ = ["RecurrentStack", "SequenceClassifier", "TextClassifier", "check_bf16"]
