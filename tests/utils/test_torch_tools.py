"""Tests of the small tensor helpers in torchzero.utils.torch_tools."""

import numpy as np
import pytest
import torch

from torchzero.utils.numberlist import NumberList
from torchzero.utils.tensorlist import TensorList
from torchzero.utils.torch_tools import (
    flatten,
    set_storage_,
    tofloat,
    tolist,
    tonumpy,
    totensor,
    unpack_dicts,
    unpack_states,
    vec_to_tensors,
    vec_to_tensors_,
)

SHAPES = [(), (3,), (2, 3), (2, 1, 2), (1, 1)]


def test_vec_to_tensors_gives_views():
    reference = [torch.zeros(s) for s in SHAPES]
    n = sum(r.numel() for r in reference)
    vec = torch.arange(n, dtype=torch.float64)
    parts = vec_to_tensors(vec, reference)
    assert [p.shape for p in parts] == [r.shape for r in reference]
    assert all(p.dtype == torch.float64 for p in parts)
    torch.testing.assert_close(torch.cat([p.reshape(-1) for p in parts]), vec)
    vec.mul_(-1)  # views into vec
    torch.testing.assert_close(torch.cat([p.reshape(-1) for p in parts]), -torch.arange(n, dtype=torch.float64))
    with pytest.raises(ValueError):
        vec_to_tensors(torch.zeros(n + 1), reference)
    assert vec_to_tensors(torch.zeros(0), []) == []


def test_vec_to_tensors_inplace_repoints_storage():
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    ids = [id(p) for p in params]
    n = sum(p.numel() for p in params)
    vec = torch.arange(n, dtype=torch.float32)
    vec_to_tensors_(vec, params)  # works on leaf parameters (no_grad)
    assert [id(p) for p in params] == ids and [p.shape for p in params] == [torch.Size(s) for s in SHAPES]
    torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in params]), vec)
    vec.add_(1)  # the tensors now share memory with vec
    torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in params]), torch.arange(n) + 1.0)
    assert all(p.requires_grad for p in params)
    with pytest.raises(ValueError):
        vec_to_tensors_(torch.zeros(n - 1), params)


def test_set_storage_():
    p = torch.nn.Parameter(torch.zeros(3))
    new = torch.tensor([1.0, 2.0, 3.0])
    set_storage_(p, new)
    assert p.requires_grad and p.data_ptr() == new.data_ptr()
    torch.testing.assert_close(p.detach(), new)


def test_conversions():
    assert tofloat(torch.tensor(2.5)) == 2.5 and isinstance(tofloat(torch.tensor([3])), float)
    assert tofloat(np.float32(1.5)) == 1.5 and tofloat(np.array([4.0])) == 4.0 and tofloat(7) == 7.0
    t = torch.arange(4.0, requires_grad=True)
    arr = tonumpy(t)
    assert isinstance(arr, np.ndarray) and arr.tolist() == [0.0, 1.0, 2.0, 3.0]
    a = np.ones(2)
    assert tonumpy(a) is a and tonumpy([1, 2]).tolist() == [1, 2]
    assert totensor(t) is t
    assert totensor(t, dtype=torch.float64).dtype == torch.float64
    x = np.arange(3.0)
    tx = totensor(x)
    assert tx.dtype == torch.float64 and tx.data_ptr() == x.ctypes.data  # shares memory without conversion
    assert totensor([1.0, 2.0], dtype=torch.float16).dtype == torch.float16
    assert totensor(3).item() == 3
    assert tolist(t) == [0.0, 1.0, 2.0, 3.0] and tolist(torch.tensor(5.0)) == 5.0
    assert tolist(np.array([[1, 2]])) == [[1, 2]] and tolist((1, 2)) == [1, 2] and tolist(range(2)) == [0, 1]


def test_flatten():
    t = torch.zeros(2)
    assert flatten([1, [2, (3, [4, []])], "ab", t]) == [1, 2, 3, 4, "ab", t]
    assert flatten(5) == [5] and flatten([]) == [] and flatten(((1,), 2)) == [1, 2]
    assert flatten([{"a": 1}])[0] == {"a": 1}  # non-list items are kept as they are
    out = flatten([t, [t]])
    assert len(out) == 2 and out[0] is t  # tensors are not iterated


def test_unpack_states():
    tensors = [torch.ones(2), torch.full((3,), 2.0)]
    states = [{}, {"exp_avg": torch.tensor([5.0, 5.0, 5.0])}]
    existing = states[1]["exp_avg"]
    exp_avg = unpack_states(states, tensors, "exp_avg", cls=TensorList)
    assert isinstance(exp_avg, TensorList)
    assert torch.equal(exp_avg[0], torch.zeros(2)) and exp_avg[1] is existing
    assert states[0]["exp_avg"] is exp_avg[0]  # created values are stored in the state

    a, b = unpack_states(states, tensors, "exp_avg", "exp_avg_sq")
    assert type(a) is list and a[0] is exp_avg[0] and torch.equal(b[1], torch.zeros(3))

    # init: a callable, a tensor (cloned), a number, per-key lists, per-tensor lists
    s = [{}, {}]
    (m,) = [unpack_states(s, tensors, "m", init=torch.ones_like)]
    assert torch.equal(m[1], torch.ones(3))
    init = torch.tensor(3.0)
    v = unpack_states(s, tensors, "v", init=init)
    assert torch.equal(v[0], init) and v[0] is not init and v[0] is not v[1]
    step = unpack_states(s, tensors, "step", init=0, cls=NumberList)
    assert type(step) is NumberList and list(step) == [0, 0]
    x, y = unpack_states(s, tensors, "x", "y", init=[torch.zeros_like, 1.5])
    assert torch.equal(x[0], torch.zeros(2)) and list(y) == [1.5, 1.5]
    lr = unpack_states(s, tensors, "lr", init=[0.1, 0.2])
    assert lr == [0.1, 0.2]
    p, q = unpack_states(s, tensors, "p", "q", init=[[1, 2], torch.ones_like])
    assert p == [1, 2] and torch.equal(q[0], torch.ones(2))
    with pytest.raises(ValueError):
        unpack_states(s, tensors, "a", "b", init=[0, 1, 2])
    with pytest.raises(ValueError):
        unpack_states(s, tensors)


def test_unpack_dicts():
    settings = [{"lr": 0.1, "beta": 0.9}, {"lr": 0.2, "beta": 0.99}]
    lrs = unpack_dicts(settings, "lr", cls=NumberList)
    assert type(lrs) is NumberList and list(lrs) == [0.1, 0.2]
    lrs, betas = unpack_dicts(settings, "lr", "beta")
    assert lrs == [0.1, 0.2] and betas == [0.9, 0.99]
    assert unpack_dicts(iter(settings), "beta", "lr", cls=tuple) == [(0.9, 0.99), (0.1, 0.2)]
    with pytest.raises(KeyError):
        unpack_dicts(settings, "missing")
