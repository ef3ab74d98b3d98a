"""Newton's method with a dense Hessian, and the helpers the dense second-order modules share: the Hessian of the
closure at the current parameters, guarded dense solves (Cholesky → LU → least squares) and the finiteness policy.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import torch

from ...core import Chainable, Module, Var, apply_transform
from ...utils.checks import check_bool, check_choice, check_int, check_non_negative
from ...utils.derivatives import _as_scalar, _SubstituteParams, hessian_mat, jacobian_wrt
from ...utils.derivatives import flatten_jacobian as _flatten_jacobian
from ...utils.linalg.linear_operator import Dense, DenseWithInverse, LinearOperator
from ...utils.torch_tools import vec_to_tensors

HessianMethod: TypeAlias = Literal["autograd", "func", "autograd.functional"]
HESSIAN_METHODS = ("autograd", "func", "autograd.functional")


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------
def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """All tensors raveled and concatenated (no copy for a single tensor)."""
    if len(tensors) == 1:
        return tensors[0].reshape(-1)
    return torch.cat([t.reshape(-1) for t in tensors])


def finite_or_fallback(x: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """``x`` if all its entries are finite, else ``fallback`` with its non-finite entries set to zero.

    This is the finiteness policy of the second-order modules: a solve that produced NaN/inf (non-finite Hessian
    or gradient, overflow) never reaches the parameters. Decided on the device (no synchronization).
    """
    safe = torch.nan_to_num(fallback, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.where(torch.isfinite(x).all(), x, safe)


def inner_update(module: Module, var: Var) -> list[torch.Tensor]:
    """``var.get_update()``, transformed by the module's ``inner`` child when it has one."""
    update = var.get_update()
    inner = module.children.get("inner")
    if inner is not None:
        update = apply_transform(inner, update, params=var.params, grads=var.grad, loss=var.loss, var=var)
    return update


def set_loss_and_grad(var: Var, loss: torch.Tensor | None, g: torch.Tensor | None) -> None:
    """Stores a loss and flat gradient evaluated at ``var.params`` in ``var`` (only where not known yet)."""
    if loss is not None and var.loss is None:
        var.loss = var.loss_approx = loss
    if g is not None and var.grad is None:
        var.grad = vec_to_tensors(g, var.params)


# --------------------------------------------------------------------------------------------------
# hessians
# --------------------------------------------------------------------------------------------------
def _flat_function(fn: Callable, params: Sequence[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x)``: the scalar ``fn(False)`` (a closure) evaluated with views of the flat vector ``x`` in place of
    ``params``."""
    sizes = [p.numel() for p in params]
    shapes = [p.shape for p in params]

    def f(x: torch.Tensor) -> torch.Tensor:
        xs = [c.view(s) for c, s in zip(torch.split(x, sizes), shapes)]
        with _SubstituteParams(params, xs):
            return _as_scalar(fn(False), "closure")

    return f


def loss_grad_hessian(
    closure: Callable, params: Sequence[torch.Tensor], hessian_method: HessianMethod = "autograd",
    vectorize: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """``(f(x), ∇f(x), ∇²f(x))`` at the current parameters (gradient flattened, Hessian ``n × n``, all detached).

    - ``'autograd'``: one ``closure(False)`` under grad mode, the gradient with ``create_graph=True``, then the
      Hessian as the Jacobian of the gradient (one ``torch.func.vmap``-batched reverse pass when ``vectorize``,
      else ``n``; a backward that cannot be batched falls back to the ``n`` passes).
    - ``'func'``: ``torch.func.jacfwd`` of ``torch.func.grad_and_value`` (forward-over-reverse, vectorized) on a
      function of the flattened parameters; loss and gradient come out of the same pass.
    - ``'autograd.functional'``: ``torch.autograd.functional.hessian`` (reverse-mode outer Jacobian, vectorized
      when ``vectorize``); it does not give the loss and gradient, which are returned as None.

    The parameters are not modified and ``p.grad`` is not touched.
    """
    params = list(params)
    if hessian_method == "autograd":
        with torch.enable_grad():
            loss = _as_scalar(closure(False), "closure")
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            g = flatten([gi if gi is not None else torch.zeros_like(p) for gi, p in zip(grads, params)])
            H = _flatten_jacobian(jacobian_wrt(g, params, batched=vectorize))
        return loss.detach(), g.detach(), H

    if hessian_method == "func":
        f = _flat_function(closure, params)

        def grad_with_aux(x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            g, value = torch.func.grad_and_value(f)(x)
            return g, (g, value)

        x = flatten([p.detach() for p in params])
        H, (g, loss) = torch.func.jacfwd(grad_with_aux, has_aux=True)(x)
        # functorch can promote a product of 0-d tensors with a Python float to float64; keep the params' dtype
        return loss.detach(), g.detach().to(x.dtype), H.detach().to(x.dtype)

    if hessian_method == "autograd.functional":
        # `closure` may be wrapped (e.g. by Modular's evaluation counter), so its signature can't tell that it
        # takes `backward`; pass a function that evaluates without backward explicitly
        def fn() -> torch.Tensor:
            return closure(False)

        # reverse-mode outer Jacobian: the catalog mentions forward-mode when vectorized, but torch's legacy vmap
        # behind it lacks batching rules for common operations (e.g. 1-D `@`) and is not faster
        H = hessian_mat(fn, params, method="autograd.functional", vectorize=vectorize)
        return None, None, H

    raise ValueError(f"unknown hessian_method {hessian_method!r}, expected one of {HESSIAN_METHODS}")


# --------------------------------------------------------------------------------------------------
# dense solves
# --------------------------------------------------------------------------------------------------
def lstsq_solve(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least-squares solution of ``A x = b``, ``x = A⁺b`` through the SVD pseudo-inverse.

    ``torch.linalg.lstsq`` is not used: on the CPU its result depends on the memory alignment of the inputs (MKL),
    which would make steps irreproducible, and on CUDA it assumes full rank.
    """
    return torch.linalg.pinv(A) @ b


def _nonsingular(pivots: torch.Tensor) -> bool:
    """Whether factorization pivots show a numerically non-singular matrix: ``min|p| > n·eps·max|p|`` (the
    threshold below which ``pinv`` drops singular values; a triangular factor of an exactly singular matrix has
    pivots of rounding size there, and solving with it would return a step of size ``1/eps``)."""
    a = pivots.abs()
    return bool(a.amin() > a.numel() * torch.finfo(a.dtype).eps * a.amax())


def factorize(H: torch.Tensor, use_lstsq: bool = False, symmetric: bool = True) -> dict[str, Any]:
    """Factorization of a square ``H`` for repeated solves: Cholesky (only if ``symmetric``: it reads one triangle),
    falling back to LU when ``H`` is not positive definite, falling back to minimum-norm least squares when it is
    singular (numerically: a pivot ratio below ``n·eps``). A non-finite ``H`` gives ``{'mode': 'identity'}`` (solves
    return the right-hand side). Returns plain data (storable in ``global_state``). Differentiable."""
    if not bool(torch.isfinite(H).all()):
        return {"mode": "identity"}
    if use_lstsq:
        return {"mode": "lstsq", "A": H}
    if symmetric:
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) == 0 and _nonsingular(L.diagonal() ** 2):
            return {"mode": "cholesky", "L": L}
    LU, pivots, info = torch.linalg.lu_factor_ex(H)
    if int(info) == 0 and bool(torch.isfinite(LU).all()) and _nonsingular(LU.diagonal()):
        return {"mode": "lu", "LU": LU, "pivots": pivots}
    return {"mode": "lstsq", "A": H}


def solve_factorized(fac: dict[str, Any], b: torch.Tensor) -> torch.Tensor:
    """``H⁻¹ b`` with a factorization from ``factorize`` (an LU solve of a nearly singular matrix that overflows
    falls back to least squares)."""
    mode = fac["mode"]
    if mode == "cholesky":
        return torch.cholesky_solve(b.unsqueeze(-1), fac["L"]).squeeze(-1)
    if mode == "lu":
        return torch.linalg.lu_solve(fac["LU"], fac["pivots"], b.unsqueeze(-1)).squeeze(-1)
    if mode == "lstsq":
        return lstsq_solve(fac["A"], b)
    return b


def solve_dense(H: torch.Tensor, b: torch.Tensor, use_lstsq: bool = False, symmetric: bool = True) -> torch.Tensor:
    """One solve ``H x = b`` with the (Cholesky →) LU → least-squares fallbacks of ``factorize``."""
    return solve_factorized(factorize(H, use_lstsq, symmetric), b)


def eig_direction(L: torch.Tensor, Q: torch.Tensor, g: torch.Tensor, search_negative: bool) -> torch.Tensor:
    """``Q (Qᵀg / λ)`` (eigenvalues equal to zero are skipped, i.e. a pseudo-inverse); with ``search_negative`` and
    a negative ``λ``, the mean over the negative eigenpairs of ``|λᵢ|·sign(gᵀqᵢ)·qᵢ`` instead (``sign(0) = 1``,
    so a zero gradient at a saddle point still moves along negative curvature)."""
    Qg = Q.mT @ g
    if search_negative:
        neg = L < 0
        if bool(neg.any()):
            sign = torch.where(Qg >= 0, 1.0, -1.0).to(g.dtype)
            coef = torch.where(neg, L.abs() * sign, torch.zeros_like(L))
            return (Q @ coef) / neg.sum()
    inv = torch.where(L == 0, torch.zeros_like(L), 1 / L)
    return Q @ (Qg * inv)


# --------------------------------------------------------------------------------------------------
# Newton
# --------------------------------------------------------------------------------------------------
def check_hessian_args(owner: str, hessian_method: Any, vectorize: Any) -> None:
    check_choice(owner, "hessian_method", hessian_method, HESSIAN_METHODS)
    check_bool(owner, "vectorize", vectorize)


class Newton(Module):
    r"""Newton's method with the exact dense Hessian: the update is ``(H + damping·I)⁻¹ g``.

    Every ``update_freq`` steps (``update``), the Hessian ``H = ∇²f(x)`` of all parameters flattened is formed
    (``hessian_method``) and ``H + damping·I`` is stored in ``global_state['H']`` together with its factorization.
    ``apply`` flattens ``g`` (the update, after ``inner``) and returns ``x`` solving ``(H + damping·I) x = g``:

    - ``H_tfm(H, g)`` given: it returns either the update tensor directly, or ``(H', is_inverted)``; then
      ``x = H' g`` if ``is_inverted`` else ``x = H'⁻¹ g``;
    - ``search_negative`` or ``eigval_fn``: ``H = Q diag(λ) Qᵀ``, ``λ ← eigval_fn(λ)``, ``x = Q (Qᵀg / λ)``
      (eigenvalues mapped to zero are skipped); with ``search_negative`` and a negative eigenvalue, ``x`` is the
      mean over negative eigenpairs of ``|λᵢ|·sign(gᵀqᵢ)·qᵢ`` (subtracting it descends along negative curvature);
    - ``use_lstsq``: least squares;
    - otherwise Cholesky, falling back to LU for an indefinite ``H``, and to (minimum-norm) least squares for a
      singular one.

    Non-finite values: a non-finite Hessian is not factorized (the step falls back to ``g``), and a non-finite
    solution is replaced by ``g``, with non-finite entries of ``g`` set to zero (so NaN never reaches the
    parameters). A zero gradient gives a zero update.

    With ``hessian_method='autograd'`` or ``'func'``, the loss and gradient come out of the Hessian evaluation
    (one closure evaluation per refresh). ``get_H`` returns ``Dense(H + damping·I)``, or with ``eigval_fn`` a
    ``DenseWithInverse`` of the transformed spectrum. State: ``global_state['H']``, ``['step']`` and the
    factorization.

    Args:
        damping: ``damping·I`` is added to the Hessian. Defaults to 0.
        search_negative: move along negative curvature where there is some. Defaults to False.
        use_lstsq: always solve by least squares. Defaults to False.
        update_freq: recompute the Hessian every this many steps. Defaults to 1.
        hessian_method: ``'autograd'`` (reverse-over-reverse, vmapped; works with any twice-differentiable
            closure; the fastest on ``benchmarks/newton_step.py``), ``'func'`` (``torch.func``,
            forward-over-reverse, loss, gradient and Hessian in one pass; the closure must be traceable by
            ``torch.func``: no ``.item()``, no in-place changes of the parameters) or ``'autograd.functional'``.
            Defaults to ``'autograd'``.
        vectorize: batch the Hessian rows with vmap. Defaults to True.
        inner: modules applied to the update before preconditioning (e.g. ``EMA(0.9)``). Defaults to None.
        H_tfm: custom transform of the Hessian, see above. Defaults to None.
        eigval_fn: function applied to the eigenvalues, e.g. ``lambda x: x.abs().clip(min=1e-8)`` for a
            saddle-free Newton step. Defaults to None.

    Reference:
        J. Nocedal & S. J. Wright, *Numerical Optimization*, 2nd ed., Springer 2006, §3.3–3.4.

    Example:
        ```python
        opt = tz.Modular(model.parameters(), tz.m.Newton(), tz.m.Backtracking())
        opt.step(closure)  # closure(backward=True) is required
        ```
    """

    _evaluates_closure_in_update = True

    def __init__(
        self,
        damping: float = 0,
        search_negative: bool = False,
        use_lstsq: bool = False,
        update_freq: int = 1,
        hessian_method: HessianMethod = "autograd",
        vectorize: bool = True,
        inner: Chainable | None = None,
        H_tfm: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, bool]]
        | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        eigval_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        name = type(self).__name__
        check_non_negative(name, "damping", damping)
        check_bool(name, "search_negative", search_negative)
        check_bool(name, "use_lstsq", use_lstsq)
        check_int(name, "update_freq", update_freq)
        check_hessian_args(name, hessian_method, vectorize)
        for arg_name, fn in (("H_tfm", H_tfm), ("eigval_fn", eigval_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: {arg_name} must be callable or None, got {type(fn).__name__}")
        super().__init__(dict(damping=damping, search_negative=search_negative, use_lstsq=use_lstsq,
                              update_freq=update_freq, hessian_method=hessian_method, vectorize=vectorize))
        self._H_tfm = H_tfm
        self._eigval_fn = eigval_fn
        if inner is not None:
            self.set_child("inner", inner)

    def update(self, var: Var) -> None:
        closure = self._require_closure(var)
        s = self.defaults
        step = self.global_state.get("step", 0)
        self.global_state["step"] = step + 1
        if step % s["update_freq"] != 0 and "H" in self.global_state:
            return

        loss, g, H = loss_grad_hessian(closure, var.params, s["hessian_method"], s["vectorize"])
        set_loss_and_grad(var, loss, g)
        if s["damping"] != 0:
            H.diagonal().add_(s["damping"])
        gs = self.global_state
        for k in [k for k in gs if k.startswith("fac_") or k in ("eig_L", "eig_Q")]:
            del gs[k]
        gs["H"] = H
        if self._H_tfm is not None:
            return
        if (s["search_negative"] or self._eigval_fn is not None) and bool(torch.isfinite(H).all()):
            L, Q = torch.linalg.eigh(H)
            if self._eigval_fn is not None:
                L = self._eigval_fn(L)
            gs["eig_L"], gs["eig_Q"] = L, Q
        else:
            gs.update({f"fac_{k}": v for k, v in factorize(H, s["use_lstsq"]).items()})

    def _solve(self, g: torch.Tensor) -> torch.Tensor:
        gs = self.global_state
        H = gs["H"]
        if self._H_tfm is not None:
            out = self._H_tfm(H, g)
            if isinstance(out, torch.Tensor):
                return out.reshape(-1)
            H_new, is_inverted = out
            # H' may not be symmetric: LU, not Cholesky
            return H_new @ g if is_inverted else solve_dense(H_new, g, self.defaults["use_lstsq"], symmetric=False)
        if "eig_L" in gs:
            return eig_direction(gs["eig_L"], gs["eig_Q"], g, self.defaults["search_negative"])
        return solve_factorized({k[4:]: v for k, v in gs.items() if k.startswith("fac_")}, g)

    def apply(self, var: Var) -> Var:
        if "H" not in self.global_state:
            raise RuntimeError(f"{type(self).__name__}: `apply` was called before `update`")
        params = var.params
        g = flatten(inner_update(self, var))
        x = finite_or_fallback(self._solve(g), g)
        var.update = vec_to_tensors(x, params)
        return var

    def get_H(self, var: Var) -> LinearOperator | None:
        gs = self.global_state
        if "H" not in gs:
            return None
        if self._eigval_fn is not None and "eig_L" in gs:
            L, Q = gs["eig_L"], gs["eig_Q"]
            inv = torch.where(L == 0, torch.zeros_like(L), 1 / L)
            return DenseWithInverse((Q * L) @ Q.mT, (Q * inv) @ Q.mT)
        return Dense(gs["H"])
