"""What every wrapper of another library must do, checked on each of them (a wrapper whose library is not installed
is skipped):

- on a 2-D quadratic with bounds containing the minimiser, leave the parameters within the library's tolerance of the
  minimiser and return the loss of the point it leaves (bitwise: the returned value is the closure's value there);
- leave the parameters at a point the closure evaluated, bit for bit (values are copied in, nothing drifts);
- count every closure call in ``num_evaluations``;
- require a closure (error naming the class), leave frozen parameters alone, keep shapes/dtypes of parameters of every
  shape (0-d to 7-d) in float32 and float64, and have a ``state_dict`` that ``torch.load(weights_only=True)`` loads;
- never be imported (nor their libraries) by ``import torchzero`` / ``import torchzero.optim``.
"""
from __future__ import annotations

import importlib
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from sweep import SHAPES, roundtrip

TARGET = (0.3, -0.7)
WEIGHTS = (1.0, 3.0)
LIBRARIES = ("scipy", "nevergrad", "nlopt", "optuna", "directsearch", "fcmaes", "mads")


@dataclass
class Case:
    id: str
    module: str  # torchzero.optim.wrappers.<module>
    library: str  # what to importorskip
    factory: Callable[[Any, list[torch.Tensor]], torch.optim.Optimizer]  # (wrapper module, params) -> optimizer
    tol: float  # distance to the minimiser the library promises with this budget
    steps: int = 1  # ask/tell wrappers take one evaluation per step
    kind: str = "loss"  # 'loss': step returns the loss; 'grad': the gradient; 'asktell': one evaluation per step
    small: Callable[[Any, list[torch.Tensor]], torch.optim.Optimizer] | None = None  # cheap config for many params
    slow: bool = False


def _ng(name: str) -> Any:
    import nevergrad as ng
    return ng.optimizers.registry[name]


def _tpe() -> Any:
    import optuna
    return optuna.samplers.TPESampler(seed=0)


CASES = [
    *[Case(f"ScipyMinimize-{m}", "scipy", "scipy",
           lambda w, p, m=m, b=b: w.ScipyMinimize(p, method=m, lb=-2 if b else None, ub=2 if b else None), tol,
           small=lambda w, p, m=m, o=o: w.ScipyMinimize(p, method=m, options=o))
      for m, b, tol, o in (("l-bfgs-b", True, 1e-5, {"maxiter": 3}), ("bfgs", False, 1e-5, {"maxiter": 3}),
                           ("newton-cg", False, 1e-6, {"maxiter": 3}), ("trust-exact", False, 1e-6, {"maxiter": 3}),
                           ("tnc", True, 1e-5, {"maxfun": 5}), ("slsqp", True, 1e-5, {"maxiter": 3}),
                           ("nelder-mead", True, 1e-3, {"maxiter": 3}), ("powell", True, 1e-4, {"maxiter": 1}),
                           ("cobyla", True, 1e-3, {"maxiter": 50}))],
    Case("ScipyMinimize-None", "scipy", "scipy", lambda w, p: w.ScipyMinimize(p), 1e-5),
    Case("ScipyRootOptimization", "scipy", "scipy", lambda w, p: w.ScipyRootOptimization(p), 1e-8, kind="grad",
         small=lambda w, p: w.ScipyRootOptimization(p, method="lm")),
    Case("ScipyRootOptimization-krylov", "scipy", "scipy", lambda w, p: w.ScipyRootOptimization(p, method="krylov"),
         1e-6, kind="grad"),
    Case("ScipyLeastSquaresOptimization", "scipy", "scipy", lambda w, p: w.ScipyLeastSquaresOptimization(p), 1e-8,
         kind="grad", small=lambda w, p: w.ScipyLeastSquaresOptimization(p, max_nfev=3)),
    Case("ScipyDE", "scipy", "scipy", lambda w, p: w.ScipyDE(p, lb=-2, ub=2, seed=0, polish=True), 1e-5,
         small=lambda w, p: w.ScipyDE(p, lb=-3, ub=3, seed=0, maxiter=2, popsize=2)),
    Case("ScipyDualAnnealing", "scipy", "scipy", lambda w, p: w.ScipyDualAnnealing(p, lb=-2, ub=2, rng=0), 1e-5,
         small=lambda w, p: w.ScipyDualAnnealing(p, lb=-3, ub=3, rng=0, maxiter=2, no_local_search=True)),
    Case("ScipySHGO", "scipy", "scipy", lambda w, p: w.ScipySHGO(p, lb=-2, ub=2), 1e-5),
    Case("ScipyDIRECT", "scipy", "scipy", lambda w, p: w.ScipyDIRECT(p, lb=-2, ub=2, maxfun=3000), 1e-3,
         small=lambda w, p: w.ScipyDIRECT(p, lb=-3, ub=3, maxfun=100)),
    Case("ScipyBrute", "scipy", "scipy", lambda w, p: w.ScipyBrute(p, lb=-2, ub=2, Ns=21), 1e-3),
    Case("NevergradWrapper", "nevergrad", "nevergrad",
         lambda w, p: w.NevergradWrapper(p, _ng("OnePlusOne"), budget=400, lb=-2, ub=2), 1e-2, steps=400,
         kind="asktell", small=lambda w, p: w.NevergradWrapper(p, _ng("OnePlusOne"), budget=3)),
    Case("NLOptWrapper-LD_LBFGS", "nlopt", "nlopt", lambda w, p: w.NLOptWrapper(p, "LD_LBFGS", lb=-2, ub=2), 1e-6,
         small=lambda w, p: w.NLOptWrapper(p, "LD_LBFGS", maxeval=3)),
    Case("NLOptWrapper-LN_SBPLX", "nlopt", "nlopt",
         lambda w, p: w.NLOptWrapper(p, "LN_SBPLX", lb=-2, ub=2, xtol_abs=1e-10), 1e-5),
    Case("NLOptWrapper-GN_DIRECT_L", "nlopt", "nlopt",
         lambda w, p: w.NLOptWrapper(p, "GN_DIRECT_L", lb=-2, ub=2, maxeval=2000), 1e-3),
    Case("OptunaSampler", "optuna", "optuna", lambda w, p: w.OptunaSampler(p, lb=-2, ub=2, sampler=_tpe()), 0.1,
         steps=100, kind="asktell", small=lambda w, p: w.OptunaSampler(p, lb=-3, ub=3, sampler=_tpe())),
    *[Case(name, "directsearch", "directsearch", lambda w, p, name=name, kw=kw: getattr(w, name)(p, **kw), tol,
           small=lambda w, p, name=name: getattr(w, name)(p, maxevals=5))
      for name, kw, tol in (("DirectSearch", {}, 1e-5), ("DirectSearchDS", {}, 1e-5),
                            ("DirectSearchProbabilistic", {}, 1e-4), ("DirectSearchSubspace", {"sketch_dim": 1}, 1e-4),
                            ("DirectSearchSTP", {"maxevals": 2000}, 2e-2))],
    Case("FcmaesWrapper", "fcmaes", "fcmaes", lambda w, p: w.FcmaesWrapper(p, lb=-2, ub=2, max_evaluations=3000), 1e-5,
         small=lambda w, p: w.FcmaesWrapper(p, lb=-3, ub=3, max_evaluations=40, popsize=4)),
    Case("MADS", "mads", "mads", lambda w, p: w.MADS(p, lb=-2, ub=2, dp_tol=1e-9), 1e-5,
         small=lambda w, p: w.MADS(p, lb=-3, ub=3, nitermax=2)),
    # the package's defaults never stop by themselves: the wrapper ends the run when the mesh collapses (~7 s)
    Case("MADS-defaults", "mads", "mads", lambda w, p: w.MADS(p, lb=-2, ub=2), 1e-5, slow=True),
]


def _params(cases: list[Case]) -> list[Any]:
    return [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in cases]


def _load(case: Case) -> Any:
    pytest.importorskip(case.library)
    return importlib.import_module(f"torchzero.optim.wrappers.{case.module}")


class Recorder:
    """A ``closure(backward=True)`` over ``f(params)`` that records every point it is evaluated at."""

    def __init__(self, opt: torch.optim.Optimizer, params: list[torch.Tensor], f: Callable[[list[torch.Tensor]], Any]):
        self.opt, self.params, self.f = opt, params, f
        self.points: list[list[torch.Tensor]] = []

    def __call__(self, backward: bool = True) -> torch.Tensor:
        self.points.append([p.detach().clone() for p in self.params])
        loss = self.f(self.params)
        if backward:
            self.opt.zero_grad()
            loss.backward()
        return loss

    def evaluated(self, params: list[torch.Tensor]) -> bool:
        return any(all(torch.equal(a, b) for a, b in zip(pt, params)) for pt in self.points)


def quadratic(params: list[torch.Tensor]) -> torch.Tensor:
    x = params[0]
    c = torch.tensor(TARGET, dtype=x.dtype)
    w = torch.tensor(WEIGHTS, dtype=x.dtype)
    return (w * (x - c) ** 2).sum() + 1.0


def _run(case: Case, module: Any, params: list[torch.Tensor], f: Callable, factory: Callable | None = None,
         steps: int | None = None) -> tuple[torch.optim.Optimizer, Recorder, Any]:
    np.random.seed(0)
    opt = (factory or case.factory)(module, params)
    rec = Recorder(opt, params, f)
    out = None
    for _ in range(case.steps if steps is None else steps):
        out = opt.step(rec)
    return opt, rec, out


@pytest.mark.parametrize("case", _params(CASES))
def test_minimises_quadratic_and_returns_matching_loss(case: Case):
    module = _load(case)
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt, rec, out = _run(case, module, [x], quadratic)
    if case.kind == "asktell":
        assert len(rec.points) == case.steps  # one evaluation per step
        assert out == quadratic([x]).item()  # the last step's loss is the loss where it left the parameters
        out = opt.load_best()

    dist = (x.detach() - torch.tensor(TARGET, dtype=torch.float64)).abs().max().item()
    assert dist <= case.tol, f"{case.id}: {x.detach().tolist()} is {dist:.3g} from the minimiser"
    assert rec.evaluated([x.detach()]), f"{case.id}: the parameters were left at a point the closure never saw"
    assert opt.num_evaluations == len(rec.points)

    with torch.enable_grad():
        loss = quadratic([x])
    if case.kind == "grad":
        (g,) = torch.autograd.grad(loss, x)
        np.testing.assert_array_equal(out, g.numpy())
    else:
        assert isinstance(out, float)
        assert out == loss.item()


@pytest.mark.parametrize("case", _params([c for c in CASES if c.small is not None]))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parameters_of_every_shape(case: Case, dtype: torch.dtype):
    """A short run over parameters of shapes 0-d..7-d (41 entries) plus a frozen one: shapes, dtypes and identities
    are kept, the frozen parameter (and its ``.grad``) is untouched, and the result is an evaluated point."""
    module = _load(case)
    g = torch.Generator().manual_seed(0)
    params = [(torch.rand(s, generator=g, dtype=dtype) * 2 - 1).requires_grad_() for s in SHAPES]
    frozen = torch.randn(3, generator=g, dtype=dtype)
    targets = [torch.rand(s, generator=g, dtype=dtype) - 0.5 for s in SHAPES]

    def f(ps: list[torch.Tensor]) -> torch.Tensor:
        return sum(((p - t) ** 2).sum() for p, t in zip(ps, targets)) + (frozen**2).sum()

    all_params = [*params, frozen]
    ids = [id(p) for p in all_params]
    frozen_before = frozen.clone()
    opt = case.small(module, [{"params": params}, {"params": [frozen]}])
    rec = Recorder(opt, params, f)
    np.random.seed(0)
    opt.step(rec)
    assert [id(p) for p in all_params] == ids
    for p, s in zip(params, SHAPES):
        assert p.shape == s and p.dtype == dtype and p.requires_grad
    assert torch.equal(frozen, frozen_before) and frozen.grad is None
    assert rec.evaluated([p.detach() for p in params])
    assert opt.num_evaluations == len(rec.points)


@pytest.mark.parametrize("case", _params(CASES))
def test_requires_closure_and_state_dict(case: Case):
    module = _load(case)
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = case.factory(module, [x])
    name = type(opt).__name__
    with pytest.raises(RuntimeError, match=f"{name} requires a closure"):
        opt.step()
    assert torch.equal(x.detach(), torch.tensor([1.0, 1.0], dtype=torch.float64))
    sd = roundtrip(opt.state_dict())
    opt2 = case.factory(module, [torch.zeros(2, dtype=torch.float64, requires_grad=True)])
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0].get("lb") == opt.param_groups[0].get("lb")


@pytest.mark.parametrize("case", _params(CASES))
def test_closure_exception_is_raised(case: Case):
    """The closure's exception reaches the caller, also through libraries that swallow exceptions raised in
    callbacks (NLopt, fcmaes, DIRECT), and the closure is not called again after it."""
    module = _load(case)
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    calls = [0]

    def f(ps: list[torch.Tensor]) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 3:
            raise ZeroDivisionError("boom from the closure")
        return quadratic(ps)

    np.random.seed(0)
    opt = case.factory(module, [x])
    rec = Recorder(opt, [x], f)
    with pytest.raises(ZeroDivisionError, match="boom from the closure"):
        for _ in range(case.steps):
            opt.step(rec)
    assert calls[0] == 3  # nothing evaluated after the failure


def test_nan_losses_are_worse_than_any_point():
    """The NaN policy: a NaN loss reaches the library as +inf (the wrapper keeps searching elsewhere)."""
    pytest.importorskip("scipy")
    from torchzero.optim.wrappers.scipy import ScipyDIRECT

    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)

    def f(ps: list[torch.Tensor]) -> torch.Tensor:
        loss = quadratic(ps)
        return loss * math.nan if ps[0][0] > 1 else loss

    opt = ScipyDIRECT([x], lb=-2, ub=2, maxfun=3000)
    value = opt.step(Recorder(opt, [x], f))
    assert math.isfinite(value) and (x.detach() - torch.tensor(TARGET, dtype=torch.float64)).abs().max() < 1e-3


def test_importing_torchzero_imports_no_optional_library():
    """No optional library (SciPy included) is imported by ``import torchzero``, ``import torchzero.optim`` or the
    wrappers package."""
    code = (
        "import sys\n"
        f"libs = {LIBRARIES!r} + ('pandas', 'loguru')\n"
        "import torchzero\n"
        "before = {m for m in libs if m in sys.modules}\n"
        "assert not before, before\n"
        "import torchzero.optim, torchzero.optim.wrappers, torchzero.utils.optimizer\n"
        "from torchzero.optim import Split\n"
        "after = {m for m in libs if m in sys.modules}\n"
        "assert after == before, after - before\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
