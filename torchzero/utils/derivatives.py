"""Derivatives of losses with respect to lists of parameters.

Jacobians and Hessians (exact, through autograd or ``torch.func``), Hessian-vector products (exact
and finite-difference) and Jacobian-vector products (forward-mode and finite-difference).

Conventions shared by every function here:

- A *closure* has the form ``closure(backward=True)``: with ``backward=True`` it zeroes the
  gradients, evaluates the loss, calls ``loss.backward()`` and returns the loss; with
  ``backward=False`` it only evaluates the loss.
- ``fn`` (in :func:`hessian`, :func:`hessian_mat`, :func:`jvp`, :func:`jvp_fd_forward`,
  :func:`jvp_fd_central`) is a callable returning a scalar loss computed from ``params``. It is called
  as ``fn(backward=False)`` when its signature has a ``backward`` parameter (so a closure can be
  passed directly) and as ``fn()`` otherwise.
- Flattened ("``_mat``") results order the parameters as given, each raveled row-major.
- Finite-difference helpers shift the parameters in place under ``torch.no_grad()``, always restore
  them by copying the saved values back (bit-exact, also when the closure raises) and leave
  ``p.grad`` set to ``None``.

Functional derivatives (:func:`hessian`, :func:`hessian_mat`, :func:`jvp`) need the loss as a function
of the parameter values. ``fn`` reads the parameters directly, so while it runs every torch operation
that receives one of ``params`` as an argument receives the corresponding functional input instead
(a :class:`torch.overrides.TorchFunctionMode`). The parameters themselves are never modified, and the
substitution ends when ``fn`` returns or raises.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.autograd.forward_ad as fwAD
from torch.overrides import TorchFunctionMode

__all__ = [
    "jacobian_wrt",
    "flatten_jacobian",
    "jacobian_and_hessian_wrt",
    "jacobian_and_hessian_mat_wrt",
    "hessian",
    "hessian_mat",
    "jvp",
    "jvp_fd_forward",
    "jvp_fd_central",
    "hvp",
    "hvp_fd_forward",
    "hvp_fd_central",
]


# ----------------------------------------------------------------------------------------------
# private helpers
# ----------------------------------------------------------------------------------------------


def _flatten_outputs(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenation of the raveled output tensor(s) as one 1-D tensor."""
    if isinstance(output, torch.Tensor):
        return output.reshape(-1)
    output = list(output)
    if len(output) == 1:
        return output[0].reshape(-1)
    return torch.cat([o.reshape(-1) for o in output])


def _zero_jacobian(n_out: int, w: torch.Tensor) -> torch.Tensor:
    return torch.zeros((n_out, *w.shape), dtype=w.dtype, device=w.device)


def _call_without_backward(fn: Callable[..., Any]) -> Any:
    """Calls ``fn(backward=False)`` if ``fn`` accepts ``backward`` (by name or through ``**kwargs``, as the closure
    wrapper of ``Modular`` does), ``fn(False)`` if it takes ``*args`` only, else ``fn()``."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return fn()
    kinds = {p.kind for p in parameters.values()}
    if "backward" in parameters or inspect.Parameter.VAR_KEYWORD in kinds:
        return fn(backward=False)
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return fn(False)
    return fn()


def _as_scalar(loss: Any, name: str = "fn") -> torch.Tensor:
    """Checks that ``loss`` is a one-element tensor and returns it as a 0-d tensor."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"{name} must return a scalar torch.Tensor, got {type(loss).__name__}.")
    if loss.numel() != 1:
        raise ValueError(f"{name} must return a scalar loss, got a tensor of shape {tuple(loss.shape)}.")
    return loss.reshape(()) if loss.ndim != 0 else loss


def _substitute(obj: Any, mapping: dict[int, torch.Tensor]) -> Any:
    """Replaces every tensor whose ``id`` is in ``mapping`` inside (nested) lists, tuples and dicts."""
    if isinstance(obj, torch.Tensor):
        return mapping.get(id(obj), obj)
    if isinstance(obj, list):
        return [_substitute(o, mapping) for o in obj]
    if type(obj) is tuple:  # not namedtuples: their constructors differ
        return tuple(_substitute(o, mapping) for o in obj)
    if isinstance(obj, dict):
        return {k: _substitute(v, mapping) for k, v in obj.items()}
    return obj


class _SubstituteParams(TorchFunctionMode):
    """While active, every torch operation receiving ``params[i]`` receives ``substitutes[i]`` instead.

    This is how functional inputs (``torch.func`` wrapped tensors, dual tensors, views of a flat
    vector) are swapped in for the parameters without touching the parameters themselves; leaving the
    ``with`` block (normally or through an exception) ends the swap.
    """

    def __init__(self, params: Sequence[torch.Tensor], substitutes: Sequence[torch.Tensor]):
        super().__init__()
        if len(params) != len(substitutes):
            raise ValueError(f"got {len(params)} parameters but {len(substitutes)} substitutes.")
        # the ids stay valid because the caller keeps ``params`` alive while the mode is active
        self._mapping = {id(p): s for p, s in zip(params, substitutes)}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        if func is not torch.Tensor.__hash__:  # keep hashing by identity (dict lookups by parameter)
            args = _substitute(args, self._mapping)
            kwargs = _substitute(kwargs, self._mapping)
        return func(*args, **kwargs)


def _global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """2-norm of all ``tensors`` together, as a 0-d tensor (dtype and device of ``tensors[0]``)."""
    if len(tensors) == 0:
        raise ValueError("cannot compute the norm of an empty list of tensors.")
    norms = torch._foreach_norm(tensors)
    if len(norms) == 1:
        return norms[0]
    ref = norms[0]
    return torch.linalg.vector_norm(torch.stack([n.to(ref) for n in norms]))


def _clear_grads(params: Sequence[torch.Tensor]) -> None:
    for p in params:
        p.grad = None


def loss_and_grad(closure: Callable[..., Any], params: Sequence[torch.Tensor]) -> tuple[Any, list[torch.Tensor]]:
    """Calls ``closure()`` (with backward) and returns the loss and the gradients, zeros where a parameter got none.

    ``p.grad`` is cleared before and after, so the returned gradients are fresh tensors that belong to the caller:
    later closure calls cannot overwrite them, and the tensors that held ``p.grad`` before the call (e.g.
    ``var.grad``) are not overwritten by it, even if the closure zeroes gradients in place
    (``zero_grad(set_to_none=False)``).
    """
    _clear_grads(params)
    with torch.enable_grad():
        loss = closure()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    _clear_grads(params)
    return loss, grads


def _snapshot(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _restore(params: Sequence[torch.Tensor], saved: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        torch._foreach_copy_(params, saved)


def _fd_direction(
    vec: Sequence[torch.Tensor], h: float, normalize: bool
) -> tuple[list[torch.Tensor] | None, float | torch.Tensor]:
    """Step ``s`` and divisor ``d`` such that the FD product is ``(f(x + s) − f(x)) / d``.

    Without normalisation ``s = h·v`` and ``d = h``; with it, ``s = h·v/‖v‖`` and ``d = h/‖v‖``
    (equivalent to differentiating along the unit vector and rescaling by ``‖v‖``). Returns
    ``(None, 0)`` when normalising a zero vector.
    """
    if not normalize:
        return torch._foreach_mul(vec, h), h
    vec_norm = _global_norm(vec)
    if vec_norm == 0:  # a Python bool is genuinely needed to skip the evaluations
        return None, 0.0
    denom = h / vec_norm
    return torch._foreach_mul(vec, denom), denom


# ----------------------------------------------------------------------------------------------
# jacobians and hessians through autograd
# ----------------------------------------------------------------------------------------------


def _batched_vjps(
    output: torch.Tensor, wrt: Sequence[torch.Tensor], cotangents: torch.Tensor, create_graph: bool
) -> tuple[torch.Tensor | None, ...] | None:
    """The vector-Jacobian products of ``output`` with every row of ``cotangents``, in one vectorised reverse pass;
    None if neither batching mechanism can run this graph's backward.

    ``torch.func.vmap`` over ``torch.autograd.grad`` is tried first: its batching rules turn a batched backward of
    a matrix-vector product into one matrix-matrix product, where ``is_grads_batched=True`` (the legacy vmap)
    expands the matrix into a batch of copies (a ``bmm``, about 15× slower for a dense ``300 × 300`` matrix).
    ``is_grads_batched`` is the fallback, then the caller loops.
    """
    def vjp(v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        grads = torch.autograd.grad(output, wrt, v, retain_graph=True, create_graph=create_graph, allow_unused=True)
        # vmap outputs must be tensors; an unused input's zero Jacobian is what the caller builds anyway
        return tuple(torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt))

    try:
        return torch.func.vmap(vjp)(cotangents)
    except RuntimeError:
        pass
    try:
        return torch.autograd.grad(
            output, wrt, cotangents, retain_graph=True, create_graph=create_graph, allow_unused=True,
            is_grads_batched=True,
        )
    except RuntimeError:
        return None


def jacobian_wrt(
    output: torch.Tensor | Sequence[torch.Tensor],
    wrt: Sequence[torch.Tensor],
    create_graph: bool = False,
    batched: bool = True,
) -> list[torch.Tensor]:
    r"""Jacobian of the flattened ``output`` with respect to each tensor in ``wrt``.

    With ``y`` the concatenation of the raveled ``output`` tensors (``n_out`` entries), returns for each
    ``w = wrt[i]`` the tensor ``J_i`` of shape ``(n_out, *w.shape)`` with
    ``J_i[k] = ∂y_k / ∂w``.

    Inputs that do not influence ``output`` get a zero tensor (not ``None``, unlike
    ``torch.autograd.grad(..., allow_unused=True)``), so the result can always be passed to
    :func:`flatten_jacobian`. An ``output`` that carries no graph at all gives all-zero Jacobians.
    The graph of ``output`` is retained, so it can be differentiated again.

    Args:
        output: a tensor or a sequence of tensors (of any shapes) forming the output vector.
        wrt: the tensors to differentiate with respect to (must require grad).
        create_graph: if True, the Jacobians carry a graph and can be differentiated further.
        batched: if True, one vectorised reverse pass (see :func:`_batched_vjps`); if False, a loop of ``n_out``
            reverse passes (slower, but works for any operation). A batched pass that fails (an operation
            without a batching rule) falls back to the loop.

    Returns:
        list of ``len(wrt)`` tensors, ``J_i`` of shape ``(n_out, *wrt[i].shape)``.
    """
    wrt = list(wrt)
    flat = _flatten_outputs(output)
    n_out = flat.numel()
    if not flat.requires_grad:
        return [_zero_jacobian(n_out, w) for w in wrt]

    eye = torch.eye(n_out, dtype=flat.dtype, device=flat.device)
    if batched:
        jacs = _batched_vjps(flat, wrt, eye, create_graph)
        if jacs is not None:
            return [_zero_jacobian(n_out, w) if j is None else j for j, w in zip(jacs, wrt)]

    rows: list[Sequence[torch.Tensor | None]] = []
    for k in range(n_out):
        rows.append(
            torch.autograd.grad(
                flat,
                wrt,
                eye[k],
                retain_graph=True,
                create_graph=create_graph,
                allow_unused=True,
            )
        )
    jacs_out = []
    for i, w in enumerate(wrt):
        column = [row[i] for row in rows]
        if all(c is None for c in column):
            jacs_out.append(_zero_jacobian(n_out, w))
        else:
            jacs_out.append(torch.stack([torch.zeros_like(w) if c is None else c for c in column]))
    return jacs_out


def flatten_jacobian(jacs: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""Concatenates per-tensor Jacobians into one matrix.

    ``J = [J_0.reshape(n_out, -1), J_1.reshape(n_out, -1), ...]`` (concatenated along dim 1), so
    column ``m`` corresponds to entry ``m`` of the flattened parameter vector.

    Args:
        jacs: per-tensor Jacobians of shapes ``(n_out, *w_i.shape)``, as returned by :func:`jacobian_wrt`.

    Returns:
        ``(n_out, n_total)`` matrix, ``n_total = Σ w_i.numel()``.
    """
    if len(jacs) == 0:
        raise ValueError("flatten_jacobian needs at least one Jacobian.")
    n_out = jacs[0].shape[0]
    if len(jacs) == 1:
        return jacs[0].reshape(n_out, -1)
    return torch.cat([j.reshape(n_out, -1) for j in jacs], dim=1)


def jacobian_and_hessian_wrt(
    output: torch.Tensor | Sequence[torch.Tensor],
    wrt: Sequence[torch.Tensor],
    create_graph: bool = False,
    batched: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    r"""Jacobian of ``output`` and its Jacobian (the Hessian) with respect to ``wrt``.

    ``J = jacobian_wrt(output, wrt, create_graph=True)``; the Hessian is
    ``jacobian_wrt(flatten_jacobian(J).ravel(), wrt)``, i.e. row ``k·n_total + m`` holds
    ``∂²y_k / ∂x_m ∂w`` (``x`` the flattened ``wrt``). For a scalar ``output`` this is the usual Hessian
    with rows in flattened-parameter order; for a vector output the flattened matrix reshapes to
    ``(n_out, n_total, n_total)``, one Hessian per output.

    Args:
        output: a tensor or a sequence of tensors forming the output vector (usually a scalar loss),
            with a graph that is twice differentiable.
        wrt: the tensors to differentiate with respect to.
        create_graph: if True, both results carry a graph; if False they are detached.
        batched: vectorised (True) or looped (False) reverse passes, see :func:`jacobian_wrt`.

    Returns:
        ``(jacobians, hessians)``: ``jacobians[i]`` of shape ``(n_out, *wrt[i].shape)``,
        ``hessians[i]`` of shape ``(n_out·n_total, *wrt[i].shape)``.
    """
    wrt = list(wrt)
    jac = jacobian_wrt(output, wrt, create_graph=True, batched=batched)
    hess = jacobian_wrt(flatten_jacobian(jac).reshape(-1), wrt, create_graph=create_graph, batched=batched)
    if not create_graph:
        jac = [j.detach() for j in jac]
    return jac, hess


def jacobian_and_hessian_mat_wrt(
    output: torch.Tensor | Sequence[torch.Tensor],
    wrt: Sequence[torch.Tensor],
    create_graph: bool = False,
    batched: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Flattened Jacobian and Hessian of ``output`` with respect to ``wrt``.

    Same as :func:`jacobian_and_hessian_wrt` followed by :func:`flatten_jacobian` on both results:
    ``J`` is ``(n_out, n_total)`` and ``H`` is ``(n_out·n_total, n_total)`` with
    ``H[k·n_total + m, l] = ∂²y_k / ∂x_m ∂x_l``. For a scalar loss, ``J`` is the gradient as a
    ``(1, n)`` row and ``H`` the ``n × n`` Hessian.

    Args:
        output: a tensor or a sequence of tensors forming the output vector.
        wrt: the tensors to differentiate with respect to.
        create_graph: if True, both results carry a graph; if False they are detached.
        batched: vectorised (True) or looped (False) reverse passes, see :func:`jacobian_wrt`.

    Returns:
        ``(J, H)``.
    """
    jac, hess = jacobian_and_hessian_wrt(output, wrt, create_graph=create_graph, batched=batched)
    return flatten_jacobian(jac), flatten_jacobian(hess)


# ----------------------------------------------------------------------------------------------
# functional hessians
# ----------------------------------------------------------------------------------------------


def hessian(
    fn: Callable[..., Any],
    params: Iterable[torch.Tensor],
    create_graph: bool = False,
    method: Literal["func", "autograd.functional"] = "func",
    vectorize: bool = False,
    outer_jacobian_strategy: Literal["reverse-mode", "forward-mode"] = "reverse-mode",
) -> tuple[tuple[torch.Tensor, ...], ...]:
    r"""Per-parameter blocks of the Hessian of the scalar ``fn()`` with respect to ``params``.

    ``H[i][j] = ∂²f / ∂p_i ∂p_j`` of shape ``(*p_i.shape, *p_j.shape)``, computed by
    ``torch.func.hessian`` or ``torch.autograd.functional.hessian`` on the function of the parameter
    values obtained by substituting functional inputs for ``params`` while ``fn`` runs (the
    parameters are not modified). Use :func:`hessian_mat` for the ``n × n`` matrix.

    Args:
        fn: returns the scalar loss computed from ``params``; a closure is called with
            ``backward=False``.
        params: the parameters.
        create_graph: if True, the result carries a graph back to ``params``.
        method: ``'func'`` (``torch.func.hessian``, forward-over-reverse) or ``'autograd.functional'``.
        vectorize: only for ``'autograd.functional'``: use vmap-batched Jacobians.
        outer_jacobian_strategy: only for ``'autograd.functional'``: ``'reverse-mode'`` or
            ``'forward-mode'`` (the latter requires ``vectorize=True``).

    Returns:
        nested tuples, ``H[i][j]`` of shape ``(*p_i.shape, *p_j.shape)``.
    """
    params = list(params)

    def func(*xs: torch.Tensor) -> torch.Tensor:
        with _SubstituteParams(params, xs):
            return _as_scalar(_call_without_backward(fn))

    if method == "func":
        inputs = tuple(p if create_graph else p.detach() for p in params)
        return torch.func.hessian(func, argnums=tuple(range(len(params))))(*inputs)
    if method == "autograd.functional":
        # detaches the inputs itself unless create_graph=True
        H = torch.autograd.functional.hessian(
            func,
            tuple(params),
            create_graph=create_graph,
            vectorize=vectorize,
            outer_jacobian_strategy=outer_jacobian_strategy,
        )
        if create_graph:
            return H
        # the forward-mode outer Jacobian returns results that carry a graph even without create_graph
        return tuple(tuple(b.detach() for b in row) for row in H)
    raise ValueError(f"unknown hessian method {method!r}, expected 'func' or 'autograd.functional'.")


def hessian_mat(
    fn: Callable[..., Any],
    params: Iterable[torch.Tensor],
    create_graph: bool = False,
    method: Literal["func", "autograd.functional"] = "func",
    vectorize: bool = False,
    outer_jacobian_strategy: Literal["reverse-mode", "forward-mode"] = "reverse-mode",
) -> torch.Tensor:
    r"""The ``n × n`` Hessian of the scalar ``fn()`` with respect to the flattened parameter vector.

    With ``x = cat([p.ravel() for p in params])``, returns ``H = ∇²f(x)``; ``fn`` is evaluated on
    views of a flat vector substituted for the parameters (which are not modified).

    Args:
        fn: returns the scalar loss computed from ``params``; a closure is called with
            ``backward=False``.
        params: the parameters.
        create_graph: if True, the result carries a graph back to ``params``.
        method: ``'func'`` (``torch.func.hessian``) or ``'autograd.functional'``.
        vectorize: only for ``'autograd.functional'``: use vmap-batched Jacobians.
        outer_jacobian_strategy: only for ``'autograd.functional'``: ``'reverse-mode'`` or
            ``'forward-mode'`` (the latter requires ``vectorize=True``).

    Returns:
        ``(n, n)`` tensor, ``n = Σ p.numel()``.
    """
    params = list(params)
    sizes = [p.numel() for p in params]
    shapes = [p.shape for p in params]

    def func(x: torch.Tensor) -> torch.Tensor:
        xs = [chunk.view(shape) for chunk, shape in zip(torch.split(x, sizes), shapes)]
        with _SubstituteParams(params, xs):
            return _as_scalar(_call_without_backward(fn))

    flat = _flatten_outputs([p if create_graph else p.detach() for p in params])
    if method == "func":
        return torch.func.hessian(func)(flat)
    if method == "autograd.functional":
        H = torch.autograd.functional.hessian(
            func,
            flat,
            create_graph=create_graph,
            vectorize=vectorize,
            outer_jacobian_strategy=outer_jacobian_strategy,
        )
        # the forward-mode outer Jacobian returns a result that carries a graph even without create_graph
        return H if create_graph else H.detach()
    raise ValueError(f"unknown hessian method {method!r}, expected 'func' or 'autograd.functional'.")


# ----------------------------------------------------------------------------------------------
# jacobian-vector products
# ----------------------------------------------------------------------------------------------


def jvp(
    fn: Callable[..., Any], params: Iterable[torch.Tensor], tangent: Iterable[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Directional derivative ``∇f(x)ᵀt`` by forward-mode AD.

    Dual tensors ``x + ε·t`` are substituted for the parameters while ``fn`` runs; the loss and the
    tangent of the loss are returned. ``fn`` is evaluated once, without building a reverse-mode
    graph; the parameters are not modified and no gradients are touched.

    Args:
        fn: returns the loss computed from ``params``; a closure is called with ``backward=False``.
        params: the parameters.
        tangent: direction ``t``, one tensor per parameter.

    Returns:
        ``(f(x), ∇f(x)ᵀt)``, both detached (the product has the loss's shape; zeros if the loss does
        not depend on the parameters).
    """
    params = list(params)
    tangent = list(tangent)
    if len(params) != len(tangent):
        raise ValueError(f"got {len(params)} parameters but {len(tangent)} tangents.")
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p.detach(), t.to(p)) for p, t in zip(params, tangent)]
        with torch.no_grad(), _SubstituteParams(params, duals):
            loss = _call_without_backward(fn)
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"fn must return a torch.Tensor, got {type(loss).__name__}.")
        primal, tangent_out = fwAD.unpack_dual(loss)
        primal = primal.clone()
        tangent_out = torch.zeros_like(primal) if tangent_out is None else tangent_out.clone()
    return primal, tangent_out


def jvp_fd_forward(
    fn: Callable[..., Any],
    params: Iterable[torch.Tensor],
    tangent: Iterable[torch.Tensor],
    h: float = 1e-3,
    v_0: Any = None,
    normalize: bool = False,
) -> tuple[Any, Any]:
    r"""Forward-difference directional derivative ``(f(x + h·t) − f(x)) / h``.

    With ``normalize=True`` the step is taken along ``t/‖t‖`` (so ``h`` is the absolute step length
    in parameter space) and the result is rescaled by ``‖t‖``:
    ``(f(x + h·t/‖t‖) − f(x)) / h · ‖t‖``; a zero ``t`` then gives ``0`` without evaluating ``fn`` at
    a shifted point. The evaluations run under ``torch.no_grad()``; the parameters are restored
    bit-exactly and, like with every finite-difference helper, ``p.grad`` is left ``None``.
    Error is ``O(h)``.

    Args:
        fn: returns the loss computed from ``params``; a closure is called with ``backward=False``.
        params: the parameters (shifted in place and restored).
        tangent: direction ``t``, one tensor per parameter.
        h: finite-difference step.
        v_0: ``f(x)`` if already known; evaluated otherwise.
        normalize: step along the unit direction and rescale, see above.

    Returns:
        ``(f(x), jvp)``.
    """
    params = list(params)
    tangent = list(tangent)
    if v_0 is None:
        with torch.no_grad():
            v_0 = _call_without_backward(fn)
    step, denom = _fd_direction(tangent, h, normalize)
    if step is None:
        _clear_grads(params)
        return v_0, torch.zeros_like(torch.as_tensor(v_0))

    saved = _snapshot(params)
    try:
        with torch.no_grad():
            torch._foreach_add_(params, step)
            v_plus = _call_without_backward(fn)
    finally:
        _restore(params, saved)
        _clear_grads(params)
    return v_0, (v_plus - v_0) / denom


def jvp_fd_central(
    fn: Callable[..., Any],
    params: Iterable[torch.Tensor],
    tangent: Iterable[torch.Tensor],
    h: float = 1e-3,
    normalize: bool = False,
) -> tuple[Any, Any]:
    r"""Central-difference directional derivative ``(f(x + h·t) − f(x − h·t)) / (2h)``.

    With ``normalize=True`` the step is taken along ``t/‖t‖`` and the result rescaled by ``‖t‖``;
    a zero ``t`` then gives ``(None, 0)`` without evaluating ``fn``. The evaluations run under
    ``torch.no_grad()``; the parameters are restored bit-exactly and ``p.grad`` is left ``None``.
    Error is ``O(h²)``.

    Args:
        fn: returns the loss computed from ``params``; a closure is called with ``backward=False``.
        params: the parameters (shifted in place and restored).
        tangent: direction ``t``, one tensor per parameter.
        h: finite-difference step.
        normalize: step along the unit direction and rescale, see above.

    Returns:
        ``(f(x + h·t), jvp)`` (the loss at the forward point, not at ``x``).
    """
    params = list(params)
    tangent = list(tangent)
    step, denom = _fd_direction(tangent, h, normalize)
    if step is None:
        _clear_grads(params)
        return None, torch.zeros((), dtype=tangent[0].dtype, device=tangent[0].device)

    saved = _snapshot(params)
    try:
        with torch.no_grad():
            torch._foreach_add_(params, step)
            v_plus = _call_without_backward(fn)
            torch._foreach_copy_(params, saved)
            torch._foreach_sub_(params, step)
            v_minus = _call_without_backward(fn)
    finally:
        _restore(params, saved)
        _clear_grads(params)
    return v_plus, (v_plus - v_minus) / (2 * denom)


# ----------------------------------------------------------------------------------------------
# hessian-vector products
# ----------------------------------------------------------------------------------------------


def hvp(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    vec: Sequence[torch.Tensor],
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool | None = None,
) -> list[torch.Tensor]:
    r"""Exact Hessian-vector product ``Hv = ∇(∇f(x)ᵀv)`` from graph-carrying gradients.

    Computes ``torch.autograd.grad(grads, params, grad_outputs=vec)``, where ``grads`` must have been
    computed with ``create_graph=True``. Pass ``retain_graph=True`` to take several products from the
    same gradients.

    Gradients that carry no graph (their parameter enters the loss at most linearly, or not at all)
    contribute nothing to the product and are skipped; if none carries a graph the Hessian is zero
    and zeros are returned (so gradients computed without ``create_graph=True`` silently give zeros).
    Parameters not reached by the graph (allowed with ``allow_unused=True``, and always allowed once a
    gradient was skipped) get zero tensors instead of ``None``.

    Args:
        params: the parameters ``x``.
        grads: ``∇f(x)``, one graph-carrying tensor per parameter.
        vec: the vector ``v``, one tensor per parameter.
        retain_graph: keep the graph of ``grads`` for further products (defaults to ``create_graph``).
        create_graph: if True, the product carries a graph (for higher derivatives).
        allow_unused: allow parameters that ``grads`` do not depend on.

    Returns:
        ``Hv``, one tensor per parameter.
    """
    params = list(params)
    grads = list(grads)
    vec = list(vec)
    if not len(params) == len(grads) == len(vec):
        raise ValueError(f"got {len(params)} params, {len(grads)} grads and {len(vec)} vectors.")
    keep = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if len(keep) == 0:
        return [torch.zeros_like(p) for p in params]
    if len(keep) < len(grads):
        outputs = [grads[i] for i in keep]
        grad_outputs = [vec[i] for i in keep]
        # a parameter whose gradient carries no graph may now be unreached; its Hessian row is zero
        allow_unused = True
    else:
        outputs, grad_outputs = grads, vec
    res = torch.autograd.grad(
        outputs,
        params,
        grad_outputs,
        retain_graph=retain_graph,
        create_graph=create_graph,
        allow_unused=allow_unused,
    )
    return [torch.zeros_like(p) if r is None else r for r, p in zip(res, params)]


def hvp_fd_forward(
    closure: Callable[..., Any],
    params: Iterable[torch.Tensor],
    vec: Iterable[torch.Tensor],
    h: float = 1e-3,
    g_0: Sequence[torch.Tensor] | None = None,
    normalize: bool = False,
) -> tuple[Any, list[torch.Tensor]]:
    r"""Forward-difference Hessian-vector product ``Hv ≈ (∇f(x + h·v) − ∇f(x)) / h``.

    With ``normalize=True`` (what modules use) the step is taken along ``v̂ = v/‖v‖`` and the result
    rescaled, ``Hv ≈ (∇f(x + h·v̂) − ∇f(x)) / h · ‖v‖``, so ``h`` is an absolute step length in
    parameter space; a zero ``v`` then gives a zero product without evaluating at a shifted point.
    Error is ``O(h)``.

    Gradients are obtained by calling ``closure()`` (with backward): at ``x`` only if ``g_0`` is not
    given, then at the shifted point. Parameters that get no gradient count as zero gradient. The
    parameters are shifted in place under ``torch.no_grad()`` and restored bit-exactly by copying the
    saved values back (also if the closure raises); ``p.grad`` is left ``None``.

    Args:
        closure: ``closure(backward=True)`` as described in the module docstring.
        params: the parameters (shifted in place and restored).
        vec: the vector ``v``, one tensor per parameter.
        h: finite-difference step.
        g_0: ``∇f(x)`` if already known; evaluated with a closure call otherwise.
        normalize: step along the unit direction and rescale, see above.

    Returns:
        ``(loss, Hv)``: ``loss`` is ``f(x)`` if the closure was evaluated at ``x`` (``g_0`` not given),
        otherwise ``f(x + step)`` (or ``None`` when nothing was evaluated because ``v`` is zero).
    """
    params = list(params)
    vec = list(vec)
    loss = None
    saved: list[torch.Tensor] | None = None
    try:
        if g_0 is None:
            loss, g_0 = loss_and_grad(closure, params)
        step, denom = _fd_direction(vec, h, normalize)
        if step is None:
            return loss, [torch.zeros_like(p) for p in params]

        saved = _snapshot(params)
        with torch.no_grad():
            torch._foreach_add_(params, step)
        loss_plus, g_plus = loss_and_grad(closure, params)
    finally:
        if saved is not None:
            _restore(params, saved)
        _clear_grads(params)

    if loss is None:
        loss = loss_plus
    hv = torch._foreach_sub(g_plus, list(g_0))
    torch._foreach_div_(hv, denom)
    return loss, hv


def hvp_fd_central(
    closure: Callable[..., Any],
    params: Iterable[torch.Tensor],
    vec: Iterable[torch.Tensor],
    h: float = 1e-3,
    normalize: bool = False,
) -> tuple[Any, list[torch.Tensor]]:
    r"""Central-difference Hessian-vector product ``Hv ≈ (∇f(x + h·v) − ∇f(x − h·v)) / (2h)``.

    With ``normalize=True`` (what modules use) the step is taken along ``v̂ = v/‖v‖`` and the result
    rescaled, ``Hv ≈ (∇f(x + h·v̂) − ∇f(x − h·v̂)) / (2h) · ‖v‖``; a zero ``v`` then gives a zero
    product without any closure call. Error is ``O(h²)``.

    Gradients are obtained by calling ``closure()`` (with backward) at the two shifted points.
    Parameters that get no gradient count as zero gradient. The parameters are shifted in place under
    ``torch.no_grad()`` and restored bit-exactly by copying the saved values back (also if the closure
    raises); ``p.grad`` is left ``None``.

    Args:
        closure: ``closure(backward=True)`` as described in the module docstring.
        params: the parameters (shifted in place and restored).
        vec: the vector ``v``, one tensor per parameter.
        h: finite-difference step.
        normalize: step along the unit direction and rescale, see above.

    Returns:
        ``(loss, Hv)`` with ``loss = f(x + step)`` (``None`` when ``v`` is zero and normalised).
    """
    params = list(params)
    vec = list(vec)
    step, denom = _fd_direction(vec, h, normalize)
    if step is None:
        _clear_grads(params)
        return None, [torch.zeros_like(p) for p in params]

    saved = _snapshot(params)
    try:
        with torch.no_grad():
            torch._foreach_add_(params, step)
        loss, g_plus = loss_and_grad(closure, params)
        with torch.no_grad():
            torch._foreach_copy_(params, saved)
            torch._foreach_sub_(params, step)
        _, g_minus = loss_and_grad(closure, params)
    finally:
        _restore(params, saved)
        _clear_grads(params)

    hv = torch._foreach_sub(g_plus, g_minus)
    torch._foreach_div_(hv, 2 * denom)
    return loss, hv
