"""``Transform``/``TensorwiseTransform``: targets, uses_grad/uses_loss, concat_params, update_freq, inner, keyed and
manual application, pre/post step; ``apply_transform``."""
from __future__ import annotations

import pytest
import torch

import torchzero as tz
from torchzero.core import Module, TensorwiseTransform, Transform, Var, apply_transform


class AddOne(Transform):
    """Adds 1 in place; records what it receives."""

    def __init__(self, target="update", **kw):
        super().__init__({"c": 1.0}, target=target, **kw)
        self.log = []

    def update_tensors(self, tensors, params, grads, loss, states, settings):
        self.log.append(("update", [t.clone() for t in tensors], grads, loss))
        for s in states:
            s["n"] = s.get("n", 0) + 1

    def apply_tensors(self, tensors, params, grads, loss, states, settings):
        self.log.append(("apply", [t.clone() for t in tensors], grads, loss))
        torch._foreach_add_(tensors, self.unpack_settings(settings, "c"))
        return tensors


class Double(TensorwiseTransform):
    def __init__(self, **kw):
        super().__init__({"k": 2.0}, **kw)
        self.updates = 0

    def update_tensor(self, tensor, param, grad, loss, state, setting):
        self.updates += 1
        state["seen"] = tensor.clone()

    def apply_tensor(self, tensor, param, grad, loss, state, setting):
        return tensor * setting["k"]


def setup(values=((1.0, 2.0), 3.0)):
    params = [torch.tensor(v, requires_grad=True) for v in values]

    def closure(backward=True):
        loss = sum((p**2).sum() for p in params)
        if backward:
            for p in params:
                p.grad = None
            loss.backward()
        return loss
    return params, closure


def make_var(params, closure):
    return Var(params=params, closure=closure, model=None, current_step=0)


def test_target_update():
    params, closure = setup()
    var = make_var(params, closure)
    t = AddOne()
    var = t.step(var)
    torch.testing.assert_close(var.update[0], torch.tensor([3.0, 5.0]))
    torch.testing.assert_close(var.grad[0], torch.tensor([2.0, 4.0]))  # gradient untouched
    assert [k for k, *_ in t.log] == ["update", "apply"]


def test_target_grad():
    params, closure = setup()
    var = make_var(params, closure)
    var = AddOne(target="grad").step(var)
    torch.testing.assert_close(var.grad[0], torch.tensor([3.0, 5.0]))
    assert var.update is None
    torch.testing.assert_close(var.get_update()[0], torch.tensor([3.0, 5.0]))
    torch.testing.assert_close(params[0].grad, torch.tensor([2.0, 4.0]))  # p.grad not modified


def test_target_closure():
    params, closure = setup()
    var = make_var(params, closure)
    var = AddOne(target="closure").step(var)
    assert var.grad is None
    var.get_grad()
    torch.testing.assert_close(params[0].grad, torch.tensor([3.0, 5.0]))
    torch.testing.assert_close(var.grad[1], torch.tensor(7.0))
    assert float(var.closure(False).detach()) == 14.0


def test_target_closure_requires_closure():
    params, _ = setup()
    with pytest.raises(RuntimeError, match="AddOne requires a closure"):
        AddOne(target="closure").step(make_var(params, None))


def test_target_params_direct_and_difference():
    params, closure = setup()
    var = AddOne(target="params_direct").step(make_var(params, closure))
    torch.testing.assert_close(params[0].detach(), torch.tensor([2.0, 3.0]))
    assert var.update is None

    params, closure = setup()
    var = AddOne(target="params_difference").step(make_var(params, closure))
    torch.testing.assert_close(var.update[0], torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(params[0].detach(), torch.tensor([1.0, 2.0]))


def test_target_update_difference():
    params, closure = setup()
    var = make_var(params, closure)
    var = Double(target="update_difference").step(var)
    torch.testing.assert_close(var.update[0], torch.tensor([-2.0, -4.0]))


def test_update_apply_only_for_update_target():
    params, closure = setup()
    with pytest.raises(ValueError, match="target must be 'update'"):
        AddOne(target="grad").update(make_var(params, closure))
    with pytest.raises(ValueError, match="invalid target"):
        AddOne(target="nope")


def test_uses_grad_and_loss():
    params, closure = setup()
    var = make_var(params, closure)
    var.update = [torch.ones(2), torch.ones(())]
    t = AddOne(uses_grad=True, uses_loss=True)
    t.step(var)
    _, _, grads, loss = t.log[0]
    assert grads is not None and float(loss.detach()) == 14.0

    var = make_var(params, closure)
    var.update = [torch.ones(2), torch.ones(())]
    t = AddOne()
    t.step(var)
    assert t.log[0][2] is None and var.grad is None  # nothing evaluated


def test_concat_params():
    params, closure = setup()
    var = make_var(params, closure)
    t = AddOne(concat_params=True)
    var = t.step(var)
    assert t.log[0][1][0].shape == (3,)
    assert [u.shape for u in var.update] == [torch.Size([2]), torch.Size([])]
    assert list(t.state.keys()) == [params[0]] and t.state[params[0]]["n"] == 1


def test_update_freq():
    params, closure = setup()
    d = Double(update_freq=3)
    for _ in range(7):
        d.step(make_var(params, closure))
    assert d.updates == 3 * 2  # steps 0, 3, 6, two tensors each


def test_inner_sees_update_and_has_closure():
    params, closure = setup()
    seen = {}

    class Spy(Module):
        def step(self, var):
            seen["closure"] = var.closure is not None
            seen["update"] = [u.clone() for u in var.get_update()]
            var.update = [u * 10 for u in var.update]
            return var

    t = AddOne(inner=Spy())
    assert "inner" in t.children
    var = t.step(make_var(params, closure))
    assert seen["closure"]
    torch.testing.assert_close(seen["update"][0], torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(var.update[0], torch.tensor([21.0, 41.0]))
    # update_tensors sees the raw update
    torch.testing.assert_close(t.log[0][1][0], torch.tensor([2.0, 4.0]))


def test_pre_and_post_step():
    calls = []

    class Hooks(AddOne):
        def pre_step(self, var):
            calls.append(("pre", var.update is None))

        def post_step(self, var):
            calls.append(("post", var.update is not None))

    params, closure = setup()
    Hooks().step(make_var(params, closure))
    assert calls == [("pre", False), ("post", True)]


def test_keyed_and_manual_application():
    t = Double()
    keys = [torch.zeros(2), torch.zeros(3)]
    tensors = [torch.ones(2), torch.ones(3)]
    t.keyed_transform_update(tensors, keys, None, None)
    out = t.keyed_transform_apply(tensors, keys, None, None)
    assert all(torch.equal(o, 2 * torch.ones_like(o)) for o in out)
    assert torch.equal(t.state[keys[0]]["seen"], torch.ones(2))

    states = [{}, {}]
    t.transform_update(tensors, keys, None, None, states, [{"k": 5.0}, {"k": 5.0}])
    out = t.transform_apply(tensors, keys, None, None, states, [{"k": 5.0}, {"k": 5.0}])
    assert torch.equal(out[1], 5 * torch.ones(3)) and "seen" in states[0]
    out = t.transform_apply(tensors, keys, None, None, states, None)  # defaults
    assert torch.equal(out[0], 2 * torch.ones(2))


def test_apply_transform_on_modules_and_sequences():
    params, closure = setup()
    var = make_var(params, closure)
    tensors = [torch.ones(2), torch.ones(())]
    out = apply_transform([Double(), AddOne()], tensors=[t.clone() for t in tensors], params=params, grads=None,
                          var=var)
    torch.testing.assert_close(out[0], torch.full((2,), 3.0))

    class GradUser(Module):
        def step(self, var):
            var.update = [u + g for u, g in zip(var.get_update(), var.get_grad())]
            return var

    out = apply_transform(tz.core.Chain(GradUser(), Double()), tensors=[t.clone() for t in tensors], params=params,
                          grads=None, var=var)
    torch.testing.assert_close(out[0], torch.tensor([6.0, 10.0]))
    assert var.grad is not None  # the gradient computed by the child propagated back
    with pytest.raises(TypeError):
        apply_transform("x", tensors, params, None)  # type: ignore[arg-type]


def test_tensorwise_in_modular_with_settings():
    a = torch.ones(2, requires_grad=True)
    opt = tz.Modular([{"params": [a], "k": 3.0}], Double())
    a.grad = torch.ones(2)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.full((2,), -2.0))
