"""What runs a recurrent layer: the reference loop, the pure-torch fused path, the C++ kernels.

:func:`scan_layer` (in :mod:`rnnlab.nn.backends.dispatch`) is the one place that decides; its
docstring is the routing table, from the call's conditions (cell type, grad or not, mask,
dtype, bidirectional, bf16 or autocast, ``return_gates``, extension available) to the kernel
that runs. :func:`route_layer` returns that decision without running it.

Modules: :mod:`~rnnlab.nn.backends.reference` (the readable loop over the cell),
:mod:`~rnnlab.nn.backends.fused` (pure torch, hand-written backpropagation through time),
:mod:`~rnnlab.nn.backends.compiled` (autograd Functions around the C++ kernels of
:mod:`~rnnlab.nn.backends._ext`), :mod:`~rnnlab.nn.backends.native` (torch's own recurrent ops,
oneDNN or cuDNN, on rnnlab's parameters), :mod:`~rnnlab.nn.backends._gemm` (oneDNN matrix products).

:func:`compiled_unavailable` is the public way to ask why the compiled kernels cannot run a
cell on an input (None when they can).
"""

from rnnlab.nn.backends.compiled import compiled_unavailable
from rnnlab.nn.backends.dispatch import (
    BACKENDS,
    PRECISIONS,
    Backend,
    Kernel,
    LayerScan,
    Precision,
    Route,
    autocast_input,
    resolve_backend,
    route_layer,
    scan_layer,
)
from rnnlab.nn.backends.precision import native_bf16
from rnnlab.nn.backends.stack import route_stack, scan_stack

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "Precision",
    "Kernel",
    "LayerScan",
    "Route",
    "autocast_input",
    "compiled_unavailable",
    "native_bf16",
    "resolve_backend",
    "route_layer",
    "route_stack",
    "scan_layer",
    "scan_stack",
]
