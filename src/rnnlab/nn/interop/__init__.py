"""Copy recurrent layers between rnnlab, ``torch.nn`` and Keras 3, weights and all.

:mod:`~rnnlab.nn.interop.torch_modules` converts from and to ``torch.nn.LSTM``, ``GRU`` and
``RNN``; :mod:`~rnnlab.nn.interop.keras_layers` from and to Keras's ``LSTM``, ``GRU`` and
``SimpleRNN``. Each module's docstring gives the weight and bias conventions.

The public entry points are methods of every rnnlab layer (``LSTM``, ``GRU``, ``RNN``):
``LSTM.from_torch(module)``, ``layer.to_torch()``, ``LSTM.from_keras(source)`` and
``layer.to_keras()``. They are attached here because the dependency runs one way: this
package imports :mod:`rnnlab.nn.layers`, which never imports it, and ``rnnlab.nn`` (whose
``__init__`` runs before any of its modules) imports this package, so the methods are there
whichever way the layers are imported. The functions are importable from here too.
"""

from rnnlab.nn.interop.keras_layers import from_keras, to_keras
from rnnlab.nn.interop.torch_modules import from_torch, to_torch
from rnnlab.nn.layers import RecurrentLayer

__all__ = ["from_torch", "to_torch", "from_keras", "to_keras"]

RecurrentLayer.from_torch = classmethod(from_torch)
RecurrentLayer.to_torch = to_torch
RecurrentLayer.from_keras = classmethod(from_keras)
RecurrentLayer.to_keras = to_keras
