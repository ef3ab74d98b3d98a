"""``Var``: lazy loss/gradient/update, closure evaluated once, parents, clones."""
from __future__ import annotations

import pytest
import torch

from torchzero.core import Var


class CountingClosure:
    def __init__(self, params, unused: int | None = None):
        self.params = params
        self.calls = []
        self.unused = unused

    def __call__(self, backward=True):
        self.calls.append(backward)
        loss = sum((p**2).sum() for i, p in enumerate(self.params) if i != self.unused)
        if backward:
            for p in self.params:
                p.grad = None
            loss.backward()
        return loss


def make_var(unused=None):
    params = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor(3.0, requires_grad=True)]
    closure = CountingClosure(params, unused)
    return Var(params=params, closure=closure, model=None, current_step=0), closure


def test_get_grad_evaluates_once_and_sets_loss():
    var, closure = make_var()
    g = var.get_grad()
    assert closure.calls == [True]
    torch.testing.assert_close(g[0], torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(g[1], torch.tensor(6.0))
    assert float(var.loss) == 14.0
    assert var.get_grad() is g
    var.get_loss(backward=True)
    var.get_loss(backward=False)
    assert closure.calls == [True]


def test_get_loss_without_backward_then_grad_warns_and_reevaluates():
    var, closure = make_var()
    loss = var.get_loss(backward=False)
    assert float(loss) == 14.0 and var.grad is None
    assert closure.calls == [False]
    with pytest.warns(UserWarning, match="evaluated twice"):
        var.get_grad()
    assert closure.calls == [False, True]


def test_get_update_clones_grad():
    var, _ = make_var()
    u = var.get_update()
    assert u[0] is not var.grad[0]
    torch.testing.assert_close(u[0], var.grad[0])
    u[0].zero_()
    assert var.grad[0].abs().sum() > 0
    assert var.get_update() is u


def test_unused_params_get_zero_grads():
    var, _ = make_var(unused=1)
    g = var.get_grad()
    assert torch.equal(g[1], torch.zeros(()))


def test_no_closure_raises_clearly():
    var = Var(params=[torch.zeros(2, requires_grad=True)], closure=None, model=None, current_step=0)
    with pytest.raises(RuntimeError, match="closure"):
        var.get_grad()
    with pytest.raises(RuntimeError, match="closure"):
        var.get_loss(False)


def test_loss_given_is_used():
    var, closure = make_var()
    var.loss = torch.tensor(5.0)
    assert float(var.get_loss(False)) == 5.0
    assert closure.calls == []


def test_create_graph_gradient():
    var, closure = make_var()
    g = var.get_grad(create_graph=True)
    assert g[0].requires_grad
    (hv,) = torch.autograd.grad(g[0].sum(), var.params[0])
    torch.testing.assert_close(hv, torch.tensor([2.0, 2.0]))
    assert closure.calls == [False]


def test_parent_receives_loss_and_grad():
    parent, closure = make_var()
    child = parent.clone(clone_update=False, parent=parent)
    child.get_grad()
    assert parent.grad is not None and parent.loss is not None
    torch.testing.assert_close(parent.grad[0], torch.tensor([2.0, 4.0]))


def test_clone_semantics():
    var, _ = make_var()
    var.get_update()
    var.is_last = True
    var.nested_is_last = True
    var.last_module_lrs = [1.0, 1.0]
    var.stop = True
    var.skip_update = True
    var.should_terminate = True
    c = var.clone(clone_update=True)
    assert c.update[0] is not var.update[0] and torch.equal(c.update[0], var.update[0])
    assert c.grad is var.grad and c.loss is var.loss and c.closure is var.closure
    assert c.attrs is var.attrs and c.post_step_hooks is var.post_step_hooks and c.storage is var.storage
    assert (c.is_last, c.nested_is_last, c.last_module_lrs) == (False, False, None)
    assert c.stop and c.skip_update and c.should_terminate
    c2 = var.clone(clone_update=False)
    assert c2.update is var.update


def test_update_attrs_from_clone():
    var, _ = make_var()
    c = var.clone(clone_update=False)
    c.get_grad()
    c.should_terminate = True
    var.update_attrs_from_clone_(c)
    assert var.grad is c.grad and var.loss is c.loss and var.should_terminate


def test_zero_grad():
    var, _ = make_var()
    var.get_grad()
    var.zero_grad(set_to_none=False)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in var.params)
    var.zero_grad()
    assert all(p.grad is None for p in var.params)
