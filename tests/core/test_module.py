"""``Module`` API: state access, settings, children, reset, get_H, Hvp, generators; plain-data state dicts;
``Reformulation``."""
from __future__ import annotations

import collections

import pytest
import torch
from sweep import Objective, assert_all_equal, clone_params, make_params, roundtrip, snapshot, step_n

import torchzero as tz
from torchzero.core import Chain, Module, Reformulation, Transform, Var, maybe_chain


class Plain(Module):
    def __init__(self, **defaults):
        super().__init__(defaults)

    def step(self, var):
        return var


def test_get_state_init_forms():
    m = Plain()
    a, b = torch.ones(2), torch.full((3,), 2.0)
    a.grad = torch.full((2,), 5.0)
    b.grad = torch.full((3,), 6.0)

    z = m.get_state([a, b], "z")
    assert isinstance(z, list) and torch.equal(z[0], torch.zeros(2))
    assert m.get_state([a, b], "z")[0] is z[0]  # created once

    p, g = m.get_state([a, b], "p", "g", init=["param", "grad"])
    assert torch.equal(p[1], b) and p[1] is not b and torch.equal(g[0], a.grad)

    (c,) = m.get_state([a, b], ["c"], init=[3.0])
    assert c == [3.0, 3.0]
    t = torch.tensor(1.0)
    (v,) = m.get_state([a], ["v"], init=[t])
    assert torch.equal(v[0], t) and v[0] is not t
    per_param = m.get_state([a, b], "pp", init=[1, 2])
    assert per_param == [1, 2]
    tl = m.get_state([a, b], "ones", init=torch.ones_like, cls=tz.utils.TensorList)
    assert isinstance(tl, tz.utils.TensorList)
    with pytest.raises(KeyError):
        m.get_state([a], "missing", must_exist=True)


def test_store_and_clear_state_keys():
    m = Plain()
    a, b = torch.ones(1), torch.ones(1)
    m.store([a, b], "x", [1, 2])
    m.store([a, b], ["y", "z"], [[3, 4], [5, 6]])
    assert m.state[a] == {"x": 1, "y": 3, "z": 5} and m.state[b] == {"x": 2, "y": 4, "z": 6}
    m.clear_state_keys("x", "z")
    assert m.state[a] == {"y": 3}


def test_get_settings_forms():
    m = Plain(lr=0.1, beta=0.9)
    a, b = torch.ones(1), torch.ones(1)
    m.set_param_groups([{"params": [b], "lr": 0.5}])
    assert m.get_settings([a, b], "lr") == [0.1, 0.5]
    lr, beta = m.get_settings([a, b], "lr", "beta")
    assert lr == [0.1, 0.5] and beta == [0.9, 0.9]
    (lr,) = m.get_settings([a, b], ["lr"], cls=tz.utils.NumberList)
    assert isinstance(lr, tz.utils.NumberList)
    # returned lists are copies: mutating them doesn't corrupt the cache
    lr.append(1.0)
    assert m.get_settings([a, b], "lr") == [0.1, 0.5]
    with pytest.raises(KeyError, match="Plain has no setting"):
        m.get_settings([a], "missing")


def test_children_chain_and_maybe_chain():
    a, b = Plain(), Plain()
    assert maybe_chain(a) is a and maybe_chain([a]) is a
    c = maybe_chain(a, [b])
    assert isinstance(c, Chain) and c.get_children_sequence() == [a, b]
    m = Plain()
    m.set_children_sequence([a, [b, Plain()]])
    seq = m.get_children_sequence()
    assert seq[0] is a and isinstance(seq[1], Chain)
    assert repr(c) == "C(Plain, Plain)"
    with pytest.raises(TypeError):
        maybe_chain(a, 3)  # type: ignore[arg-type]


def test_reset_clears_state_keeps_generator_and_recurses():
    child = Plain()
    m = Plain()
    m.set_child("c", child)
    p = torch.ones(1)
    m.state[p]["x"] = 1
    child.state[p]["y"] = 1
    g = m.get_generator("cpu", seed=3)
    m.global_state["k"] = 1
    m.reset()
    assert not m.state and not child.state and "k" not in m.global_state
    assert m.get_generator("cpu", seed=3) is g
    assert m.get_generator("cpu", seed=None) is None


def test_reset_for_online_recurses():
    calls = []

    class Online(Plain):
        def reset_for_online(self):
            calls.append(self)
            super().reset_for_online()

    child = Online()
    parent = Plain()
    parent.set_child("c", child)
    parent.reset_for_online()
    assert calls == [child]


def test_get_h_from_children():
    class WithH(Plain):
        def get_H(self, var):
            return "H"

    parent = Plain()
    parent.set_child("a", Plain())
    parent.set_child("b", WithH())
    assert parent.get_H(None) == "H"  # type: ignore[arg-type]
    parent.set_child("c", WithH())
    with pytest.raises(RuntimeError, match="Two children"):
        parent.get_H(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("method,tol", [("autograd", 1e-12), ("forward", 1e-5), ("central", 1e-8)])
def test_hvp(method, tol):
    torch.manual_seed(0)
    A = torch.randn(5, 5, dtype=torch.float64)
    A = A @ A.T
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def closure(backward=True):
        loss = 0.5 * x @ A @ x + x.sin().sum()
        if backward:
            x.grad = None
            loss.backward()
        return loss

    var = Var(params=[x], closure=closure, model=None, current_step=0)
    v = [torch.randn(5, dtype=torch.float64)]
    expected = A @ v[0] - x.detach().sin() * v[0]
    Hv, rgrad = Plain().Hvp(v, at_x0=True, var=var, rgrad=None, hvp_method=method, h=1e-4, normalize=True,
                            retain_grad=True)
    torch.testing.assert_close(Hv[0], expected, rtol=tol, atol=tol)
    if method != "central":
        Hv2, _ = Plain().Hvp(v, at_x0=True, var=var, rgrad=rgrad, hvp_method=method, h=1e-4, normalize=True,
                             retain_grad=False)
        torch.testing.assert_close(Hv2[0], expected, rtol=tol, atol=tol)
    # the gradient computed at x0 is stored in var
    if method == "autograd":
        assert var.grad is not None


def test_hvp_needs_closure_and_valid_method():
    x = torch.ones(2, requires_grad=True)
    var = Var(params=[x], closure=None, model=None, current_step=0)
    with pytest.raises(RuntimeError, match="Plain requires a closure"):
        Plain().Hvp([torch.ones(2)], True, var, None, "central", 1e-3, True, False)
    var.grad = [torch.ones(2)]
    with pytest.raises(ValueError, match="hvp_method"):
        Plain().Hvp([torch.ones(2)], True, var, [torch.ones(2)], "nope", 1e-3, True, False)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# state dicts
# ---------------------------------------------------------------------------------------------------------------
class Stateful(Transform):
    """A transform with every kind of state: tensors, a generator, a deque, nested containers, a counter."""

    def __init__(self, inner=None):
        super().__init__({"scale": 0.5}, inner=inner)

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        gen = self.get_generator(tensors[0].device, seed=0)
        hist = self.global_state.setdefault("hist", collections.deque(maxlen=3))
        hist.append(torch.rand((), generator=gen, dtype=tensors[0].dtype))
        self.global_state["nested"] = {"a": [1, (2, 3)], "b": torch.tensor([1.0])}
        for s, t in zip(states, tensors):
            s["acc"] = s.get("acc", torch.zeros_like(t)) + t

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        noise = sum(self.global_state["hist"])
        return [s["acc"] * st["scale"] + noise for s, st in zip(states, settings)]


def _chain():
    return [Stateful(inner=[tz.m.EMA(0.5), tz.m.Adam()]), tz.m.HeavyBall(0.5), Chain(tz.m.NAG(0.5), tz.m.LR(0.01))]


def test_state_dict_is_plain_data_and_continues_bit_identically():
    x0 = make_params(torch.float64)
    f = Objective(x0)
    pa = clone_params(x0)
    groups_a = [{"params": pa[:3], "lr": 0.02, "scale": 0.25}, {"params": pa[3:]}]
    opt_a = tz.Modular(groups_a, *_chain())
    opt_a.modules[0].set_param_groups([{"params": pa[:1], "scale": 0.1}])
    step_n(opt_a, pa, f, 4, use_closure=True)

    sd = roundtrip(opt_a.state_dict())  # weights_only=True

    # a fresh optimizer over *other* tensors with the same values: continues exactly
    pb = clone_params(snapshot(pa))
    opt_b = tz.Modular([{"params": pb[:3], "lr": 0.02, "scale": 0.25}, {"params": pb[3:]}], *_chain())
    opt_b.load_state_dict(sd)
    assert opt_b.modules[0].settings[pb[0]]["scale"] == 0.1
    assert opt_b.current_step == 4 and opt_b.num_evaluations == opt_a.num_evaluations
    assert isinstance(opt_b.modules[0].global_state["hist"], collections.deque)
    assert isinstance(opt_b.modules[0].global_state["generator"], torch.Generator)
    assert all(p in opt_b.modules[0].state for p in pb)

    step_n(opt_a, pa, f, 4, use_closure=True)
    step_n(opt_b, pb, f, 4, use_closure=True)
    assert_all_equal(pa, pb, "continued trajectory")


def test_state_dict_restores_scheduler_changed_lr():
    a = torch.zeros(1, requires_grad=True)
    opt = tz.Modular([a], tz.m.LR(1.0))
    opt.param_groups[0]["lr"] = 0.25
    sd = roundtrip(opt.state_dict())
    b = torch.zeros(1, requires_grad=True)
    opt2 = tz.Modular([b], tz.m.LR(1.0))
    opt2.load_state_dict(sd)
    b.grad = torch.ones(1)
    opt2.step()
    assert float(b) == -0.25


def test_load_state_dict_mismatch_errors():
    a = torch.zeros(1, requires_grad=True)
    sd = tz.Modular([a], tz.m.LR(1.0)).state_dict()
    with pytest.raises(ValueError, match="modules"), pytest.warns(UserWarning, match="multiple learning rate"):
        tz.Modular([a], tz.m.LR(1.0), tz.m.LR(1.0)).load_state_dict(sd)
    with pytest.raises(ValueError, match="parameter groups"):
        tz.Modular([{"params": [a]}, {"params": [torch.zeros(1, requires_grad=True)]}], tz.m.LR(1.0)
                   ).load_state_dict(sd)


def test_non_plain_state_fails_clearly():
    class Bad(Plain):
        pass

    a = torch.zeros(1, requires_grad=True)
    m = Bad()
    m.global_state["fn"] = lambda: 1
    opt = tz.Modular([a], m)
    with pytest.raises(TypeError, match="Bad.global_state"):
        opt.state_dict()


def test_module_state_dict_standalone():
    m = Stateful()
    p = [torch.ones(2), torch.ones(3)]
    m.keyed_transform_update(p, p, None, None)
    sd = roundtrip(m.state_dict())
    m2 = Stateful()
    q = [torch.ones(2), torch.ones(3)]
    m2.load_state_dict(sd, q)
    assert torch.equal(m2.state[q[1]]["acc"], torch.ones(3))


# ---------------------------------------------------------------------------------------------------------------
# Reformulation
# ---------------------------------------------------------------------------------------------------------------
class Identity(Reformulation):
    def closure(self, backward, closure, params, var):
        loss = closure(backward)
        grad = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params] if backward else None
        return loss, grad


class Squared(Reformulation):
    def __init__(self, modules=None):
        super().__init__(None, modules)

    def closure(self, backward, closure, params, var):
        with torch.enable_grad():
            loss = closure(False)
            new = loss**2
            grad = torch.autograd.grad(new, params) if backward else None
        return new.detach(), grad


def test_identity_reformulation_equals_child():
    x0 = make_params(torch.float64)
    f = Objective(x0)
    pa, pb = clone_params(x0), clone_params(x0)
    opt_a = tz.Modular(pa, Identity(None, [tz.m.Adam(), tz.m.LR(0.01)]))
    opt_b = tz.Modular(pb, tz.m.Adam(), tz.m.LR(0.01))
    step_n(opt_a, pa, f, 5, use_closure=True)
    step_n(opt_b, pb, f, 5, use_closure=True)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_reformulation_changes_objective_and_returns_user_loss():
    x = torch.tensor(2.0, requires_grad=True)
    opt = tz.Modular([x], Squared([tz.m.LR(0.01)]))

    def closure(backward=True):
        loss = x**2
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.detach()) == 4.0
    # d/dx (x^2)^2 = 4x^3 = 32
    assert abs(float(x.detach()) - (2 - 0.32)) < 1e-6

    y = torch.tensor(2.0, requires_grad=True)
    opt = tz.Modular([y], Squared(), tz.m.LR(0.01))

    def closure2(backward=True):
        loss = y**2
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    opt.step(closure2)
    assert abs(float(y.detach()) - (2 - 0.32)) < 1e-6
    with pytest.raises(RuntimeError, match="Squared requires a closure"):
        y.grad = torch.ones(())
        opt.step()
