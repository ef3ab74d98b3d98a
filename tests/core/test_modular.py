"""``Modular``: the step pipeline, counters, flags, hooks, parameter forms, settings priority, schedulers."""
from __future__ import annotations

import warnings

import pytest
import torch

import torchzero as tz
from torchzero.core import Module, Transform, Var


class Record(Module):
    """Records the vars it sees; optionally sets flags."""

    def __init__(self, **flags):
        super().__init__({})
        self.seen: list[Var] = []
        self.flags = flags

    def step(self, var):
        self.seen.append(var)
        for k, v in self.flags.items():
            setattr(var, k, v)
        return var


class Scale(Transform):
    def __init__(self, s=2.0, key="s"):
        super().__init__({key: s})
        self.key = key

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        return [t * st[self.key] for t, st in zip(tensors, settings)]


def quad_closure(opt, params, counter=None):
    def closure(backward=True):
        if counter is not None:
            counter.append(backward)
        loss = sum((p**2).sum() for p in params)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss
    return closure


def test_empty_modules_and_bad_modules():
    p = [torch.zeros(1, requires_grad=True)]
    with pytest.raises(RuntimeError, match="Empty"):
        tz.Modular(p)
    with pytest.raises(TypeError):
        tz.Modular(p, "not a module")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty parameter list"):
        tz.Modular([], tz.m.LR(1))


def test_step_returns_first_closure_value_and_counts():
    p = [torch.tensor([1.0, -2.0], requires_grad=True)]
    opt = tz.Modular(p, tz.m.LR(0.1))
    calls = []
    loss = opt.step(quad_closure(opt, p, calls))
    assert float(loss.detach()) == 5.0
    assert opt.num_evaluations == 1 and opt.current_step == 1 and calls == [True]
    torch.testing.assert_close(p[0].detach(), torch.tensor([0.8, -1.6]))
    # without closure: the grads in .grad are used
    opt.zero_grad()
    (p[0] ** 2).sum().backward()
    assert opt.step() is None
    assert opt.num_evaluations == 2 and opt.current_step == 2
    torch.testing.assert_close(p[0].detach(), torch.tensor([0.64, -1.28]))


def test_step_returns_user_loss_not_reformulated_one():
    p = [torch.tensor(2.0, requires_grad=True)]
    opt = tz.Modular(p, tz.m.LR(0.1))

    def closure(backward=True):
        loss = p[0] ** 2
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    class DoubleEval(Module):
        def step(self, var):
            var.get_loss(False)
            var.closure(False)  # a second evaluation returns a different value after moving x
            return var

    opt2 = tz.Modular(p, DoubleEval(), tz.m.LR(0.1))
    with pytest.warns(UserWarning):
        assert float(opt2.step(closure)) == 4.0
    assert opt2.num_evaluations == 3


def test_missing_grads_are_zeros_and_frozen_params_skipped():
    a = torch.tensor([1.0], requires_grad=True)
    b = torch.tensor([1.0], requires_grad=True)
    frozen = torch.tensor([1.0], requires_grad=False)
    opt = tz.Modular([a, b, frozen], tz.m.LR(1.0))
    (a * 3).sum().backward()
    rec = Record()
    opt2 = tz.Modular([a, b, frozen], rec)
    opt2.step()
    assert len(rec.seen[0].params) == 2
    assert torch.equal(rec.seen[0].grad[1], torch.zeros(1))
    opt.step()
    assert float(a) == -5.0 and float(b) == 1.0 and float(frozen) == 1.0  # two steps of -3


def test_flags_stop_skip_update_and_hooks():
    p = [torch.tensor([1.0], requires_grad=True)]
    later = Record()
    hook_calls = []
    first = Record(stop=True, skip_update=True)
    opt = tz.Modular(p, first, later)
    first.flags["post_step_hooks"] = first.seen  # placeholder replaced below

    class Hooked(Module):
        def step(self, var):
            var.post_step_hooks.append(lambda o, v: hook_calls.append((o, v)))
            var.attrs["x"] = 1
            var.should_terminate = True
            var.stop = True
            var.skip_update = True
            return var

    opt = tz.Modular(p, Hooked(), later)
    opt.step(quad_closure(opt, p))
    assert later.seen == []
    assert float(p[0]) == 1.0
    assert len(hook_calls) == 1 and hook_calls[0][0] is opt
    assert opt.attrs == {"x": 1} and opt.should_terminate


def test_is_last_nested_is_last_and_last_module_lrs():
    p = [torch.tensor([1.0], requires_grad=True), torch.tensor([2.0], requires_grad=True)]
    r1, r2 = Record(), Record()
    opt = tz.Modular([{"params": p[:1], "lr": 0.5}, {"params": p[1:]}], r1, r2, tz.m.LR(0.1))
    opt.step(quad_closure(opt, p))
    assert not r1.seen[0].is_last
    assert r2.seen[0].is_last and r2.seen[0].last_module_lrs == [0.5, 0.1]

    inner = Record()
    opt = tz.Modular(p, Record(), tz.m.Adam(inner=inner))
    opt.step(quad_closure(opt, p))

    chain_child = Record()
    opt = tz.Modular(p, tz.core.Chain(chain_child, Record()))
    opt.step(quad_closure(opt, p))
    assert chain_child.seen[0].nested_is_last and not chain_child.seen[0].is_last


def test_storage_model_unrolled_and_repr():
    model = torch.nn.Linear(2, 1)
    rec = Record()
    chain = tz.core.Chain(rec, tz.m.LR(0.1))
    opt = tz.Modular(model, chain)
    assert opt.model is model
    assert opt.unrolled_modules == [chain, rec, chain.children["module_1"]]
    x = torch.randn(4, 2)
    model(x).sum().backward()
    opt.step(extra=123)
    assert rec.seen[0].storage == {"extra": 123} and rec.seen[0].model is model and rec.seen[0].modular is opt
    assert "LR" in repr(opt)


def test_param_forms():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    for params in ([a, b], [("a", a), ("b", b)], [{"params": [a]}, {"params": b}], (t for t in [a, b])):
        opt = tz.Modular(params, tz.m.LR(1.0))
        assert [p for g in opt.param_groups for p in g["params"]] == [a, b]
    with pytest.raises(TypeError):
        tz.Modular(a, tz.m.LR(1.0))
    with pytest.raises(ValueError, match="more than one"):
        tz.Modular([{"params": [a]}, {"params": [a]}], tz.m.LR(1.0))
    with pytest.raises(ValueError, match="non-leaf"):
        tz.Modular([a * 2], tz.m.LR(1.0))


def test_settings_priority():
    a, b, c = (torch.ones(1, requires_grad=True) for _ in range(3))
    scale = Scale(2.0).set_param_groups([{"params": [a], "s": 5.0}])
    opt = tz.Modular([{"params": [a, b], "s": 3.0}, {"params": [c]}], scale)
    for p in (a, b, c):
        p.grad = torch.ones(1)
    opt.step()
    # module-local (5) > param group (3) > defaults (2)
    assert [float(p) for p in (a, b, c)] == [-4.0, -2.0, -1.0]
    assert scale.settings[a]["s"] == 5.0 and scale.settings[b]["s"] == 3.0 and scale.settings[c]["s"] == 2.0


def test_settings_changes_after_steps_take_effect():
    a = torch.zeros(1, requires_grad=True)
    scale = Scale(1.0)
    opt = tz.Modular([a], scale)

    def step():
        before = float(a)
        a.grad = torch.ones(1)
        opt.step()
        return before - float(a)

    assert step() == 1.0
    scale.defaults["s"] = 2.0
    assert step() == 2.0
    opt.param_groups[0]["s"] = 3.0
    assert step() == 3.0
    scale.set_param_groups([{"params": [a], "s": 4.0}])
    assert step() == 4.0


def test_scheduler_changes_lr_module():
    a = torch.zeros(1, requires_grad=True)
    opt = tz.Modular([a], tz.m.LR(1.0))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    steps = []
    for _ in range(3):
        before = float(a)
        a.grad = torch.ones(1)
        opt.step()
        sched.step()
        steps.append(before - float(a))
    assert steps == [1.0, 0.5, 0.25]


def test_warnings():
    a = torch.zeros(1, requires_grad=True)
    with pytest.warns(UserWarning, match="multiple learning rate modules"):
        tz.Modular([a], tz.m.LR(1.0), tz.m.LR(1.0))
    with pytest.warns(UserWarning, match="multiple modules have that key"):
        tz.Modular([{"params": [a], "s": 1.0}], Scale(), Scale())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tz.Modular([{"params": [a], "s": 1.0}], Scale(), Scale().set_param_groups([{"params": [a], "s": 2.0}]))


def test_two_optimizers_alternating_keep_settings():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    o1 = tz.Modular([{"params": [a], "lr": 0.5}], tz.m.LR(1.0))
    o2 = tz.Modular([{"params": [b], "lr": 0.25}], tz.m.LR(1.0))
    for _ in range(3):
        a.grad, b.grad = torch.ones(1), torch.ones(1)
        o1.step()
        o2.step()
    assert float(a) == -1.5 and float(b) == -0.75


def test_add_param_group_after_init():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = tz.Modular([a], tz.m.LR(1.0))
    opt.add_param_group({"params": [b], "lr": 0.5})
    a.grad, b.grad = torch.ones(1), torch.ones(1)
    opt.step()
    assert float(a) == -1.0 and float(b) == -0.5


class MoveAndRecord(Module):
    """Moves x to x/2 itself, evaluates the objective there and records it (like a line search's direct path)."""

    def step(self, var):
        with torch.no_grad():
            for p in var.params:
                p.mul_(0.5)
        loss = var.closure()
        var.set_result_evaluation(loss, [p.grad for p in var.params])
        var.stop = var.skip_update = True
        return var


def test_result_evaluation_reused_by_next_step():
    x = torch.tensor([4.0], requires_grad=True)
    opt = tz.Modular([x], tz.m.Grad(), MoveAndRecord())
    calls = []
    closure = quad_closure(opt, [x], calls)

    first = opt.step(closure)  # evaluates at 4 (Grad) and at 2 (MoveAndRecord)
    assert calls == [True, True] and float(first.detach()) == 16.0
    second = opt.step(closure)  # the loss and gradient at 2 are reused, only x=1 is evaluated
    assert calls == [True, True, True] and float(second) == 4.0
    assert opt.num_evaluations == 3

    # another closure object: no reuse
    opt.step(quad_closure(opt, [x], calls))
    assert len(calls) == 5
    # parameters modified in between: no reuse
    with torch.no_grad():
        x.add_(1.0)
    opt.step(closure)
    assert len(calls) == 7


def test_result_evaluation_reused_with_bound_method_closure():
    class Problem:
        def __init__(self):
            self.x = torch.tensor([4.0], requires_grad=True)
            self.calls = 0

        def closure(self, backward=True):
            self.calls += 1
            loss = (self.x**2).sum()
            if backward:
                self.x.grad = None
                loss.backward()
            return loss

    prob = Problem()
    opt = tz.Modular([prob.x], tz.m.Grad(), MoveAndRecord())
    opt.step(prob.closure)
    opt.step(prob.closure)
    assert prob.calls == 3
