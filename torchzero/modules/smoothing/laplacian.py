"""Laplacian smoothing of the update (Osher et al.): a solve with ``I − σL`` for the periodic 1-D Laplacian L."""
from __future__ import annotations

import math

import torch

from ...core import Target, Transform
from ...utils.checks import check_non_negative, check_range
from ...utils.torch_tools import vec_to_tensors

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _fft_dtype(dtype: torch.dtype) -> torch.dtype:
    """FFTs of half-precision tensors are computed in float32 (CPU FFTs don't support them)."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def laplacian_denominator(n: int, sigma: float, dtype: torch.dtype, device: torch.types.Device) -> torch.Tensor:
    """Eigenvalues of ``I − σL`` for the ``n × n`` periodic Laplacian L (stencil [1, −2, 1] with wrap-around),
    at the frequencies of ``torch.fft.rfft``: ``1 + 4σ·sin²(πk/n)``, ``k = 0, …, n//2``.

    This equals ``1 − σ·FFT(v)`` with ``v = [−2, 1, 0, …, 0, 1]`` (the first row of L), in closed form: exact for
    every ``n ≥ 1`` (for ``n ≤ 2`` both neighbours of an element are the same element) and without the rounding
    of an FFT. The values are ≥ 1 for ``σ ≥ 0``, so the solve is always well posed.
    """
    k = torch.arange(n // 2 + 1, dtype=dtype, device=device)
    return torch.sin(k * (math.pi / n)).square_().mul_(4 * sigma).add_(1)


def laplacian_smooth(vec: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """Solves ``(I − σL) y = vec`` for a 1-D real ``vec``: ``y = IRFFT(RFFT(vec) / denominator)``, where
    ``denominator = laplacian_denominator(vec.numel(), σ, ...)``. Returns a new tensor of ``vec``'s dtype."""
    x = vec.to(denominator.dtype)
    y = torch.fft.irfft(torch.fft.rfft(x) / denominator, n=x.numel())
    return y.to(vec.dtype)


class LaplacianSmoothing(Transform):
    """Laplacian smoothing: solves ``(I − σL) y = u`` with L the 1-D periodic discrete Laplacian.

    L has the stencil [1, −2, 1] with wrap-around on the flattened tensor, so the output satisfies
    ``(1 + 2σ) yᵢ − σ (yᵢ₋₁ + yᵢ₊₁) = uᵢ`` (indices cyclic). ``I − σL`` is circulant, so the solve is done with FFTs:
    ``y = IFFT(FFT(u) / (1 − σ·FFT(v)))``, ``v = [−2, 1, 0, …, 0, 1]``, i.e. each frequency k of u is divided by
    ``1 + 4σ sin²(πk/n)`` (real FFTs, the denominators in closed form). The zero frequency is kept, so
    ``Σy = Σu``; high frequencies are damped, which reduces the variance of stochastic gradients.

    ``layerwise=True``: each tensor with more than ``min_numel`` elements is smoothed on its own (smaller ones are
    passed unchanged); its denominator is cached in state ``'denominator'`` (the ``rfft`` half, length
    ``numel//2 + 1``), built with the σ of its first use. ``layerwise=False``: all tensors are concatenated into
    one vector and smoothed together, with the denominator cached in global state ``'full_denominator'``. After
    changing σ, call ``reset()`` to rebuild the cached denominators. Half-precision tensors are smoothed in float32.

    Args:
        sigma: smoothing strength σ (non-negative; 0 is the identity; per-parameter setting with
            ``layerwise=True``, the first parameter's value otherwise). Defaults to 1.
        layerwise: smooth each tensor separately (True) or all tensors as one vector (False). Defaults to True.
        min_numel: with ``layerwise``, tensors with at most this many elements are not smoothed. Defaults to 4.
        target: what to transform. Defaults to ``'update'``.

    Reference:
        S. Osher, B. Wang, P. Yin, X. Luo, F. Barekat, M. Pham, A. Lin, "Laplacian smoothing gradient descent",
        Research in the Mathematical Sciences 9(3):55, 2022.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.LaplacianSmoothing(sigma=1.0), tz.m.LR(1e-2))
        ```
    """

    _readonly_input = True

    def __init__(self, sigma: float = 1, layerwise: bool = True, min_numel: int = 4, target: Target = "update"):
        check_non_negative("LaplacianSmoothing", "sigma", sigma)
        if not isinstance(layerwise, bool):
            raise TypeError(f"LaplacianSmoothing: layerwise must be a bool, got {type(layerwise).__name__}")
        if isinstance(min_numel, bool) or not isinstance(min_numel, int):
            raise TypeError(f"LaplacianSmoothing: min_numel must be an int, got {type(min_numel).__name__}")
        check_range("LaplacianSmoothing", "min_numel", min_numel, low=0)
        super().__init__(dict(sigma=sigma, layerwise=layerwise, min_numel=min_numel), target=target)

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        s0 = settings[0]
        if s0["layerwise"]:
            min_numel = s0["min_numel"]
            sigmas = self.unpack_settings(settings, "sigma")
            out = []
            for t, state, sigma in zip(tensors, states, sigmas):
                n = t.numel()
                if n <= min_numel:
                    out.append(t.clone())  # the input may be the gradient itself (read-only input)
                    continue
                denominator = state.get("denominator")
                if denominator is None:
                    denominator = state["denominator"] = laplacian_denominator(n, sigma, _fft_dtype(t.dtype),
                                                                               t.device)
                out.append(laplacian_smooth(t.reshape(-1), denominator).view_as(t))
            return out

        vec = torch.cat([t.reshape(-1) for t in tensors])
        n = vec.numel()
        denominator = self.global_state.get("full_denominator")
        if denominator is None or denominator.numel() != n // 2 + 1:
            denominator = self.global_state["full_denominator"] = laplacian_denominator(
                n, s0["sigma"], _fft_dtype(vec.dtype), vec.device)
        return vec_to_tensors(laplacian_smooth(vec, denominator), tensors)
