"""Models built from :mod:`rnnlab.nn` layers, which tasks (:mod:`rnnlab.tasks`) train: the
classifiers of image rows (MNIST read row by row) and of word ids (IMDB reviews), sharing
:class:`RecurrentStack`."""

from rnnlab.models.classifiers import (
    RecurrentStack,
    SequenceClassifier,
    TextClassifier,
    check_bf16,
    layer_options,
    model_precision,
)

__all__ = [
    "RecurrentStack",
    "SequenceClassifier",
    "TextClassifier",
    "check_bf16",
    "layer_options",
    "model_precision",
]
