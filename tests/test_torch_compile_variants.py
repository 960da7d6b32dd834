"""torch.compile on the LSTM and GRU variants (issue 23: rnnlab/nn/backends/variant_ops.py):
the variant operators' fake kernels against the real ones, and models of variant layers that
compile whole and equal eager. The helpers and the extension fixture are test_torch_compile.py's.
"""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.nn.variant_gru import VariantGRUCell
from test_torch_compile import (
    TinyModel,
    _mask,
    assert_equal_runs,
    compiled_whole,
    ids,
    infer,
    train_step,
)
from test_torch_compile import ext as compiled_extension_and_fresh_dynamo

ext = compiled_extension_and_fresh_dynamo  # autouse: builds the extension, resets Dynamo


# -- the LSTM and GRU variants (rnnlab/nn/backends/variant_ops.py) ------------------------------
def _variant_cases():
    """lstm_variant_forward / _backward on every shape of saved list: LayerNorm, projection,
    peepholes, the masks, the fused-input path (float32, per-step GEMMs: mode 2), B = 1 (xt a
    view of x), float64 and bf16."""
    from rnnlab.nn.variants import VariantLSTMCell

    ops = torch.ops.rnnlab
    for B, T, options, masks, mode, dtype, bf16 in [
        (3, 5, {"layer_norm": True}, "", 0, torch.float32, False),
        (3, 5, {"proj_size": 4, "peepholes": True}, "rzh", 2, torch.float32, False),  # fused
        (1, 4, {"proj_size": 4}, "z", 1, torch.float32, False),
        (
            2,
            3,
            {"layer_norm": True, "proj_size": 4, "peepholes": True},
            "r",
            0,
            torch.float64,
            False,
        ),
        (2, 3, {"layer_norm": True, "proj_size": 4}, "rz", 0, torch.float32, True),
    ]:
        torch.manual_seed(B * T)
        cell = VariantLSTMCell(6, 8, **options).to(dtype)
        R = cell.output_size
        x, h0, c0 = (
            torch.randn(B, T, 6, dtype=dtype),
            torch.randn(B, R, dtype=dtype),
            torch.randn(B, 8, dtype=dtype),
        )
        names = ("weight_ih", "weight_hh", "bias", "weight_hr", "ln_ih_weight", "ln_hh_weight",
                 "ln_c_weight", "ln_c_bias", "peephole")  # fmt: skip
        params = [getattr(cell, n, None) for n in names]
        params = [None if p is None else p.detach() for p in params]
        noise = [
            (torch.rand(B, R, dtype=dtype) < 0.7).to(dtype) / 0.7 if "r" in masks else None,
            (torch.rand(B, T, 8, dtype=dtype) < 0.3).to(dtype) if "z" in masks else None,
            (torch.rand(B, T, R, dtype=dtype) < 0.3).to(dtype) if "h" in masks else None,
        ]
        mask = _mask(B, T) if B > 1 else None
        args = (x, h0, c0, params, noise, mask, bool(B % 2), cell.ln_eps, True, bf16, mode)
        yield ops.lstm_variant_forward, args
        out, h, c, *saved = ops.lstm_variant_forward(*args)
        grads = (torch.randn_like(out), torch.randn_like(h), torch.randn_like(c))
        for need_dx in (True, False):
            back = (
                *grads,
                saved,
                params,
                noise,
                mask,
                bool(B % 2),
                cell.ln_eps,
                need_dx,
                bf16,
                mode,
            )
            yield ops.lstm_variant_backward, back
        yield ops.lstm_variant_forward, (*args[:8], False, bf16, mode)  # inference: 3 outputs


def test_variant_fake_kernels_match_the_real_ones() -> None:
    for op, args in _variant_cases():
        result = torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
        assert set(result.values()) == {"SUCCESS"}, (op, result)


@pytest.mark.parametrize(
    "options", [{"layer_norm": True}, {"proj_size": 8, "peepholes": True}], ids=str
)
def test_lstm_variants_compile_whole(options) -> None:
    """A model of variant LSTMs compiles with fullgraph=True around the variant kernel's two
    operators; training and inference equal eager."""
    model = TinyModel(rnnlab.LSTM, **options)
    fast, recorder = compiled_whole(model)
    x = ids()
    assert_equal_runs(train_step(fast, x), train_step(model, x))
    assert recorder.rnnlab_ops() == {"lstm_variant_forward", "lstm_variant_backward"}
    recorder.ops.clear()
    model.eval()
    assert_equal_runs(infer(fast, x), infer(model, x))
    assert recorder.rnnlab_ops() == {"lstm_variant_forward"}


def test_noise_masks_compile_whole() -> None:
    """Recurrent dropout and zoneout in training: the layer draws its masks inside the graph.
    With the same generator state, the compiled model draws the same masks as eager."""
    model = TinyModel(rnnlab.LSTM, recurrent_dropout=0.3, zoneout=0.2)
    fast = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = ids()
    torch.manual_seed(5)
    got = train_step(fast, x)
    torch.manual_seed(5)
    assert_equal_runs(got, train_step(model, x))


def _gru_variant_cases():
    """gru_variant_forward / _backward with and without LayerNorm and the masks, B = 1 (xt a
    view of x), float64."""
    ops = torch.ops.rnnlab
    for B, T, ln, masks, dtype in [
        (3, 5, True, "rh", torch.float32),
        (1, 4, False, "", torch.float32),
        (2, 3, True, "h", torch.float64),
        (3, 2, False, "r", torch.float32),
    ]:
        torch.manual_seed(B * T)
        cell = VariantGRUCell(6, 8, layer_norm=ln).to(dtype)
        x, h0 = torch.randn(B, T, 6, dtype=dtype), torch.randn(B, 8, dtype=dtype)
        names = ("weight_ih", "weight_hh", "bias", "bias_hn", "ln_ih_weight", "ln_hh_weight")
        params = [
            None if getattr(cell, n, None) is None else getattr(cell, n).detach() for n in names
        ]
        noise = [
            (torch.rand(B, 8, dtype=dtype) < 0.7).to(dtype) / 0.7 if "r" in masks else None,
            (torch.rand(B, T, 8, dtype=dtype) < 0.3).to(dtype) if "h" in masks else None,
        ]
        mask = _mask(B, T) if B > 1 else None
        args = (x, h0, params, noise, mask, bool(B % 2), cell.ln_eps, True, 0)
        yield ops.gru_variant_forward, args
        out, h, *saved = ops.gru_variant_forward(*args)
        for need_dx in (True, False):
            back = (torch.randn_like(out), torch.randn_like(h), saved, params, noise, mask,
                    bool(B % 2), cell.ln_eps, need_dx, 0)  # fmt: skip
            yield ops.gru_variant_backward, back
        yield ops.gru_variant_forward, (*args[:7], False, 0)


def test_gru_variant_fake_kernels_match_the_real_ones() -> None:
    for op, args in _gru_variant_cases():
        result = torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
        assert set(result.values()) == {"SUCCESS"}, (op, result)


def test_gru_variants_compile_whole() -> None:
    model = TinyModel(rnnlab.GRU, layer_norm=True, zoneout=0.1)
    fast, recorder = compiled_whole(model)
    x = ids()
    torch.manual_seed(3)
    got = train_step(fast, x)
    torch.manual_seed(3)
    assert_equal_runs(got, train_step(model, x))
    assert recorder.rnnlab_ops() == {"gru_variant_forward", "gru_variant_backward"}
    recorder.ops.clear()
    model.eval()
    assert_equal_runs(infer(fast, x), infer(model, x))
    assert recorder.rnnlab_ops() == {"gru_variant_forward"}
