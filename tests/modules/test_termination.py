"""Termination criteria: every catalog check, the n-consecutive rule, short-circuit combinators, user loops that stop
at the right step, no effect on the trajectory, the shared sweep and argument validation."""
from __future__ import annotations

import math
import time

import pytest
import torch
from sweep import Objective, assert_all_equal, check_module, clone_params, make_closure, make_params, roundtrip

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.termination.termination import (
    TerminateAfterNEvaluations,
    TerminateAfterNSeconds,
    TerminateAfterNSteps,
    TerminateAll,
    TerminateAny,
    TerminateByGradientNorm,
    TerminateByUpdateNorm,
    TerminateNever,
    TerminateOnLossReached,
    TerminateOnNoImprovement,
    TerminationCriteriaBase,
    make_termination_criteria,
)

MAX_STEPS = 1000  # bound of every user loop

# loss-based criteria placed first evaluate the loss without backward, then the next module needs the gradient
pytestmark = pytest.mark.filterwarnings("ignore:get_loss was called with backward=False:UserWarning")


class AlwaysTrue(TerminationCriteriaBase):
    def __init__(self, n: int = 1):
        super().__init__(dict(calls=0), n=n)

    def termination_criteria(self, var):
        return True


class FakeClock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


class Recorder(Module):
    """Records ``var.should_terminate`` as seen after the criteria ran (to see the raw per-step flag)."""

    def __init__(self):
        super().__init__()
        self.flags: list[bool | None] = []

    def step(self, var):
        self.flags.append(var.should_terminate)
        return var


def _scalar_problem(x0: float = 1.0):
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    return x, lambda params: params[0] ** 2


def _flags(modules, n_steps: int, x0: float = 1.0, f=None, use_closure: bool = True) -> list[bool]:
    """``opt.should_terminate`` after each of ``n_steps`` steps on ``f`` (default x², starting at ``x0``)."""
    x, default_f = _scalar_problem(x0)
    f = default_f if f is None else f
    opt = tz.Modular([x], *modules)
    out = []
    for _ in range(n_steps):
        if use_closure:
            opt.step(make_closure(opt, [x], f))
        else:
            opt.zero_grad()
            f([x]).backward()
            opt.step()
        out.append(opt.should_terminate)
    return out


def _steps_until_terminate(opt: tz.Modular, params, f) -> int:
    """The user loop ``while not opt.should_terminate: opt.step(closure)``; returns the number of steps."""
    closure = make_closure(opt, params, f)
    steps = 0
    while not opt.should_terminate:
        opt.step(closure)
        steps += 1
        assert steps < MAX_STEPS, "the loop did not terminate"
    return steps


F, T = False, True


# ---------------------------------------------------------------------------------------------------------------
# base class: the n-consecutive rule
# ---------------------------------------------------------------------------------------------------------------
def test_n_consecutive_rule_always_true():
    assert _flags([AlwaysTrue(n=3), tz.m.LR(0.1)], 9) == [F, F, T, F, F, T, F, F, T]
    assert _flags([AlwaysTrue(n=1), tz.m.LR(0.1)], 3) == [T, T, T]


def test_n_consecutive_rule_resets_on_false():
    pattern = iter([T, T, F, T, T, T, T, F, T])

    class Scripted(TerminationCriteriaBase):
        def termination_criteria(self, var):
            return next(pattern)

    assert _flags([Scripted(n=3), tz.m.LR(0.1)], 9) == [F, F, F, F, F, T, F, F, F]


def test_flag_is_false_not_none_and_reaches_modular():
    rec = Recorder()
    x, f = _scalar_problem()
    opt = tz.Modular([x], TerminateNever(), rec, tz.m.LR(0.1))
    for _ in range(3):
        opt.step(make_closure(opt, [x], f))
        assert opt.should_terminate is False
    assert rec.flags == [False, False, False]


def test_base_defaults_reserved_key_and_not_mutated():
    defaults = {"a": 1}

    class C(TerminationCriteriaBase):
        def termination_criteria(self, var):
            return False

    c = C(defaults, n=2)
    assert defaults == {"a": 1} and c.defaults["_n"] == 2 and c.defaults["a"] == 1
    with pytest.raises(RuntimeError, match="_n"):
        C({"_n": 3})
    with pytest.raises(ValueError, match="C"):
        C(n=0)
    with pytest.raises(TypeError, match="C"):
        C(n=1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# catalog checks, one per criterion
# ---------------------------------------------------------------------------------------------------------------
def test_after_n_steps():
    assert _flags([TerminateAfterNSteps(3), tz.m.LR(0.1)], 6) == [F, F, F, T, T, T]
    assert _flags([TerminateAfterNSteps(0), tz.m.LR(0.1)], 2) == [T, T]


def test_after_n_evaluations_first_module():
    assert _flags([TerminateAfterNEvaluations(3), tz.m.LR(0.1)], 5) == [F, F, F, T, T]


def test_after_n_evaluations_reads_num_evaluations_when_it_runs():
    # after the module that evaluates the closure, this step's evaluation is already counted
    assert _flags([tz.m.LR(0.1), TerminateAfterNEvaluations(3)], 4) == [F, F, T, T]
    # without closure, `step` counts one evaluation before the modules run
    assert _flags([TerminateAfterNEvaluations(3), tz.m.LR(0.1)], 4, use_closure=False) == [F, F, T, T]


def test_after_n_seconds_fake_clock():
    crit = TerminateAfterNSeconds(2, sec_fn=FakeClock([0, 1, 2, 3]))
    assert _flags([crit, tz.m.LR(0.1)], 4) == [F, F, T, T]
    assert crit.global_state["start"] == 0


def test_by_gradient_norm_at_stationary_point():
    assert _flags([TerminateByGradientNorm(), tz.m.LR(0.1)], 6, x0=0.0) == [F, F, T, F, F, T]
    assert _flags([TerminateByGradientNorm(), tz.m.LR(0.1)], 3, x0=1.0) == [F, F, F]


@pytest.mark.parametrize("ord", [2, 1, "linf", "mad", math.inf])
def test_by_gradient_norm_threshold_and_ord(ord):
    # gradient of sum(x²) at x=[3, -4] is [6, -8]
    x = torch.tensor([3.0, -4.0], dtype=torch.float64, requires_grad=True)
    metric = tz.utils.TensorList([torch.tensor([6.0, -8.0], dtype=torch.float64)]).global_metric(ord)
    for tol, expected in ((float(metric), True), (float(metric) * (1 - 1e-9), False)):
        opt = tz.Modular([x], TerminateByGradientNorm(tol, n=1, ord=ord), tz.m.LR(0.0))
        opt.step(make_closure(opt, [x], lambda p: (p[0] ** 2).sum()))
        assert opt.should_terminate is expected


def test_by_update_norm_frozen_parameters():
    assert _flags([TerminateByUpdateNorm(n=2), tz.m.LR(0.0)], 6) == [F, F, T, F, T, F]


def test_by_update_norm_measures_parameter_change():
    # x ← 0.8x from x=1: the change before step k is 0.2·0.8^(k-2) (k ≥ 2); tol 0.1 is crossed at 0.2·0.8^4 = 0.08192
    flags = _flags([TerminateByUpdateNorm(0.1, n=1), tz.m.LR(0.1)], 8)
    changes = [None] + [0.2 * 0.8 ** (k - 2) for k in range(2, 9)]
    assert flags == [F] + [c <= 0.1 for c in changes[1:]]
    assert flags.index(True) == 5


def test_on_no_improvement_constant_loss():
    assert _flags([TerminateOnNoImprovement(n=2), tz.m.LR(0.0)], 6) == [F, F, T, F, T, F]


def test_on_no_improvement_sequence():
    crit = TerminateOnNoImprovement(tol=0.01, n=1)
    x = torch.tensor(1.0, requires_grad=True)
    opt = tz.Modular([x], crit, tz.m.LR(0.0))
    flags, f_mins = [], []
    for f in [10.0, 9.0, 8.995, float("nan"), 5.0, 6.0]:
        opt.step(loss=torch.tensor(f, dtype=torch.float64))
        flags.append(opt.should_terminate)
        f_mins.append(crit.global_state["f_min"])
    # 9 improves by 1; 8.995 improves by only .005 (no improvement, but the best loss is still updated);
    # NaN is no improvement and is never the best; 5 improves; 6 does not
    assert flags == [F, F, T, T, F, T]
    assert f_mins == [10.0, 9.0, 8.995, 8.995, 5.0, 5.0]


def test_on_loss_reached():
    # x=1, f=x², update 0.1·2x: losses 1, 0.64, 0.4096
    assert _flags([TerminateOnLossReached(0.5), tz.m.LR(0.1)], 3) == [F, F, T]


def test_loss_criteria_use_given_loss_and_name_themselves_without_closure():
    x = torch.tensor(1.0, requires_grad=True)
    for crit in (TerminateOnLossReached(0.5), TerminateOnNoImprovement()):
        opt = tz.Modular([x], crit, tz.m.LR(0.0))
        x.grad = torch.zeros_like(x)
        with pytest.raises(RuntimeError, match=type(crit).__name__):
            opt.step()
        opt.step(loss=torch.tensor(0.25))  # loss= is enough
    opt = tz.Modular([x], TerminateOnLossReached(0.5), tz.m.LR(0.0))
    opt.step(loss=0.25)
    assert opt.should_terminate is True


def test_catalog_checks_with_mul():
    # the catalog states these two checks with `Mul`; LR(c) above is the same update
    binary = pytest.importorskip("torchzero.modules.ops.binary")
    assert _flags([TerminateByUpdateNorm(n=2), binary.Mul(0.0)], 6) == [F, F, T, F, T, F]
    assert _flags([TerminateOnLossReached(0.5), binary.Mul(0.1)], 3) == [F, F, T]


def test_any_short_circuit():
    first, second = TerminateAfterNSteps(2), TerminateAfterNSteps(4)
    assert _flags([TerminateAny(first, second), tz.m.LR(0.1)], 6) == [F, F, T, T, T, T]
    assert first.global_state["step"] == 6
    assert second.global_state["step"] == 2  # only evaluated while the first child was False


def test_all_short_circuit():
    first, second = TerminateAfterNSteps(2), TerminateAfterNSteps(4)
    flags = _flags([TerminateAll(first, second), tz.m.LR(0.1)], 8)
    assert flags == [F, F, F, F, F, F, T, T]
    assert second.global_state["step"] == 6  # evaluated from step 3 on


def test_combinators_ignore_children_n_and_have_their_own():
    assert _flags([TerminateAny(AlwaysTrue(n=3)), tz.m.LR(0.1)], 3) == [T, T, T]
    assert _flags([TerminateAll(AlwaysTrue(n=3), AlwaysTrue(n=2)), tz.m.LR(0.1)], 2) == [T, T]
    any_ = TerminateAny(TerminateNever(), AlwaysTrue())
    assert any_.defaults["_n"] == 1 and list(any_.children) == ["module_0", "module_1"]


def test_never():
    assert _flags([TerminateNever(), tz.m.LR(0.1)], 4) == [F, F, F, F]


# ---------------------------------------------------------------------------------------------------------------
# the user loop `while not opt.should_terminate: opt.step(closure)` stops at the right step
# ---------------------------------------------------------------------------------------------------------------
def _gd_reference(x0: torch.Tensor, lr: float, n: int):
    """Plain gradient descent on sum(x²): lists of (loss, grad norm, step norm) at each step."""
    x = x0.clone()
    out = []
    for _ in range(n):
        g = 2 * x
        new = x - lr * g
        out.append((float((x**2).sum()), float(g.norm()), float((new - x).norm())))
        x = new
    return out


def _loop(*modules, f=None, x0=(1.0, -2.0)):
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    f = (lambda p: (p[0] ** 2).sum()) if f is None else f
    opt = tz.Modular([x], *modules)
    return _steps_until_terminate(opt, [x], f), opt


def _first_run(flags: list[bool], n: int) -> int:
    """1-based index of the step at which ``n`` consecutive Trues first complete."""
    run = 0
    for k, flag in enumerate(flags, 1):
        run = run + 1 if flag else 0
        if run == n:
            return k
    raise AssertionError("never")


def test_loop_after_n_steps():
    assert _loop(TerminateAfterNSteps(5), tz.m.LR(0.1))[0] == 6


def test_loop_after_n_evaluations():
    assert _loop(TerminateAfterNEvaluations(7), tz.m.LR(0.1))[0] == 8
    steps, opt = _loop(tz.m.LR(0.1), TerminateAfterNEvaluations(7))
    assert steps == 7 and opt.num_evaluations == 7


def test_loop_after_n_seconds_fake_clock():
    assert _loop(TerminateAfterNSeconds(3.5, sec_fn=FakeClock(range(100))), tz.m.LR(0.1))[0] == 5


def test_loop_after_n_seconds_real_clock():
    seconds = 0.05
    readings: list[float] = []

    def clock() -> float:
        readings.append(time.time())
        return readings[-1]

    x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = tz.Modular([x], TerminateAfterNSeconds(seconds, sec_fn=clock), tz.m.LR(0.01))

    def slow(p):
        time.sleep(0.005)
        return (p[0] ** 2).sum()

    steps = _steps_until_terminate(opt, [x], slow)
    # one reading per step; the loop stops at the first step whose reading is `seconds` after the first one
    assert len(readings) == steps >= 2
    assert readings[-1] - readings[0] >= seconds > readings[-2] - readings[0]


def test_loop_by_gradient_norm():
    ref = _gd_reference(torch.tensor([1.0, -2.0], dtype=torch.float64), 0.1, MAX_STEPS)
    expected = _first_run([g <= 1e-3 for _, g, _ in ref], 3)
    assert _loop(TerminateByGradientNorm(1e-3), tz.m.LR(0.1))[0] == expected


def test_loop_by_update_norm():
    ref = _gd_reference(torch.tensor([1.0, -2.0], dtype=torch.float64), 0.1, MAX_STEPS)
    # the change measured at step k is the step made at step k-1; the first evaluation only stores
    flags = [False] + [s <= 1e-4 for _, _, s in ref[:-1]]
    assert _loop(TerminateByUpdateNorm(1e-4), tz.m.LR(0.1))[0] == _first_run(flags, 3)


def test_loop_on_no_improvement():
    # loss floor: f = max(x², 0.25) stops improving once |x| < 0.5
    f = lambda p: torch.clamp((p[0] ** 2).sum(), min=0.25)
    ref = _gd_reference(torch.tensor([1.0], dtype=torch.float64), 0.1, MAX_STEPS)
    losses = [max(loss, 0.25) for loss, _, _ in ref]
    f_min, flags = losses[0], [False]
    for loss in losses[1:]:
        flags.append(f_min - loss <= 1e-6)
        f_min = min(f_min, loss)
    steps, _ = _loop(TerminateOnNoImprovement(1e-6, n=4), tz.m.LR(0.1), f=f, x0=(1.0,))
    assert steps == _first_run(flags, 4)


def test_loop_on_loss_reached():
    assert _loop(TerminateOnLossReached(0.5), tz.m.LR(0.1), x0=(1.0,))[0] == 3


def test_loop_any_all_never():
    assert _loop(TerminateAny(TerminateAfterNSteps(4), TerminateOnLossReached(0.5)), tz.m.LR(0.1), x0=(1.0,))[0] == 3
    assert _loop(TerminateAll(TerminateAfterNSteps(4), TerminateOnLossReached(0.5)), tz.m.LR(0.1), x0=(1.0,))[0] == 5
    x = torch.tensor(1.0, requires_grad=True)
    opt = tz.Modular([x], TerminateNever(), tz.m.LR(0.1))
    closure = make_closure(opt, [x], lambda p: p[0] ** 2)
    for _ in range(20):
        opt.step(closure)
    assert opt.should_terminate is False


def test_loop_make_termination_criteria():
    assert _loop(make_termination_criteria(maxiter=10, target_loss=0.5), tz.m.LR(0.1), x0=(1.0,))[0] == 3
    assert _loop(make_termination_criteria(maxiter=1, target_loss=0.5), tz.m.LR(0.1), x0=(1.0,))[0] == 2


def test_criterion_inside_meta_module_reaches_optimizer():
    from torchzero.modules.smoothing.gradient_sampling import GradientSampling

    inner = [TerminateAfterNSteps(2), tz.m.LR(0.1)]
    steps, _ = _loop(GradientSampling(inner, sigma=0.1, n=3, seed=0))
    assert steps == 3


# ---------------------------------------------------------------------------------------------------------------
# criteria never change the update
# ---------------------------------------------------------------------------------------------------------------
CRITERIA = {
    "after_n_steps": lambda: TerminateAfterNSteps(3),
    "after_n_evaluations": lambda: TerminateAfterNEvaluations(3),
    "after_n_seconds": lambda: TerminateAfterNSeconds(0.0),
    "by_gradient_norm": lambda: TerminateByGradientNorm(1e3, n=2),
    "by_update_norm": lambda: TerminateByUpdateNorm(1e3, n=2, ord="linf"),
    "on_no_improvement": lambda: TerminateOnNoImprovement(1e3, n=2),
    "on_loss_reached": lambda: TerminateOnLossReached(1e6),
    "any": lambda: TerminateAny(TerminateByGradientNorm(0.0), TerminateAfterNSteps(2)),
    "all": lambda: TerminateAll(TerminateAfterNSteps(1), TerminateByUpdateNorm(1e3)),
    "never": lambda: TerminateNever(),
    "made": lambda: make_termination_criteria(ftol=0.0, gtol=0.0, stol=0.0, maxiter=3, maxeval=5, maxsec=1e-9,
                                              target_loss=-1.0),
}
LOSS_CRITERIA = {"on_no_improvement", "on_loss_reached", "made"}


def _trajectory(modules, n_steps=8):
    params = make_params(torch.float64)
    f = Objective(params)
    opt = tz.Modular(params, *modules)
    closure = make_closure(opt, params, f)
    traj, flags = [], []
    for _ in range(n_steps):
        opt.step(closure)
        traj.append([p.detach().clone() for p in params])
        flags.append(opt.should_terminate)
    return traj, flags


@pytest.mark.parametrize("name", list(CRITERIA))
def test_criteria_do_not_change_the_update(name):
    reference, _ = _trajectory([tz.m.HeavyBall(0.9), tz.m.LR(0.01)])
    first, flags = _trajectory([CRITERIA[name](), tz.m.HeavyBall(0.9), tz.m.LR(0.01)])
    for a, b in zip(first, reference):
        assert_all_equal(a, b, f"{name} first")
    if name not in ("never",):
        assert any(flags), "the criterion should have fired in this run"

    # in the middle, HeavyBall no longer applies its step directly (next-to-last), so compare to the same layout
    reference, _ = _trajectory([tz.m.HeavyBall(0.9), tz.m.ClipValue(1e9), tz.m.LR(0.01)])
    middle, _ = _trajectory([tz.m.HeavyBall(0.9), CRITERIA[name](), tz.m.LR(0.01)])
    for a, b in zip(middle, reference):
        assert_all_equal(a, b, f"{name} middle")


# ---------------------------------------------------------------------------------------------------------------
# sweep, state dict, reset
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CRITERIA))
def test_sweep(name):
    check_module(lambda: [CRITERIA[name](), tz.m.LR(0.01)], needs_closure=name in LOSS_CRITERIA)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(CRITERIA))
def test_sweep_cuda(name):
    check_module(lambda: [CRITERIA[name](), tz.m.LR(0.01)], needs_closure=name in LOSS_CRITERIA, device="cuda")


def test_state_dict_round_trip_continues_flags():
    def make(params):
        return tz.Modular(params, TerminateAny(TerminateAfterNSteps(5), TerminateByUpdateNorm(0.0, n=2)),
                          AlwaysTrue(n=3), Recorder(), tz.m.LR(0.1))

    x0 = make_params(torch.float64, shapes=[(3,), (2, 2)])
    f = Objective(x0)
    pa = clone_params(x0)
    a = make(pa)
    closure_a = make_closure(a, pa, f)
    for _ in range(4):
        a.step(closure_a)
    pb = clone_params([p.detach() for p in pa])
    b = make(pb)
    b.load_state_dict(roundtrip(a.state_dict()))
    closure_b = make_closure(b, pb, f)
    for _ in range(5):
        a.step(closure_a)
        b.step(closure_b)
    assert a.modules[2].flags[4:] == b.modules[2].flags
    assert b.modules[0].children["module_0"].global_state["step"] == 9
    assert b.modules[1].global_state["_n_bad"] == a.modules[1].global_state["_n_bad"]


def test_reset_restarts_counters():
    x, f = _scalar_problem()
    crit = TerminateAfterNSteps(2)
    opt = tz.Modular([x], crit, tz.m.LR(0.1))
    closure = make_closure(opt, [x], f)
    for _ in range(3):
        opt.step(closure)
    assert opt.should_terminate
    crit.reset()
    flags = []
    for _ in range(3):
        opt.step(closure)
        flags.append(opt.should_terminate)
    assert flags == [F, F, T]


# ---------------------------------------------------------------------------------------------------------------
# make_termination_criteria and validation
# ---------------------------------------------------------------------------------------------------------------
def test_make_termination_criteria_structure():
    assert isinstance(make_termination_criteria(), TerminateNever)
    single = make_termination_criteria(gtol=1e-5, n=4)
    assert isinstance(single, TerminateByGradientNorm) and single.defaults["_n"] == 4 and single.defaults["tol"] == 1e-5
    extra = TerminateAfterNSteps(9)
    assert make_termination_criteria(extra=extra) is extra

    made = make_termination_criteria(ftol=1.0, gtol=2.0, stol=3.0, maxiter=4, maxeval=5, maxsec=6.0, target_loss=7.0,
                                      extra=[extra, TerminateNever()], n=2)
    assert isinstance(made, TerminateAny)
    children = made.get_children_sequence()
    assert [type(c) for c in children] == [TerminateOnNoImprovement, TerminateByGradientNorm, TerminateByUpdateNorm,
                                           TerminateAfterNSteps, TerminateAfterNEvaluations, TerminateAfterNSeconds,
                                           TerminateOnLossReached, TerminateAfterNSteps, TerminateNever]
    assert [c.defaults["_n"] for c in children[:3]] == [2, 2, 2]
    assert [children[i].defaults[k] for i, k in enumerate(["tol", "tol", "tol", "steps", "maxevals", "seconds",
                                                          "value"])] == [1.0, 2.0, 3.0, 4, 5, 6.0, 7.0]
    assert children[7] is extra
    with pytest.raises(TypeError, match="make_termination_criteria"):
        make_termination_criteria(extra=[tz.m.LR(0.1)])  # type: ignore[list-item]


@pytest.mark.parametrize("make, exc, match", [
    (lambda: TerminateAfterNSteps(-1), ValueError, "TerminateAfterNSteps"),
    (lambda: TerminateAfterNSteps(2.5), TypeError, "TerminateAfterNSteps"),
    (lambda: TerminateAfterNEvaluations(-3), ValueError, "TerminateAfterNEvaluations"),
    (lambda: TerminateAfterNSeconds(-1.0), ValueError, "TerminateAfterNSeconds"),
    (lambda: TerminateAfterNSeconds(1.0, sec_fn=3), TypeError, "TerminateAfterNSeconds"),
    (lambda: TerminateByGradientNorm(-1e-3), ValueError, "TerminateByGradientNorm"),
    (lambda: TerminateByGradientNorm(n=0), ValueError, "TerminateByGradientNorm"),
    (lambda: TerminateByGradientNorm(ord="l7"), ValueError, "TerminateByGradientNorm"),
    (lambda: TerminateByUpdateNorm(ord="fro"), ValueError, "TerminateByUpdateNorm"),
    (lambda: TerminateOnNoImprovement(-1.0), ValueError, "TerminateOnNoImprovement"),
    (lambda: TerminateOnNoImprovement(n=-2), ValueError, "TerminateOnNoImprovement"),
    (lambda: TerminateOnLossReached("a"), TypeError, "TerminateOnLossReached"),
    (lambda: TerminateAny(), ValueError, "TerminateAny"),
    (lambda: TerminateAll(tz.m.LR(0.1)), TypeError, "TerminateAll"),
])
def test_invalid_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_after_n_evaluations_without_optimizer():
    x = torch.tensor(1.0)
    var = Var([x], closure=None, model=None, current_step=0)
    with pytest.raises(RuntimeError, match="TerminateAfterNEvaluations"):
        TerminateAfterNEvaluations(1).step(var)
