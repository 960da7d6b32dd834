"""Models built from :mod:`rnnlab.nn` layers, which tasks (:mod:`rnnlab.tasks`) train: the
classifiers of image rows and of word ids of the tutorial this project follows (Olah's
"Understanding LSTM Networks" (2015) and its two experiments), sharing
:class:`RecurrentStack`."""

from rnnlab.models.classifiers import (
    RecurrentStack,
    SequenceClassifier,
    TextClassifier,
    check_bf16,
)

__all__ = ["RecurrentStack", "SequenceClassifier", "TextClassifier", "check_bf16"]
