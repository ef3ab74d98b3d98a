"""Tests of NumberList against plain per-element Python arithmetic."""

import operator

import pytest
import torch

from torchzero.utils.numberlist import NumberList, maybe_numberlist
from torchzero.utils.tensorlist import TensorList

A = [1.5, -2.0, 3.0, 0.25]
B = [0.5, 4.0, -1.5, 2.0]


def check(result, expected):
    assert type(result) is NumberList
    assert list(result) == pytest.approx(list(expected))


@pytest.mark.parametrize(
    "name, fn",
    [
        ("add", operator.add), ("sub", operator.sub), ("mul", operator.mul), ("div", operator.truediv),
        ("floor_divide", operator.floordiv), ("remainder", operator.mod),
    ],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["scalar", "list", "tuple", "numberlist"])
def test_arithmetic_methods(name, fn, kind):
    nl = NumberList(A)
    other = {"scalar": 1.25, "list": B, "tuple": tuple(B), "numberlist": NumberList(B)}[kind]
    per = [other] * len(A) if kind == "scalar" else list(other)
    check(getattr(nl, name)(other), [fn(a, b) for a, b in zip(A, per)])
    assert list(nl) == A  # not modified


@pytest.mark.parametrize("kind", ["scalar", "list"])
def test_operators(kind):
    nl = NumberList(A)
    other = 1.25 if kind == "scalar" else B
    per = [other] * len(A) if kind == "scalar" else other
    pairs = list(zip(A, per))
    check(nl + other, [a + b for a, b in pairs])
    check(nl - other, [a - b for a, b in pairs])
    check(nl * other, [a * b for a, b in pairs])
    check(nl / other, [a / b for a, b in pairs])
    check(nl // other, [a // b for a, b in pairs])
    check(nl % other, [a % b for a, b in pairs])
    check(NumberList(abs(a) for a in A) ** other, [abs(a) ** b for a, b in pairs])
    check(other + nl, [b + a for a, b in pairs])  # a plain list on the left still adds elementwise
    check(other - nl, [b - a for a, b in pairs])
    check(other * nl, [b * a for a, b in pairs])
    check(other / nl, [b / a for a, b in pairs])
    check(2 ** NumberList(per), [2**b for b in per])
    check(-nl, [-a for a in A])
    for op in (operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge):
        res = op(nl, other)
        assert type(res) is NumberList and list(res) == [op(a, b) for a, b in pairs]


def test_alpha_pow_rpow_neg():
    nl = NumberList([1, 2, 3])
    check(nl.add([1, 1, 1], alpha=2), [3, 4, 5])
    check(nl.sub(1, alpha=0.5), [0.5, 1.5, 2.5])
    check(nl.pow(2), [1, 4, 9])
    assert all(isinstance(x, int) for x in nl.pow(2))  # int ** int stays int
    check(nl.rpow(2), [2, 4, 8])
    check(nl.rpow([1, 2, 3]), [1, 4, 27])
    check(nl.neg(), [-1, -2, -3])
    check(nl.mul(0.5).div(2), [0.25, 0.5, 0.75])


def test_logic():
    a = NumberList([True, False, True, False])
    b = [True, True, False, False]
    check(~a, [False, True, False, True])
    check(a.logical_not(), [False, True, False, True])
    check(a & b, [True, False, False, False])
    check(a | b, [True, True, True, False])
    check(a ^ b, [False, True, True, False])
    check(a.logical_and(True), [True, False, True, False])
    check(NumberList([0, 2]).logical_or(0), [False, True])


def test_map_zipmap_clamp_fill_none():
    nl = NumberList([-2.0, 0.5, 3.0])
    check(nl.map(abs), [2.0, 0.5, 3.0])
    check(nl.zipmap(max, [0, 1, 2]), [0, 1, 3.0])
    check(nl.zipmap(lambda x, y, z: x + y + z, 1, 10), [9.0, 11.5, 14.0])
    check(nl.zipmap_args(lambda x, y, z: x * y + z, [1, 2, 3], 1), [-1.0, 2.0, 10.0])
    check(nl.clamp(-1, 1), [-1, 0.5, 1])
    check(nl.clip(min=0), [0, 0.5, 3.0])
    check(nl.clamp(max=[0, 0, 0]), [-2.0, 0, 0])
    check(nl.clamp(1, 0), [0, 0, 0])  # like torch.clamp, max wins when min > max
    check(NumberList([None, 2, None]).fill_none(7), [7, 2, 7])
    check(NumberList([None, 2, None]).fill_none([1, 1, 3]), [1, 2, 3])


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        NumberList([1, 2, 3]) + [1, 2]
    with pytest.raises(ValueError):
        NumberList([1, 2]).zipmap_args(operator.add, [1, 2, 3])


def test_bool_and_repr():
    assert not NumberList()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(NumberList([1]))
    assert repr(NumberList([1, 2.5])) == "NumberList([1, 2.5])"


def test_defers_to_tensorlist():
    tl = TensorList([torch.ones(2), torch.ones(3)])
    nl = NumberList([2.0, 3.0])
    for result, values in [(nl * tl, [2.0, 3.0]), (nl + tl, [3.0, 4.0]), (nl - tl, [1.0, 2.0]), (nl / tl, [2.0, 3.0])]:
        assert type(result) is TensorList
        assert [t.tolist() for t in result] == [[values[0]] * 2, [values[1]] * 3]
    cmp = nl > tl
    assert type(cmp) is TensorList and all(bool(c.all()) for c in cmp)
    # and TensorList methods take NumberLists as per-tensor scalars (foreach ScalarList overloads)
    out = tl.mul(nl).add_(nl)
    assert [t.tolist() for t in out] == [[4.0, 4.0], [6.0, 6.0, 6.0]]


def test_maybe_numberlist():
    nl = NumberList([1])
    assert maybe_numberlist(nl) is nl
    assert type(maybe_numberlist([1, 2])) is NumberList and type(maybe_numberlist((1,))) is NumberList
    assert maybe_numberlist(3) == 3
