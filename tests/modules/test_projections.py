"""Projections (``ProjectionBase``, ``VectorProjection``, ``ScalarProjection``, ``To``, ``ViewAsReal``): the sweep,
exact equivalences from the catalog, ``torch.optim.Adam`` on complex parameters, float64 children on float32
parameters, evaluation counts, settings propagation, state dicts and failure handling."""
from __future__ import annotations

import importlib

import pytest
import torch
from sweep import (
    Objective,
    assert_all_close,
    assert_all_equal,
    check_module,
    clone_params,
    make_closure,
    make_params,
    roundtrip,
    snapshot,
    step_n,
)

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.ops.utility import Identity
from torchzero.modules.projections import ProjectionBase, ScalarProjection, To, VectorProjection, ViewAsReal
from torchzero.modules.step_size.lr import finish_direct_step


def _optional(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


NewtonCG = _optional("torchzero.modules.second_order.newton_cg", "NewtonCG")
LBFGS = _optional("torchzero.modules.quasi_newton.lbfgs", "LBFGS")
Backtracking = _optional("torchzero.modules.line_search.backtracking", "Backtracking")
needs_lbfgs = pytest.mark.skipif(LBFGS is None or Backtracking is None, reason="LBFGS/Backtracking not available")


class IdentityProjection(ProjectionBase):
    """``project``/``unproject`` are identities (the catalog's check of ProjectionBase)."""

    def project(self, tensors, params, grads, loss, states, settings, current):
        return tensors

    def unproject(self, projected_tensors, params, grads, loss, states, settings, current):
        return projected_tensors


class Probe(Module):
    """Records what it sees (computing the gradient if asked); leaves ``var`` alone."""

    def __init__(self, get_grad: bool = False):
        super().__init__()
        self.get_grad = get_grad
        self.seen: list[dict] = []

    def step(self, var: Var) -> Var:
        if self.get_grad:
            var.get_grad()
        self.seen.append(dict(shapes=[tuple(p.shape) for p in var.params], dtypes=[p.dtype for p in var.params],
                              loss=var.loss, grad=None if var.grad is None else [g.clone() for g in var.grad],
                              update=None if var.update is None else [u.clone() for u in var.update]))
        return var


# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------
SWEEP = {
    "VectorProjection": (lambda: [VectorProjection(tz.m.Adam()), tz.m.LR(0.01)], {}),
    "VectorProjection_no_params": (lambda: [VectorProjection(tz.m.Adam(), project_params=False, project_grad=False),
                                            tz.m.LR(0.01)], {}),
    "ScalarProjection": (lambda: [ScalarProjection([tz.m.Adam(), tz.m.Normalize()]), tz.m.LR(0.01)], {}),
    "To_float64": (lambda: [To(tz.m.Adam(), torch.float64), tz.m.LR(0.01)], {}),
    "To_float32": (lambda: [To([tz.m.HeavyBall(0.9), tz.m.LR(0.01)], torch.float32)], {}),
    "To_none": (lambda: [To(tz.m.Adam(), None, device="cpu"), tz.m.LR(0.01)], {}),
    "ViewAsReal": (lambda: [ViewAsReal(tz.m.Adam()), tz.m.LR(0.01)], {}),
    "IdentityProjection_update_only": (lambda: [IdentityProjection(tz.m.Adam()), tz.m.LR(0.01)], {}),
    "To_weight_decay": (lambda: [To([tz.m.WeightDecay(0.1), tz.m.Adam()], torch.float64), tz.m.LR(0.01)], {}),
    "nested": (lambda: [VectorProjection(To(ScalarProjection(tz.m.Adam()), torch.float64)), tz.m.LR(0.01)], {}),
}
if LBFGS is not None and Backtracking is not None:
    SWEEP["VectorProjection_lbfgs_line_search"] = (lambda: [VectorProjection([LBFGS(), Backtracking()])],
                                                   dict(needs_closure=True))
    SWEEP["To_line_search"] = (lambda: [To([LBFGS(), Backtracking()], torch.float64)], dict(needs_closure=True))


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    factory, kwargs = SWEEP[name]
    check_module(factory, **kwargs)


# --------------------------------------------------------------------------------------------------
# exact equivalences
# --------------------------------------------------------------------------------------------------
def _run(modules, x0, f, n=20, use_closure=True):
    params = clone_params(x0)
    opt = tz.Modular(params, *modules)
    losses = step_n(opt, params, f, n, use_closure=use_closure)
    return params, opt, losses


# Adam not fused into the final step (the projection's output goes through LR separately)
def _adam_unfused():
    return [tz.m.Adam(), Identity(), tz.m.LR(0.1)]


@pytest.mark.parametrize("make", [
    lambda child: IdentityProjection(child),
    lambda child: IdentityProjection(child, project_params=True, project_grad=True),
    lambda child: IdentityProjection(child, project_update=False, project_params=True),
    lambda child: VectorProjection(child),
    lambda child: ScalarProjection(child),
    lambda child: To(child, torch.float64),
    lambda child: ViewAsReal(child),
], ids=["identity", "identity_params", "identity_no_update", "vector", "scalar", "to", "view_as_real"])
@pytest.mark.parametrize("use_closure", [True, False])
def test_elementwise_child_is_unchanged_exactly(make, use_closure: bool) -> None:
    # catalog checks: identity projection leaves any child unchanged; ScalarProjection(Adam()) == Adam(); etc.
    x0 = make_params(torch.float64)
    f = Objective(x0)
    a, _, _ = _run([make(tz.m.Adam()), tz.m.LR(0.1)], x0, f, use_closure=use_closure)
    b, _, _ = _run(_adam_unfused(), x0, f, use_closure=use_closure)
    assert_all_equal(a, b, "projected Adam")


@pytest.mark.parametrize("cls", [IdentityProjection, VectorProjection, ScalarProjection, ViewAsReal,
                                 lambda m: To(m, torch.float64)])
def test_identity_child_is_identity(cls) -> None:
    x0 = make_params(torch.float64)
    f = Objective(x0)
    a, _, _ = _run([cls(Identity()), tz.m.LR(0.1)], x0, f)
    b, _, _ = _run([tz.m.LR(0.1)], x0, f)
    assert_all_equal(a, b, "identity child")


@pytest.mark.parametrize("use_closure", [True, False])
def test_children_read_projected_parameter_values(use_closure: bool) -> None:
    # with project_params the child sees the parameter values (here: weight decay), with or without a closure
    x0 = make_params(torch.float64)
    f = Objective(x0)
    for make in (lambda m: To(m, torch.float64), lambda m: VectorProjection(m), lambda m: ScalarProjection(m)):
        a, _, _ = _run([make([tz.m.WeightDecay(0.3), tz.m.Adam()]), tz.m.LR(0.1)], x0, f, n=5, use_closure=use_closure)
        b, _, _ = _run([tz.m.WeightDecay(0.3), *_adam_unfused()], x0, f, n=5, use_closure=use_closure)
        assert_all_equal(a, b, "weight decay through a projection")


def test_known_gradient_is_reused_by_child_closure() -> None:
    # the gradient is known before the projection (Adam computed it); a child that asks for it through its own
    # closure (project_grad=False) gets the projection of the known one, without another evaluation
    x0 = make_params(torch.float64, shapes=[(3,), (2, 2)])
    f = Objective(x0)
    for project_params in (True, False):
        params = clone_params(x0)
        probe = Probe(get_grad=True)
        opt = tz.Modular(params, tz.m.Adam(), VectorProjection(probe, project_params=project_params,
                                                               project_grad=False), tz.m.LR(0.1))
        xs = clone_params(params)
        f(xs).backward()
        step_n(opt, params, f, 1, use_closure=True)
        assert opt.num_evaluations == 1
        torch.testing.assert_close(probe.seen[0]["grad"][0], torch.cat([t.grad.reshape(-1) for t in xs]))


@needs_lbfgs
@pytest.mark.parametrize("make", [
    lambda: [VectorProjection(LBFGS()), Backtracking()],
    lambda: [VectorProjection([LBFGS(), Backtracking()])],
    lambda: [ScalarProjection([LBFGS(), Backtracking()])],
    lambda: [IdentityProjection([LBFGS(), Backtracking()], project_params=True, project_grad=True)],
    lambda: [To([LBFGS(), Backtracking()], torch.float64)],
], ids=["vector_outside", "vector_inside", "scalar_inside", "identity_inside", "to_inside"])
def test_lbfgs_line_search_bitwise(make) -> None:
    # catalog: VectorProjection(LBFGS()) + Backtracking() gives bitwise the same iterates as LBFGS() + Backtracking();
    # with the line search inside, the projected closure is evaluated as often as the real one would be
    x0 = make_params(torch.float64)
    f = Objective(x0)
    a, opt_a, la = _run(make(), x0, f, n=15)
    b, opt_b, lb = _run([LBFGS(), Backtracking()], x0, f, n=15)
    assert_all_equal(a, b, "L-BFGS iterates")
    assert opt_a.num_evaluations == opt_b.num_evaluations
    assert [float(x.detach()) for x in la] == [float(x.detach()) for x in lb]
    assert float(lb[-1].detach()) < float(lb[0].detach())


# --------------------------------------------------------------------------------------------------
# To
# --------------------------------------------------------------------------------------------------
def test_to_float64_matches_torch_adam_on_float64_copies() -> None:
    # reference: torch.optim.Adam on a float64 copy x64 = float64(x32) of the float32 parameters, fed the float32
    # gradient, after which the float32 parameters are the rounded float64 ones
    x0 = make_params(torch.float32)
    f = Objective(x0)
    params = clone_params(x0)
    opt = tz.Modular(params, To([tz.m.Adam(), tz.m.LR(0.05)], dtype=torch.float64))
    step_n(opt, params, f, 30, use_closure=True)

    ref32 = clone_params(x0)
    ref64 = [p.detach().double().requires_grad_() for p in ref32]
    torch_opt = torch.optim.Adam(ref64, lr=0.05)
    for _ in range(30):
        for p in ref32:
            p.grad = None
        f(ref32).backward()
        with torch.no_grad():
            for p32, p64 in zip(ref32, ref64):
                p64.copy_(p32)
                p64.grad = p32.grad.double()
        torch_opt.step()
        with torch.no_grad():
            for p32, p64 in zip(ref32, ref64):
                p32.copy_(p64)
    for p in params:
        assert p.dtype == torch.float32
    assert_all_close(params, snapshot(ref32), rtol=1e-6, atol=1e-7, msg="To(float64) Adam")
    # the child's state is float64, the projection keeps the original dtype
    child = opt.modules[0].children["modules"].children["module_0"]
    assert all(s["exp_avg_sq"].dtype == torch.float64 for s in child.state.values())


@needs_lbfgs
def test_to_float64_line_search_on_float32_rosenbrock() -> None:
    def rosen(ps):
        x = ps[0]
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

    x = torch.tensor([-1.1, 2.5, -1.2, 1.0], requires_grad=True)
    opt = tz.Modular([x], To([LBFGS(), Backtracking()], dtype=torch.float64))
    losses = step_n(opt, [x], rosen, 60, use_closure=True)
    assert x.dtype == torch.float32
    assert float(losses[-1].detach()) < 1e-6
    # the first iterates agree with the same chain on float64 parameters to float32 precision
    x64 = torch.tensor([-1.1, 2.5, -1.2, 1.0], dtype=torch.float64, requires_grad=True)
    x32 = torch.tensor([-1.1, 2.5, -1.2, 1.0], requires_grad=True)
    opt64 = tz.Modular([x64], LBFGS(), Backtracking())
    opt32 = tz.Modular([x32], To([LBFGS(), Backtracking()], dtype=torch.float64))
    for _ in range(3):
        step_n(opt64, [x64], rosen, 1, use_closure=True)
        step_n(opt32, [x32], rosen, 1, use_closure=True)
        torch.testing.assert_close(x32.detach().double(), x64.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(NewtonCG is None or Backtracking is None, reason="NewtonCG/Backtracking not available")
def test_to_float64_newton_cg_solves_float32_rosenbrock() -> None:
    # catalog: To(NewtonCG(hvp_method='central'), torch.float64) + Backtracking() solves Rosenbrock
    def rosen(ps):
        x = ps[0]
        return 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2

    x = torch.tensor([-1.1, 2.5], requires_grad=True)
    opt = tz.Modular([x], To(NewtonCG(hvp_method="central"), torch.float64), Backtracking())
    losses = step_n(opt, [x], rosen, 40, use_closure=True)
    assert x.dtype == torch.float32
    assert float(losses[-1].detach()) < 1e-10
    torch.testing.assert_close(x.detach(), torch.ones(2), rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_matches_cpu() -> None:
    x0 = make_params(torch.float64)
    f = Objective(x0)
    a, opt, _ = _run([To(tz.m.Adam(), dtype=None, device="cuda"), tz.m.LR(0.1)], x0, f, n=10)
    b, _, _ = _run(_adam_unfused(), x0, f, n=10)
    assert all(p.device.type == "cpu" for p in a)
    child = opt.modules[0].children["modules"]
    assert all(s["exp_avg"].device.type == "cuda" for s in child.state.values())
    assert_all_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    factory, kwargs = SWEEP[name]
    check_module(factory, device="cuda", **kwargs)


def test_to_per_parameter_dtype() -> None:
    params = make_params(torch.float32, shapes=[(3,), (2, 2)])
    probe = Probe()
    to = To(probe, dtype=torch.float64)
    to.set_param_groups([{"params": [params[1]], "dtype": torch.float16}])
    opt = tz.Modular(params, to, tz.m.LR(0.1))
    step_n(opt, params, Objective(params), 2, use_closure=True)
    assert probe.seen[-1]["dtypes"] == [torch.float64, torch.float16]
    assert all(p.dtype == torch.float32 for p in params)


# --------------------------------------------------------------------------------------------------
# ViewAsReal
# --------------------------------------------------------------------------------------------------
def _complex_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3,), (2, 4), ()]
    z0 = [torch.randn(s, generator=g, dtype=torch.complex128) for s in shapes]
    c = [torch.randn(s, generator=g, dtype=torch.complex128) for s in shapes]
    w = [torch.rand(s, generator=g, dtype=torch.float64) + 0.5 for s in shapes]

    def f(zs):
        total = 0
        for z, ci, wi in zip(zs, c, w):
            d = z - ci
            total = total + (wi * (d.real**2 + 3 * d.imag**2)).sum() + 0.1 * (d.abs() ** 4).sum() + (z.real * z.imag).sum()
        return total

    return z0, f


def test_view_as_real_adam_matches_torch_adam_on_complex() -> None:
    z0, f = _complex_problem()
    za = [z.clone().requires_grad_() for z in z0]
    zb = [z.clone().requires_grad_() for z in z0]
    opt_a = tz.Modular(za, ViewAsReal(tz.m.Adam()), tz.m.LR(0.05))
    opt_b = torch.optim.Adam(zb, lr=0.05)
    for k in range(30):
        step_n(opt_a, za, f, 1, use_closure=True)
        opt_b.zero_grad()
        f(zb).backward()
        opt_b.step()
        assert_all_close(snapshot(za), snapshot(zb), rtol=1e-6, atol=1e-12, msg=f"step {k}")
    assert all(z.dtype == torch.complex128 for z in za)


@needs_lbfgs
def test_view_as_real_lbfgs_matches_real_parameters() -> None:
    # L-BFGS + line search inside ViewAsReal on complex parameters == the same chain on the real (x, y) parameters
    z0, f = _complex_problem(1)
    z = [t.clone().requires_grad_() for t in z0]
    r = [torch.view_as_real(t).clone().requires_grad_() for t in z0]
    opt_z = tz.Modular(z, ViewAsReal([LBFGS(), Backtracking()]))
    opt_r = tz.Modular(r, LBFGS(), Backtracking())
    lz = step_n(opt_z, z, f, 15, use_closure=True)
    lr = step_n(opt_r, r, lambda ps: f([torch.view_as_complex(p) for p in ps]), 15, use_closure=True)
    assert_all_close([torch.view_as_real(t.detach()) for t in z], snapshot(r), rtol=1e-12, atol=1e-14)
    assert opt_z.num_evaluations == opt_r.num_evaluations
    assert float(lz[-1].detach()) < float(lz[0].detach())
    torch.testing.assert_close(torch.tensor([float(x.detach()) for x in lz]),
                               torch.tensor([float(x.detach()) for x in lr]))


def test_view_as_real_mixed_real_and_complex() -> None:
    z = torch.randn(3, dtype=torch.complex128, requires_grad=True)
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    probe = Probe()
    opt = tz.Modular([z, x], ViewAsReal(probe), tz.m.LR(0.1))
    z_before, x_before = z.detach().clone(), x.detach().clone()

    def closure(backward=True):
        loss = (z.abs() ** 2).sum() + (x**2).sum()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure)
    assert probe.seen[0]["shapes"] == [(3, 2), (2, 2)]
    assert probe.seen[0]["dtypes"] == [torch.float64, torch.float64]
    # gradient of |z|² is 2z (real view), of x² is 2x
    torch.testing.assert_close(z.detach(), z_before * 0.8)
    torch.testing.assert_close(x.detach(), x_before * 0.8)


# --------------------------------------------------------------------------------------------------
# evaluations go through `parent`, never twice
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda m: VectorProjection(m), lambda m: ScalarProjection(m), lambda m: To(m, torch.float64),
    lambda m: IdentityProjection(m), lambda m: VectorProjection(m, project_params=False),
    lambda m: VectorProjection(m, project_update=False),
], ids=["vector", "scalar", "to", "update_only", "vector_no_params", "vector_no_update"])
def test_loss_and_grad_reach_outer_var_once(make) -> None:
    x0 = make_params(torch.float64, shapes=[(3,), (2, 2)])
    f = Objective(x0)
    params = clone_params(x0)
    after = Probe()
    opt = tz.Modular(params, make(tz.m.Adam()), after, tz.m.LR(0.1))
    for k in range(4):
        x = snapshot(params)
        xs = [t.clone().requires_grad_() for t in x]
        loss = f(xs)
        loss.backward()
        step_n(opt, params, f, 1, use_closure=True)
        assert opt.num_evaluations == k + 1
        seen = after.seen[-1]
        assert seen["loss"] is not None and float(seen["loss"].detach()) == float(loss.detach())
        assert_all_close(seen["grad"], [t.grad for t in xs], rtol=1e-14, atol=0, msg="outer grad")


def test_child_closure_evaluates_the_unprojected_point() -> None:
    # a child that evaluates the closure at a moved point sees f(unproject(projected params)), and the real
    # parameters are restored afterwards (same storage, same values)
    class MoveAndEvaluate(Module):
        def step(self, var):
            with torch.no_grad():
                torch._foreach_add_(var.params, 1.0)
            self.loss = float(var.closure(False).detach())
            with torch.no_grad():
                torch._foreach_sub_(var.params, 1.0)
            return var

    params = make_params(torch.float64, shapes=[(3,), (2, 2)])
    f = Objective(params)
    x0 = snapshot(params)
    ptrs = [p.data_ptr() for p in params]
    child = MoveAndEvaluate()
    opt = tz.Modular(params, VectorProjection(child), tz.m.LR(0.0))
    opt.step(make_closure(opt, params, f))
    assert child.loss == float(f([t + 1 for t in x0]).detach())
    assert_all_equal(snapshot(params), x0, "restored")
    assert [p.data_ptr() for p in params] == ptrs


def test_parameters_restored_when_child_raises() -> None:
    class Boom(Module):
        def step(self, var):
            with torch.no_grad():
                torch._foreach_mul_(var.params, 3.0)
            var.get_grad()  # evaluates at the moved point, re-pointing the real parameters
            raise ValueError("boom")

    params = make_params(torch.float64, shapes=[(3,), (2, 2)])
    f = Objective(params)
    x0 = snapshot(params)
    ptrs = [p.data_ptr() for p in params]
    opt = tz.Modular(params, VectorProjection(Boom()))
    with pytest.raises(ValueError, match="boom"):
        step_n(opt, params, f, 1, use_closure=True)
    assert_all_equal(snapshot(params), x0, "restored after error")
    assert [p.data_ptr() for p in params] == ptrs


def test_child_direct_step_moves_real_parameters() -> None:
    class DirectHalfStep(Module):  # moves its parameters itself, like a line search ending the chain
        def step(self, var):
            with torch.no_grad():
                torch._foreach_sub_(var.params, var.get_grad(), alpha=0.5)
            return finish_direct_step(var)

    x0 = make_params(torch.float64, shapes=[(3,), (2, 2)])
    f = Objective(x0)
    a, _, _ = _run([VectorProjection(DirectHalfStep())], x0, f, n=5)
    b, _, _ = _run([tz.m.LR(0.5)], x0, f, n=5)
    assert_all_close(a, b, rtol=1e-14, atol=1e-15)
    with pytest.raises(RuntimeError, match="project_params=True"):
        _run([VectorProjection(DirectHalfStep(), project_params=False)], x0, f, n=1)


def test_placeholder_closure_can_be_called_once() -> None:
    class CallTwice(Module):
        def step(self, var):
            var.closure(False)
            var.closure(False)
            return var

    params = make_params(torch.float64, shapes=[(3,)])
    opt = tz.Modular(params, IdentityProjection(CallTwice()))
    with pytest.raises(RuntimeError, match="IdentityProjection.*project_params=True"):
        step_n(opt, params, Objective(params), 1, use_closure=True)


def test_projection_is_shown_to_child() -> None:
    params = make_params(torch.float64, shapes=[(3,), (2, 2), ()])
    probes = [Probe(), Probe()]
    opt = tz.Modular(params, VectorProjection(probes[0]), ScalarProjection(probes[1]), tz.m.LR(0.1))
    step_n(opt, params, Objective(params), 1, use_closure=True)
    assert probes[0].seen[0]["shapes"] == [(8,)]
    assert probes[1].seen[0]["shapes"] == [()] * 8


# --------------------------------------------------------------------------------------------------
# settings and state
# --------------------------------------------------------------------------------------------------
def test_param_group_settings_and_scheduler_reach_children() -> None:
    x0 = make_params(torch.float64)
    f = Objective(x0)
    trajectories = []
    for make in (lambda: [VectorProjection([tz.m.Adam(), tz.m.LR(0.05)])], lambda: [tz.m.Adam(), tz.m.LR(0.05)]):
        params = clone_params(x0)
        opt = tz.Modular([{"params": params, "beta1": 0.5}], *make())
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        traj = []
        for _ in range(6):
            step_n(opt, params, f, 1, use_closure=True)
            sched.step()
            traj.append(snapshot(params))
        trajectories.append(traj)
    for a, b in zip(*trajectories):
        assert_all_close(a, b, rtol=1e-13, atol=1e-15)


def test_per_parameter_groups_with_one_to_one_projection() -> None:
    x0 = make_params(torch.float64, shapes=[(3,), (2, 2)])
    f = Objective(x0)

    def groups(p):
        return [{"params": [p[0]], "lr": 0.01}, {"params": [p[1]]}]

    pa, pb = clone_params(x0), clone_params(x0)
    opt_a = tz.Modular(groups(pa), To([tz.m.Adam(), tz.m.LR(0.1)], torch.float64))
    opt_b = tz.Modular(groups(pb), tz.m.Adam(), Identity(), tz.m.LR(0.1))
    step_n(opt_a, pa, f, 5, use_closure=True)
    step_n(opt_b, pb, f, 5, use_closure=True)
    assert_all_equal(pa, pb, "per-group lr through To")


def test_state_dict_holds_child_state_and_continues() -> None:
    x0 = make_params(torch.float64, shapes=[(3,), (2, 2)])
    f = Objective(x0)
    pa = clone_params(x0)
    opt_a = tz.Modular(pa, VectorProjection(tz.m.Adam()), tz.m.LR(0.1))
    step_n(opt_a, pa, f, 3, use_closure=True)
    sd = roundtrip(opt_a.state_dict())
    child_state = sd["modules"][0]["projected_children"]["modules"]["state"]
    assert list(child_state) == ["projected_0"] and child_state["projected_0"]["exp_avg"].shape == (7,)
    pb = clone_params(snapshot(pa))
    opt_b = tz.Modular(pb, VectorProjection(tz.m.Adam()), tz.m.LR(0.1))
    opt_b.load_state_dict(sd)
    # a state dict of a loaded, not yet stepped optimizer still holds the children's state
    assert torch.equal(opt_b.state_dict()["modules"][0]["projected_children"]["modules"]["state"]["projected_0"]
                       ["exp_avg"], child_state["projected_0"]["exp_avg"])
    step_n(opt_a, pa, f, 3, use_closure=True)
    step_n(opt_b, pb, f, 3, use_closure=True)
    assert_all_equal(pa, pb, "continued")


def test_get_h_is_none() -> None:
    params = make_params(torch.float64, shapes=[(3,)])
    var = Var(params=params, closure=None, model=None, current_step=0)
    assert VectorProjection(Identity()).get_H(var) is None


def test_invalid_arguments() -> None:
    with pytest.raises(TypeError, match="To"):
        To(tz.m.Adam(), dtype="float64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="To"):
        To(tz.m.Adam(), dtype=None, device="not-a-device")
    with pytest.raises(TypeError, match="VectorProjection"):
        VectorProjection(tz.m.Adam(), project_params=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ScalarProjection("Adam")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ProjectionBase(tz.m.Adam())  # type: ignore[abstract]
