"""Tests of TensorList against plain per-tensor torch computations (the loop references in each test)."""

import math

import pytest
import torch

from torchzero.utils.numberlist import NumberList
from torchzero.utils.tensorlist import (
    TensorList,
    as_tensorlist,
    generic_add,
    generic_clamp,
    generic_div,
    generic_eq,
    generic_finfo,
    generic_finfo_eps,
    generic_finfo_tiny,
    generic_full_like,
    generic_is_tensorlist,
    generic_max,
    generic_min,
    generic_mul,
    generic_ne,
    generic_numel,
    generic_ones_like,
    generic_randn_like,
    generic_sub,
    generic_sum,
    generic_vector_norm,
    generic_zeros_like,
)

SHAPES = [(), (3,), (2, 3), (2, 1, 3, 2), (1, 1)]
SHAPES_ND = [(3,), (2, 3), (2, 1, 3, 2), (1, 4)]  # no 0-d tensor: for broadcasting a (1,)-shaped tensor in place
DTYPES = [torch.float32, torch.float64]
OPERAND_KINDS = ["scalar", "numberlist", "tuple", "tensor_0d", "tensor_bcast", "tensor_seq"]


def make(dtype=torch.float32, seed=0, shapes=SHAPES, positive=False) -> TensorList:
    g = torch.Generator().manual_seed(seed)
    tl = TensorList(torch.randn(s, generator=g, dtype=dtype) for s in shapes)
    return tl.abs_().add_(0.5) if positive else tl


def assert_tl_close(actual, expected, **kwargs):
    assert isinstance(actual, TensorList)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **kwargs)


def make_operand(kind, tl, positive=True):
    """Returns (operand, list of per-tensor operands for the loop reference)."""
    n, dtype = len(tl), tl[0].dtype
    if kind == "scalar":
        return 1.7, [1.7] * n
    if kind == "numberlist":
        vals = NumberList(0.5 + 0.25 * i for i in range(n))
        return vals, list(vals)
    if kind == "tuple":
        vals = tuple(1.5 - 0.25 * i for i in range(n))
        return vals, list(vals)
    if kind == "tensor_0d":
        t = torch.tensor(1.3, dtype=dtype)
        return t, [t] * n
    if kind == "tensor_bcast":
        t = torch.tensor([0.8], dtype=dtype)
        return t, [t] * n
    if kind == "tensor_seq":
        other = make(dtype, seed=1, shapes=[t.shape for t in tl], positive=positive)
        return other, list(other)
    raise ValueError(kind)


def ref_binary(op, t, o):
    """Loop reference; torch.maximum & co. need tensor operands, so scalars become 0-d tensors of t's dtype."""
    if op in ("maximum", "minimum") and not isinstance(o, torch.Tensor):
        o = torch.tensor(o, dtype=t.dtype)
    return getattr(torch, op)(t, o)


BINARY_OPS = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "clamp_min", "clamp_max", "remainder",
              "floor_divide", "copysign", "eq", "ne", "lt", "le", "gt", "ge"]  # fmt: skip


# ============================================================================ elementwise binary ops
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", OPERAND_KINDS)
@pytest.mark.parametrize("op", BINARY_OPS)
def test_binary_ops(op, kind, dtype):
    shapes = SHAPES_ND if kind == "tensor_bcast" else SHAPES
    tl = make(dtype, shapes=shapes, positive=op == "pow")
    other, per_tensor = make_operand(kind, tl)
    expected = [ref_binary(op, t, o) for t, o in zip(tl, per_tensor)]
    originals = list(tl)
    snapshot = tl.clone()

    out = getattr(tl, op)(other)
    assert_tl_close(out, expected)
    assert_tl_close(tl, snapshot)  # not modified
    assert out is not tl

    out_ = getattr(tl, op + "_")(other)
    assert out_ is tl
    assert all(a is b for a, b in zip(tl, originals))
    expected_inplace = [e.to(t.dtype) for e, t in zip(expected, snapshot)]  # eq_ & co. write 0/1 in t's dtype
    assert_tl_close(tl, expected_inplace)


@pytest.mark.parametrize("kind", OPERAND_KINDS)
@pytest.mark.parametrize("op", ["add", "sub"])
def test_add_sub_alpha(op, kind):
    shapes = SHAPES_ND if kind == "tensor_bcast" else SHAPES
    tl = make(torch.float64, shapes=shapes)
    other, per_tensor = make_operand(kind, tl)
    expected = [getattr(torch, op)(t, torch.as_tensor(o, dtype=t.dtype), alpha=-2.5) for t, o in zip(tl, per_tensor)]
    assert_tl_close(getattr(tl, op)(other, alpha=-2.5), expected)
    assert getattr(tl, op + "_")(other, alpha=-2.5) is tl
    assert_tl_close(tl, expected)


@pytest.mark.parametrize("kind", OPERAND_KINDS)
def test_operators(kind):
    shapes = SHAPES_ND if kind == "tensor_bcast" else SHAPES
    tl = make(torch.float64, shapes=shapes, positive=True)
    other, per = make_operand(kind, tl)
    pairs = list(zip(tl, per))
    assert_tl_close(tl + other, [t + o for t, o in pairs])
    assert_tl_close(tl - other, [t - o for t, o in pairs])
    assert_tl_close(tl * other, [t * o for t, o in pairs])
    assert_tl_close(tl / other, [t / o for t, o in pairs])
    assert_tl_close(tl**other, [t**o for t, o in pairs])
    assert_tl_close(tl // other, [t // o for t, o in pairs])
    assert_tl_close(tl % other, [t % o for t, o in pairs])
    for name in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
        res = getattr(tl, name)(other)
        assert_tl_close(res, [getattr(t, name)(o) for t, o in pairs])
        assert all(r.dtype == torch.bool for r in res)
    # reflected operators, for operands that can be on the left
    if kind in ("scalar", "tensor_seq", "tensor_0d", "tensor_bcast"):
        left = other if kind != "tensor_seq" else list(other)
        assert_tl_close(left + tl, [o + t for t, o in pairs])
        assert_tl_close(left - tl, [o - t for t, o in pairs])
        assert_tl_close(left * tl, [o * t for t, o in pairs])
        assert_tl_close(left / tl, [o / t for t, o in pairs])
        assert_tl_close(left**tl, [o**t for t, o in pairs])


@pytest.mark.parametrize("kind", ["scalar", "numberlist", "tensor_0d", "tensor_seq"])
def test_reflected_methods(kind):
    tl = make(torch.float64, positive=True)
    other, per = make_operand(kind, tl)
    pairs = list(zip(tl, per))
    assert_tl_close(tl.__rsub__(other), [torch.as_tensor(o, dtype=t.dtype) - t for t, o in pairs])
    assert_tl_close(tl.__rtruediv__(other), [torch.as_tensor(o, dtype=t.dtype) / t for t, o in pairs])
    assert_tl_close(tl.rpow(other), [torch.pow(torch.as_tensor(o, dtype=t.dtype), t) for t, o in pairs])
    snapshot = tl.clone()
    assert tl.rpow_(other) is tl
    assert_tl_close(tl, [torch.pow(torch.as_tensor(o, dtype=t.dtype), t) for t, o in zip(snapshot, per)])


def test_inplace_operators_keep_identity():
    tl = make(torch.float64, positive=True)
    ref = tl.clone()
    ident, originals = tl, list(tl)
    tl += 1
    tl -= NumberList(range(len(tl)))
    tl *= 3
    tl /= torch.tensor(2.0, dtype=torch.float64)
    tl **= 2
    tl //= 0.5
    tl %= 3.0
    assert tl is ident and all(a is b for a, b in zip(tl, originals))
    expected = [((((t + 1 - i) * 3 / 2) ** 2) // 0.5) % 3.0 for i, t in enumerate(ref)]
    assert_tl_close(tl, expected)


def test_iadd_imul_are_not_list_concatenation():
    tl = make()
    n = len(tl)
    tl += [torch.ones(s) for s in SHAPES]
    tl *= 2
    assert len(tl) == n


def test_neg_and_logical_operators():
    tl = make()
    assert_tl_close(-tl, [-t for t in tl])
    masks = tl > 0
    other = tl < 0.5
    assert_tl_close(~masks, [~m for m in masks])
    assert_tl_close(masks & other, [m & o for m, o in zip(masks, other)])
    assert_tl_close(masks | other, [m | o for m, o in zip(masks, other)])
    assert_tl_close(masks ^ other, [m ^ o for m, o in zip(masks, other)])
    m = masks.clone()
    assert m.logical_and_(other) is m
    assert_tl_close(m, [a & b for a, b in zip(masks, other)])
    m = masks.clone()
    m |= other
    assert_tl_close(m, [a | b for a, b in zip(masks, other)])
    m = masks.clone()
    m ^= other
    assert_tl_close(m, [a ^ b for a, b in zip(masks, other)])
    assert_tl_close(masks.clone().logical_not_(), [~a for a in masks])


def test_bool_raises_unless_empty():
    assert not TensorList()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(make())
    with pytest.raises(RuntimeError):
        if make() == make():
            pass


def test_foreach_is_one_call(monkeypatch):
    """Arithmetic is one multi-tensor call; a 0-d tensor operand uses the .Tensor overload (no device sync)."""
    calls = []

    def spy(name):
        original = getattr(torch, name)

        def wrapper(*args, **kwargs):
            calls.append((name, args))
            return original(*args, **kwargs)

        monkeypatch.setattr(torch, name, wrapper)

    for name in ("_foreach_mul_", "_foreach_add", "_foreach_lerp_", "_foreach_div"):
        spy(name)
    tl = make()
    lr = torch.tensor(0.1)
    tl.mul_(NumberList([0.5] * len(tl)))
    tl.add(lr)
    tl.lerp_(make(seed=1), 0.9)
    tl.div(lr)
    assert [c[0] for c in calls] == ["_foreach_mul_", "_foreach_add", "_foreach_lerp_", "_foreach_div"]
    assert calls[1][1][1] is lr and calls[3][1][1] is lr


# ============================================================================ unary ops
def _pos(t):
    return t.abs() + 0.1


def _unit(t):
    return torch.tanh(t) * 0.9


UNARY_OPS = {
    "neg": None, "abs": None, "sign": None, "exp": None, "sqrt": _pos, "reciprocal": _pos, "square": None,
    "sin": None, "cos": None, "tan": _unit, "asin": _unit, "acos": _unit, "atan": None, "sinh": None, "cosh": None,
    "tanh": None, "log": _pos, "log10": _pos, "log2": _pos, "log1p": _pos, "erf": None, "erfc": None,
    "sigmoid": None, "floor": None, "ceil": None, "round": None,
}  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", list(UNARY_OPS))
def test_unary_ops(op, dtype):
    tl = make(dtype) * 3
    if UNARY_OPS[op] is not None:
        tl = tl.map(UNARY_OPS[op])
    expected = [getattr(torch, op)(t) for t in tl]
    assert_tl_close(getattr(tl, op)(), expected)
    originals = list(tl)
    assert getattr(tl, op + "_")() is tl
    assert all(a is b for a, b in zip(tl, originals))
    assert_tl_close(tl, expected)


def test_unary_loop_ops():
    tl = make() - 0.2
    assert_tl_close(tl.signbit(), [torch.signbit(t) for t in tl])
    assert_tl_close(tl.isfinite(), [torch.isfinite(t) for t in tl])
    assert_tl_close(tl.any(), [t.any() for t in tl])
    assert_tl_close((tl > -10).all(), [torch.tensor(True)] * len(tl))
    nan = TensorList([torch.tensor([math.nan, math.inf, -math.inf, 1.0]), torch.tensor(math.nan)])
    assert_tl_close(nan.nan_to_num(0.0, 5.0, -5.0), [torch.nan_to_num(t, 0.0, 5.0, -5.0) for t in nan])
    assert_tl_close(nan.nan_to_num([1.0, 2.0]), [torch.nan_to_num(nan[0], 1.0), torch.nan_to_num(nan[1], 2.0)])
    assert nan.nan_to_num_(0.0) is nan
    assert bool(nan.isfinite().global_all())


# ============================================================================ lerp, addcmul, addcdiv, clamp
@pytest.mark.parametrize("kind", ["scalar", "numberlist", "tuple", "tensor_0d", "tensor_seq"])
def test_lerp(kind):
    tl, end = make(torch.float64), make(torch.float64, seed=3)
    weight, per = make_operand(kind, tl)
    expected = [torch.lerp(t, e, torch.as_tensor(w, dtype=t.dtype)) for t, e, w in zip(tl, end, per)]
    assert_tl_close(tl.lerp(end, weight), expected)
    assert_tl_close(tl.lerp_compat(end, weight), expected)
    assert_tl_close(tl.clone().lerp_compat_(end, weight), expected)
    assert tl.lerp_(end, weight) is tl
    assert_tl_close(tl, expected)


@pytest.mark.parametrize("value_kind", ["default", "scalar", "numberlist", "tensor_0d", "tensor_1d"])
@pytest.mark.parametrize("op", ["addcmul", "addcdiv"])
def test_addcmul_addcdiv(op, value_kind):
    tl, t1, t2 = make(torch.float64), make(torch.float64, seed=1), make(torch.float64, seed=2, positive=True)
    n = len(tl)
    values = {
        "default": (None, [1.0] * n),
        "scalar": (0.3, [0.3] * n),
        "numberlist": (NumberList(0.1 * i for i in range(n)), [0.1 * i for i in range(n)]),
        "tensor_0d": (torch.tensor(0.7), [0.7] * n),
        "tensor_1d": (torch.arange(n, dtype=torch.float64), list(range(n))),
    }[value_kind]
    args = () if values[0] is None else (values[0],)
    expected = [getattr(torch, op)(a, b, c, value=float(v)) for a, b, c, v in zip(tl, t1, t2, values[1])]
    assert_tl_close(getattr(tl, op)(t1, t2, *args), expected)
    assert getattr(tl, op + "_")(t1, t2, *args) is tl
    assert_tl_close(tl, expected)


def test_clamp_family():
    tl = make(torch.float64) * 2
    n = len(tl)
    lo, hi = NumberList([-0.5] * n), NumberList([0.1 * i for i in range(n)])
    assert_tl_close(tl.clamp(-0.5, 0.7), [t.clamp(-0.5, 0.7) for t in tl])
    assert_tl_close(tl.clamp(lo, hi), [t.clamp(a, b) for t, a, b in zip(tl, lo, hi)])
    assert_tl_close(tl.clamp(min=0.2), [t.clamp(min=0.2) for t in tl])
    assert_tl_close(tl.clip(max=0.2), [t.clamp(max=0.2) for t in tl])
    assert_tl_close(tl.clamp(1.0, -1.0), [t.clamp(1.0, -1.0) for t in tl])  # max wins, like torch
    bounds = make(torch.float64, seed=5)
    assert_tl_close(tl.clamp(min=bounds), [torch.clamp(t, min=b) for t, b in zip(tl, bounds)])
    c = tl.clone()
    assert c.clamp_(-0.1, 0.1) is c and c.clip_(-0.05) is c
    assert_tl_close(c, [t.clamp(-0.05, 0.1) for t in tl])
    # clamp_magnitude keeps the sign and sends zeros to +min
    x = TensorList([torch.tensor([-3.0, -0.1, 0.0, 0.2, 5.0])])
    assert_tl_close(x.clamp_magnitude(0.5, 2.0), [torch.tensor([-2.0, -0.5, 0.5, 0.5, 2.0])])
    assert x.clamp_magnitude_(0.5, 2.0) is x


def test_nan_propagation_in_clamp_and_maximum():
    tl = TensorList([torch.tensor([math.nan, -1.0, 2.0])])
    for out, ref in [(tl.clamp_min(0.0), torch.clamp_min(tl[0], 0.0)), (tl.maximum(0.0), torch.clamp_min(tl[0], 0.0))]:
        torch.testing.assert_close(out[0], ref, equal_nan=True)


# ============================================================================ lazy ops
def test_lazy_ops_skip_identity():
    tl = make()
    n = len(tl)
    assert tl.lazy_mul(1) is tl
    cloned = tl.lazy_mul(1, clone=True)
    assert cloned is not tl and all(a is not b for a, b in zip(cloned, tl))
    assert_tl_close(cloned, tl)
    assert tl.lazy_mul(NumberList([1] * n)) is tl
    assert tl.lazy_add(0) is tl and tl.lazy_add((0,) * n) is tl
    assert tl.lazy_sub(0.0) is tl and tl.lazy_div(1.0) is tl
    assert tl.lazy_mul_(1) is tl and tl.lazy_add_(0) is tl and tl.lazy_sub_(0) is tl and tl.lazy_div_(1) is tl


def test_lazy_ops_apply_non_identity():
    tl = make()
    n = len(tl)
    seq = NumberList([1] * (n - 1) + [2])
    assert_tl_close(tl.lazy_mul(seq), [t * s for t, s in zip(tl, seq)])
    assert_tl_close(tl.lazy_mul(2), [t * 2 for t in tl])
    assert_tl_close(tl.lazy_add(1), [t + 1 for t in tl])
    assert_tl_close(tl.lazy_sub(1), [t - 1 for t in tl])
    assert_tl_close(tl.lazy_div(4), [t / 4 for t in tl])
    one = torch.tensor(1.0)
    assert tl.lazy_mul(one) is not tl  # tensors are not inspected (that would synchronize)
    ref = tl.clone()
    assert tl.lazy_mul_(3) is tl
    assert_tl_close(tl, [t * 3 for t in ref])


# ============================================================================ reductions
@pytest.mark.parametrize("dtype", DTYPES)
def test_per_tensor_reductions_dim_none(dtype):
    tl = make(dtype)
    for name, ref in [("max", torch.amax), ("min", torch.amin), ("mean", torch.mean), ("sum", torch.sum),
                      ("prod", torch.prod), ("median", torch.median)]:  # fmt: skip
        out = getattr(tl, name)()
        assert_tl_close(out, [ref(t) for t in tl])
        assert all(o.ndim == 0 for o in out)
        keep = getattr(tl, name)(keepdim=True)
        assert_tl_close(keep, [ref(t).reshape([1] * t.ndim) for t in tl])
    big = make(dtype, shapes=SHAPES_ND + [(5,)])
    assert_tl_close(big.std(), [t.std() for t in big])
    assert_tl_close(big.var(unbiased=False), [t.var(unbiased=False) for t in big])
    assert_tl_close(big.std(keepdim=True), [t.std(dim=None, keepdim=True) for t in big])
    assert_tl_close(big.quantile(0.3), [t.quantile(0.3) for t in big])


@pytest.mark.parametrize("dim", [0, -1, (0, 1), [0, -1]])
@pytest.mark.parametrize("keepdim", [False, True])
def test_per_tensor_reductions_along_dims(dim, keepdim):
    shapes = [(3,), (2, 3), (2, 1, 3, 2)] if isinstance(dim, int) else [(2, 3), (2, 1, 3, 2), (4, 2)]
    tl = make(torch.float64, shapes=shapes)
    d = tuple(dim) if isinstance(dim, list) else dim
    for name, ref in [("max", torch.amax), ("min", torch.amin), ("mean", torch.mean), ("sum", torch.sum),
                      ("std", torch.std), ("var", torch.var), ("prod", torch.prod)]:  # fmt: skip
        out = getattr(tl, name)(dim=dim, keepdim=keepdim)
        if name == "prod" and not isinstance(d, int):
            expected = []
            for t in tl:
                r = t
                for ax in sorted({a % t.ndim for a in d}, reverse=True):
                    r = r.prod(ax, keepdim=keepdim)
                expected.append(r)
        else:
            expected = [ref(t, dim=d, keepdim=keepdim) for t in tl]
        assert_tl_close(out, expected)
    if isinstance(dim, int):
        assert_tl_close(tl.median(dim=dim, keepdim=keepdim), [t.median(dim=dim, keepdim=keepdim).values for t in tl])


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_reductions(dtype):
    tl = make(dtype, shapes=SHAPES + [(0,)])  # includes a 0-d tensor and one without elements
    vec = tl.to_vec()
    assert tl.global_numel() == vec.numel()
    for got, ref in [
        (tl.global_sum(), vec.sum()), (tl.global_mean(), vec.mean()), (tl.global_max(), vec.max()),
        (tl.global_min(), vec.min()), (tl.global_std(), vec.std()), (tl.global_var(), vec.var()),
        (tl.sum("global"), vec.sum()), (tl.mean("global"), vec.mean()), (tl.max("global"), vec.max()),
        (tl.min("global"), vec.min()), (tl.std("global"), vec.std()), (tl.var("global", unbiased=False), vec.var(unbiased=False)),
    ]:  # fmt: skip
        torch.testing.assert_close(got, ref)
        assert got.ndim == 0
    assert bool(tl.global_any()) and not bool((tl > 100).global_any())
    assert bool((tl < 100).global_all()) and not bool((tl > 0).global_all())
    with pytest.raises(ValueError):
        tl.sum(dim="global", keepdim=True)


ORDS = [0, 1, 2, 3, 0.5, 1.5, -1, -2.5, math.inf, -math.inf]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ord", ORDS)
def test_global_vector_norm(ord, dtype):
    tl = make(dtype, shapes=SHAPES + [(0,)]) - 0.3
    tl[1][0] = 0.0  # a zero element matters for ord 0 and negative ords
    expected = torch.linalg.vector_norm(tl.to_vec(), ord)
    torch.testing.assert_close(tl.global_vector_norm(ord), expected)
    torch.testing.assert_close(generic_vector_norm(tl, ord), expected)
    torch.testing.assert_close(tl.global_vector_norm(torch.tensor(ord)), expected)
    nonempty = TensorList(tl[:-1])  # torch cannot take ±inf or negative norms of a tensor without elements
    assert_tl_close(nonempty.norm(ord), [torch.linalg.vector_norm(t, ord) for t in nonempty])


def test_global_l1_norm_is_sum_of_absolute_values():
    tl = TensorList([torch.tensor([-3.0, 1.0]), torch.tensor(-2.0)])
    assert tl.global_vector_norm(1).item() == 6.0  # the signed sum would be -4
    assert tl.global_metric("l1").item() == 6.0
    assert_tl_close(tl.metric("l1"), [torch.tensor(4.0), torch.tensor(2.0)])


@pytest.mark.parametrize("metric", ["mad", "std", "var", "sum", "l0", "l1", "l2", "l3", "l4", "linf", 1.5, 2])
def test_global_metric_and_metric(metric):
    tl = make(torch.float64, shapes=SHAPES_ND + [(5,)]) - 0.2
    vec = tl.to_vec()

    def ref(x):
        if metric == "mad":
            return x.abs().mean()
        if metric in ("std", "var", "sum"):
            return getattr(x, metric)()
        order = {"l0": 0, "l1": 1, "l2": 2, "l3": 3, "l4": 4, "linf": math.inf}.get(metric, metric)
        return torch.linalg.vector_norm(x, order)

    torch.testing.assert_close(tl.global_metric(metric), ref(vec))
    assert_tl_close(tl.metric(metric), [ref(t) for t in tl])
    with pytest.raises(ValueError):
        tl.global_metric("nope")


def test_empty_list():
    tl = TensorList()
    assert tl.global_vector_norm().item() == 0 and tl.global_vector_norm(math.inf).item() == 0
    assert tl.global_sum().item() == 0 and tl.global_numel() == 0
    assert math.isnan(tl.global_mean().item())
    assert tl.to_vec().numel() == 0
    assert len(tl.add(1)) == 0 and tl.add_(1) is tl and tl.mul_(NumberList()) is tl
    assert len(tl.sqrt()) == 0 and len(tl.norm(2)) == 0 and len(tl.clone()) == 0
    assert tl.dot(TensorList()).item() == 0
    assert not bool(tl.global_any()) and bool(tl.global_all())
    assert len(tl.from_vec(torch.empty(0))) == 0
    with pytest.raises(RuntimeError):
        tl.global_max()


def test_zero_dim_tensors():
    tl = TensorList([torch.tensor(-2.0), torch.tensor(3.0)])
    assert_tl_close(tl * NumberList([2, 3]), [torch.tensor(-4.0), torch.tensor(9.0)])
    assert tl.global_vector_norm(1).item() == 5.0 and tl.global_max().item() == 3.0
    assert_tl_close(tl.max(), list(tl))
    torch.testing.assert_close(tl.to_vec(), torch.tensor([-2.0, 3.0]))
    assert tl.flat_get(1).item() == 3.0


# ============================================================================ complex
def test_complex():
    real, imag = make(torch.float32), make(torch.float32, seed=1)
    c = TensorList.complex(real, imag)
    assert all(t.dtype == torch.complex64 for t in c)
    assert_tl_close(c.real, real)
    assert_tl_close(c.imag, imag)
    assert_tl_close(c.view_as_real().view_as_complex(), c)
    assert_tl_close(c * (1 + 2j), [t * (1 + 2j) for t in c])
    assert_tl_close(c.add(NumberList([1j] * len(c))), [t + 1j for t in c])
    assert_tl_close(c.abs(), [t.abs() for t in c])
    assert_tl_close(c.conj(), [t.conj() for t in c])
    torch.testing.assert_close(c.global_vector_norm(), torch.linalg.vector_norm(c.to_vec()))
    torch.testing.assert_close(c.dot(c), (c.to_vec() * c.to_vec()).sum())


# ============================================================================ creation and sampling
def test_creation():
    tl = make(torch.float64)
    n = len(tl)
    for out, value in [(tl.zeros_like(), 0.0), (tl.ones_like(), 1.0), (tl.full_like(2.5), 2.5)]:
        assert_tl_close(out, [torch.full_like(t, value) for t in tl])
    assert_tl_close(tl.full_like(NumberList(range(n))), [torch.full_like(t, i) for i, t in enumerate(tl)])
    e = tl.empty_like(dtype=torch.float32)
    assert e.shape == tl.shape and all(d == torch.float32 for d in e.dtype)
    assert tl.zeros_like(dtype=torch.float16).dtype == [torch.float16] * n
    assert tl.fill(3.0)[2].eq(3).all() and tl.fill(NumberList(range(n)))[1].eq(1).all()
    f = tl.clone()
    assert f.fill_(torch.tensor(4.0)) is f and bool(f.eq(4).global_all())
    ri = tl.randint_like(0, 3)
    assert bool(((ri >= 0) & (ri < 3)).global_all())


@pytest.mark.parametrize("method", ["randn_like", "rand_like", "uniform_like", "bernoulli_like", "rademacher_like"])
def test_sampling_reproducible_with_generator(method):
    tl = make(torch.float64)
    a = getattr(tl, method)(generator=torch.Generator().manual_seed(7))
    b = getattr(tl, method)(generator=torch.Generator().manual_seed(7))
    c = getattr(tl, method)(generator=torch.Generator().manual_seed(8))
    assert_tl_close(a, b)
    assert a.shape == tl.shape and all(d == torch.float64 for d in a.dtype)
    assert not torch.equal(a.to_vec(), c.to_vec())


@pytest.mark.parametrize("distribution", ["normal", "gaussian", "uniform", "sphere", "rademacher"])
def test_sample_like_reproducible(distribution):
    tl = make(torch.float64)
    a = tl.sample_like(distribution, generator=torch.Generator().manual_seed(1))
    # uniform defaults to [-1, 1); the default sphere is the unit sphere (variance v gives radius v*sqrt(n))
    default_variance = {"uniform": 1 / 3, "sphere": 1 / math.sqrt(tl.global_numel())}.get(distribution, 1)
    b = tl.sample_like(distribution, variance=default_variance, generator=torch.Generator().manual_seed(1))
    assert_tl_close(a, b)
    if distribution == "sphere":
        torch.testing.assert_close(a.global_vector_norm(), torch.tensor(1.0, dtype=torch.float64))
    assert a.shape == tl.shape


def test_sample_like_variance_semantics():
    big = TensorList([torch.zeros(200_000, dtype=torch.float64), torch.zeros(100, 1000, dtype=torch.float64)])
    n = big.global_numel()

    def g():
        return torch.Generator().manual_seed(3)

    # normal and rademacher: variance multiplies the samples
    assert_tl_close(big.sample_like("normal", 3.0, generator=g()), big.randn_like(generator=g()) * 3.0)
    r = big.sample_like("rademacher", 0.5, generator=g())
    assert bool((r.abs() == 0.5).global_all())
    assert_tl_close(r, big.rademacher_like(generator=g()) * 0.5)
    # uniform: variance is the variance, bounds ±sqrt(3 v)
    u = big.sample_like("uniform", 2.0, generator=g())
    assert u.global_max() <= math.sqrt(6.0) and u.global_min() >= -math.sqrt(6.0)
    assert abs(u.global_var().item() - 2.0) < 0.03 and abs(u.global_mean().item()) < 0.02
    u1 = big.sample_like("uniform", generator=g())
    assert u1.global_max() <= 1 and u1.global_min() >= -1
    # sphere: radius is variance * sqrt(n)
    s = big.sample_like("sphere", 0.5, generator=g())
    torch.testing.assert_close(s.global_vector_norm(), torch.tensor(0.5 * math.sqrt(n), dtype=torch.float64))
    # per-tensor variances
    pt = big.sample_like("normal", NumberList([1.0, 4.0]), generator=g())
    assert_tl_close(pt, big.randn_like(generator=g()) * NumberList([1.0, 4.0]))
    pu = big.sample_like("uniform", [1.0, 4.0], generator=g())
    assert abs(pu[0].var().item() - 1.0) < 0.03 and abs(pu[1].var().item() - 4.0) < 0.2
    with pytest.raises(ValueError):
        big.sample_like("cauchy")  # type: ignore[arg-type]


def test_sphere_bernoulli_rademacher():
    tl = make(torch.float64)
    s = tl.sphere_like(2.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s.global_vector_norm(), torch.tensor(2.0, dtype=torch.float64))
    big = TensorList([torch.zeros(100_000)])
    r = big.rademacher_like(0.3, generator=torch.Generator().manual_seed(0))
    assert bool(((r == 1) | (r == -1)).global_all())
    assert abs(r.global_mean().item() - (2 * 0.3 - 1)) < 0.01
    assert bool((tl.rademacher_like(1.0) == 1).global_all()) and bool((tl.rademacher_like(0.0) == -1).global_all())
    b = big.bernoulli_like(0.25, generator=torch.Generator().manual_seed(0))
    assert abs(b.global_mean().item() - 0.25) < 0.01
    probs = TensorList([torch.zeros(5), torch.ones(3)])
    assert_tl_close(probs.bernoulli(), [torch.zeros(5), torch.ones(3)])
    u = tl.clone()
    assert u.uniform_(NumberList(range(len(u))), NumberList(i + 0.5 for i in range(len(u)))) is u
    assert all(bool(((t >= i) & (t < i + 0.5)).all()) for i, t in enumerate(u))


# ============================================================================ norm utilities
@pytest.mark.parametrize("tensorwise", [True, False])
def test_clip_norm(tensorwise):
    tl = make(torch.float64, shapes=SHAPES_ND) * 3

    def norms(x):
        return [torch.linalg.vector_norm(t) for t in x] if tensorwise else [x.global_vector_norm()]

    clipped = tl.clip_norm(max=0.5, tensorwise=tensorwise)
    assert all(abs(n.item() - 0.5) < 1e-9 for n in norms(clipped))
    raised = tl.clip_norm(min=100, tensorwise=tensorwise)
    assert all(abs(n.item() - 100) < 1e-9 for n in norms(raised))
    assert_tl_close(tl.clip_norm(min=1e-3, max=1e3, tensorwise=tensorwise), tl)  # already within
    c = tl.clone()
    assert c.clip_norm_(max=0.5, tensorwise=tensorwise) is c
    assert_tl_close(c, clipped)
    # direction is kept (of every tensor, or of the whole vector)
    for a, b in zip(clipped, tl) if tensorwise else [(clipped.to_vec(), tl.to_vec())]:
        torch.testing.assert_close(torch.cosine_similarity(a.reshape(-1), b.reshape(-1), 0), torch.tensor(1.0).double())
    # per-tensor bounds
    maxes = NumberList([0.1 * (i + 1) for i in range(len(tl))])
    pt = tl.clip_norm(max=maxes, tensorwise=True)
    torch.testing.assert_close(torch.stack(list(pt.norm(2))), torch.tensor(maxes, dtype=torch.float64))
    # a zero vector is left alone; other metrics
    z = TensorList([torch.zeros(3), torch.zeros(2)])
    assert_tl_close(z.clip_norm(min=1.0, tensorwise=tensorwise), z)
    linf = tl.clip_norm(max=0.2, ord="linf", tensorwise=tensorwise)
    assert linf.abs().global_max().item() == pytest.approx(0.2)


def test_clip_norm_global_with_per_tensor_bounds():
    tl = make(torch.float64, shapes=SHAPES_ND) * 3
    maxes = NumberList([0.5, 1.0, 2.0, 100.0])
    out = tl.clip_norm(max=maxes, tensorwise=False)
    g = tl.global_vector_norm()
    assert_tl_close(out, [t * min(1.0, m / g.item()) for t, m in zip(tl, maxes)])


@pytest.mark.parametrize("tensorwise", [True, False])
def test_graft(tensorwise):
    tl, mag = make(torch.float64, shapes=SHAPES_ND), make(torch.float64, shapes=SHAPES_ND, seed=9) * 5
    out = tl.graft(mag, tensorwise=tensorwise)
    if tensorwise:
        assert_tl_close(out.norm(2), mag.norm(2))
        assert_tl_close(out, [t * (torch.linalg.vector_norm(m) / torch.linalg.vector_norm(t)) for t, m in zip(tl, mag)])
    else:
        torch.testing.assert_close(out.global_vector_norm(), mag.global_vector_norm())
        assert_tl_close(out, tl * (mag.global_vector_norm() / tl.global_vector_norm()))
    half = tl.graft(mag, tensorwise=tensorwise, strength=0.5)
    if not tensorwise:
        target = 0.5 * (tl.global_vector_norm() + mag.global_vector_norm())
        torch.testing.assert_close(half.global_vector_norm(), target)
    strengths = NumberList([0.0, 1.0, 0.5, 0.25])
    per = tl.graft(mag, tensorwise=tensorwise, strength=strengths)
    ns = tl.norm(2) if tensorwise else [tl.global_vector_norm()] * len(tl)
    nm = mag.norm(2) if tensorwise else [mag.global_vector_norm()] * len(tl)
    assert_tl_close(per, [t * ((s * b + (1 - s) * a) / a) for t, a, b, s in zip(tl, ns, nm, strengths)])
    c = tl.clone()
    assert c.graft_(mag, tensorwise=tensorwise, ord="l1") is c
    if tensorwise:
        assert_tl_close(c.norm(1), mag.norm(1))
    else:
        torch.testing.assert_close(c.global_vector_norm(1), mag.global_vector_norm(1))
    zero = TensorList([torch.zeros(3, dtype=torch.float64)])
    assert_tl_close(zero.graft(TensorList([torch.ones(3, dtype=torch.float64)])), zero)  # eps avoids 0/0


@pytest.mark.parametrize("dim", [None, 0, "global"])
def test_rescale_normalize_znormalize(dim):
    tl = make(torch.float64, shapes=[(5,), (3, 4), (2, 2, 3)]) * 3 + 1
    if dim == "global":
        lo, hi = tl.global_min(), tl.global_max()
        mins, maxs = [lo] * 3, [hi] * 3
        means, stds = [tl.global_mean()] * 3, [tl.global_std()] * 3
    else:
        mins = [t.amin(dim=dim, keepdim=True) if dim is not None else t.min() for t in tl]
        maxs = [t.amax(dim=dim, keepdim=True) if dim is not None else t.max() for t in tl]
        means = [t.mean(dim=dim, keepdim=True) for t in tl]
        stds = [t.std(dim=dim, keepdim=True) for t in tl]
    pairs = list(zip(tl, mins, maxs))
    assert_tl_close(tl.rescale(-1, 2, dim=dim), [(t - a) / (b - a) * 3 - 1 for t, a, b in pairs])
    assert_tl_close(tl.rescale_to_01(dim=dim), [(t - a) / (b - a) for t, a, b in pairs])
    assert_tl_close(tl.rescale(NumberList([0, 1, 2]), NumberList([1, 3, 5]), dim=dim),
                    [(t - a) / (b - a) * (i + 1) + i for i, (t, a, b) in enumerate(pairs)])  # fmt: skip
    assert_tl_close(tl.rescale(2.0, None, dim=dim), [t - a + 2.0 for t, a, b in pairs])
    assert_tl_close(
        tl.rescale(None, NumberList([1, 2, 3]), dim=dim), [t - b + i + 1 for i, (t, a, b) in enumerate(pairs)]
    )
    assert_tl_close(tl.rescale(0, 1, dim=dim, eps=0.5), [(t - a) / (b - a + 0.5) for t, a, b in pairs])
    c = tl.clone()
    assert c.rescale_(0, 1, dim=dim) is c and c.rescale_to_01_(dim=dim) is c
    assert_tl_close(c, [(t - a) / (b - a) for t, a, b in pairs])

    ms = list(zip(tl, means, stds))
    assert_tl_close(tl.normalize(1.0, 4.0, dim=dim), [(t - m) / s * 2 + 1 for t, m, s in ms])
    assert_tl_close(tl.normalize(None, 4.0, dim=dim), [(t - m) / s * 2 + m for t, m, s in ms])
    assert_tl_close(tl.normalize(NumberList([0, 1, 2]), None, dim=dim), [t - m + i for i, (t, m, s) in enumerate(ms)])
    assert_tl_close(tl.znormalize(dim=dim), [(t - m) / s for t, m, s in ms])
    assert_tl_close(tl.znormalize(dim=dim, eps=0.1), [(t - m) / (s + 0.1) for t, m, s in ms])
    c = tl.clone()
    assert c.normalize_(0, 1, dim=dim) is c and c.znormalize_(dim=dim) is c
    assert_tl_close(c, [(t - m) / s for t, m, s in ms])


# ============================================================================ masking, selection, products
def test_where_and_masks():
    tl, other = make(torch.float64), make(torch.float64, seed=1)
    cond = tl > 0
    n = len(tl)
    assert_tl_close(tl.where(cond, other), [torch.where(c, t, o) for t, c, o in zip(tl, cond, other)])
    assert_tl_close(tl.where(cond, 0.5), [torch.where(c, t, 0.5) for t, c in zip(tl, cond)])
    assert_tl_close(
        tl.where(cond, NumberList(range(n))), [torch.where(c, t, float(i)) for i, (t, c) in enumerate(zip(tl, cond))]
    )
    c = tl.clone()
    assert c.where_(cond, other) is c
    assert_tl_close(c, [torch.where(m, t, o) for t, m, o in zip(tl, cond, other)])
    assert_tl_close(tl.masked_fill(cond, 9.0), [t.masked_fill(m, 9.0) for t, m in zip(tl, cond)])
    assert_tl_close(
        tl.masked_fill(cond, NumberList(range(n))), [t.masked_fill(m, i) for i, (t, m) in enumerate(zip(tl, cond))]
    )
    c = tl.clone()
    assert c.masked_fill_(cond, torch.tensor(1.0)) is c
    assert_tl_close(c, [t.masked_fill(m, 1.0) for t, m in zip(tl, cond)])

    c = tl.clone()
    assert c.select_set_(cond, 7.0) is c
    expected = [t.clone() for t in tl]
    for e, m in zip(expected, cond):
        e[m] = 7.0
    assert_tl_close(c, expected)
    c = tl.clone()
    values = [o[m] for o, m in zip(other, cond)]
    c.select_set_(cond, values)
    c2 = tl.clone()
    assert c2.masked_set_(cond, other) is c2
    expected = [torch.where(m, o, t) for t, m, o in zip(tl, cond, other)]
    assert_tl_close(c, expected)
    assert_tl_close(c2, expected)
    # integer index masks use indexing
    idx = TensorList([torch.tensor([0, 2]), torch.tensor([1])])
    x = TensorList([torch.zeros(3), torch.zeros(2)])
    x.masked_set_(idx, TensorList([torch.ones(3), torch.full((2,), 5.0)]))
    assert_tl_close(x, [torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 5.0])])

    m = make(torch.float64, shapes=[(3, 4), (2, 5)])
    assert_tl_close(m.select(0), [t[0] for t in m])
    assert_tl_close(m.select((slice(None), 1)), [t[:, 1] for t in m])
    assert_tl_close(m.select([1, 0]), [m[0][1], m[1][0]])


def test_dot_and_tensorwise_dot():
    a, b = make(torch.float64), make(torch.float64, seed=1)
    torch.testing.assert_close(a.dot(b), torch.dot(a.to_vec(), b.to_vec()))
    assert a.dot(b).ndim == 0
    assert_tl_close(a.tensorwise_dot(b), [(x * y).sum() for x, y in zip(a, b)])
    mixed = TensorList([t.float() for t in b])  # type promotion falls back to (x * y).sum()
    assert_tl_close(a.tensorwise_dot(mixed), [(x * y).sum() for x, y in zip(a, mixed)])
    ints = TensorList([torch.arange(3), torch.tensor(2)])
    assert ints.dot(ints).item() == 0 + 1 + 4 + 4


# ============================================================================ vectors and flat indexing
@pytest.mark.parametrize("dtype", DTYPES)
def test_vec_round_trip(dtype):
    tl = make(dtype, shapes=SHAPES + [(0,)])
    vec = tl.to_vec()
    assert vec.shape == (tl.global_numel(),) and vec.dtype == dtype
    torch.testing.assert_close(vec, torch.cat([t.reshape(-1) for t in tl]))
    back = tl.from_vec(vec)
    assert_tl_close(back, tl)
    vec.mul_(2)  # from_vec gives views into vec
    assert_tl_close(back, tl * 2)

    target = tl.zeros_like()
    originals = list(target)
    new = torch.arange(vec.numel(), dtype=torch.float64)
    assert target.from_vec_(new) is target
    assert all(a is b for a, b in zip(target, originals))
    torch.testing.assert_close(target.to_vec(), new.to(dtype))
    new.zero_()  # from_vec_ copies
    assert target.to_vec().abs().sum() > 0
    with pytest.raises(ValueError):
        tl.from_vec(torch.zeros(vec.numel() + 1))
    # non-contiguous tensors flatten in logical order
    nc = TensorList([torch.arange(6.0).reshape(2, 3).T])
    torch.testing.assert_close(nc.to_vec(), nc[0].reshape(-1))


def test_flat_indexing():
    tl = make(torch.float64)
    tl.append(torch.arange(6.0, dtype=torch.float64).reshape(2, 3).T)  # non-contiguous
    vec = tl.to_vec()
    n = vec.numel()
    for i in list(range(n)) + [-1, -n]:
        assert tl.flat_get(i).item() == vec[i].item()
    assert [x.item() for x in tl.flatiter()] == vec.tolist()
    for i in (0, 4, n - 3, n - 1):
        assert tl.flat_set_(i, -100.0 - i) is tl
    assert tl.flat_set_lambda_(5, lambda x: x * 10) is tl
    expected = vec.clone()
    for i in (0, 4, n - 3, n - 1):
        expected[i] = -100.0 - i
    expected[5] *= 10
    torch.testing.assert_close(tl.to_vec(), expected)
    with pytest.raises(IndexError):
        tl.flat_get(n)
    with pytest.raises(IndexError):
        tl.flat_set_(-n - 1, 0.0)


# ============================================================================ gradients
def test_grad_helpers():
    params = TensorList([torch.randn(3, requires_grad=True), torch.randn(2, 2, requires_grad=True), torch.randn(2)])
    assert params.requires_grad == [True, True, False]
    assert len(params.with_requires_grad()) == 2 and len(params.with_requires_grad(False)) == 1
    assert len(params.get_grad()) == 0 and params.grad[0] is None
    params.ensure_grad_()
    assert len(params.with_grad()) == 2 and params[2].grad is None
    assert_tl_close(params.get_grad(), [torch.zeros(3), torch.zeros(2, 2)])
    g = TensorList([torch.ones(3), torch.full((2, 2), 2.0), torch.ones(2)])
    assert params.accumulate_grad_(g) is params
    params.accumulate_grad_(g)
    assert_tl_close(params.get_grad(), [torch.full((3,), 2.0), torch.full((2, 2), 4.0), torch.full((2,), 2.0)])
    assert_tl_close(g, [torch.ones(3), torch.full((2, 2), 2.0), torch.ones(2)])  # inputs are not modified
    params.set_grad_(g.clone())
    assert_tl_close(params.grad, g)
    assert params.zero_grad_(set_to_none=False) is params
    assert_tl_close(params.grad, g.zeros_like())
    params.zero_grad_()
    assert all(p.grad is None for p in params)
    assert params.detach().requires_grad == [False] * 3
    assert params.requires_grad_(False) is params and params.requires_grad == [False] * 3


# ============================================================================ conversions and misc
def test_conversions_and_misc():
    tl = make(torch.float64)
    n = len(tl)
    assert tl.shape == [torch.Size(s) for s in SHAPES] and tl.ndim == [len(s) for s in SHAPES]
    assert tl.numel() == [t.numel() for t in tl] and tl.size() == tl.shape and tl.ndimension() == tl.ndim
    assert TensorList(tl[1:]).size(0) == [t.size(0) for t in tl[1:]]
    assert tl.device == [torch.device("cpu")] * n
    assert tl.as_float().dtype == [torch.float32] * n and tl.to(torch.float16).dtype == [torch.float16] * n
    assert tl.as_bool().dtype == [torch.bool] * n and tl.as_int().dtype == [torch.int32] * n
    assert tl.long().dtype == [torch.int64] * n and tl.short().dtype == [torch.int16] * n
    assert tl.cpu().dtype == tl.dtype and tl.contiguous().shape == tl.shape
    assert tl.type_as(torch.zeros(1, dtype=torch.float32)).dtype == [torch.float32] * n
    assert tl.type_as(tl.as_float()).dtype == [torch.float32] * n
    c = tl.clone()
    assert all(a is not b and torch.equal(a, b) for a, b in zip(c, tl))
    target = tl.zeros_like()
    assert target.copy_(tl) is target
    assert_tl_close(target, tl)
    assert target.copy_(torch.tensor(3.0, dtype=torch.float64)) is target and bool((target == 3).global_all())
    s = tl.zeros_like()
    assert s.set_(tl) is s and all(a.data_ptr() == b.data_ptr() for a, b in zip(s, tl))
    assert tl.equal(c) == [True] * n and tl.equal(tl + 1) == [False] * n
    assert_tl_close(tl.ravel(), [t.reshape(-1) for t in tl])
    assert_tl_close(tl.view_flat(), [t.view(-1) for t in tl])
    assert_tl_close(tl.squeeze(), [t.squeeze() for t in tl])
    sq = make(shapes=[(1, 3), (2, 1)])
    assert sq.squeeze_(1).shape == [torch.Size([1, 3]), torch.Size([2])]
    assert_tl_close(tl.view_as(tl.ravel()).view_as(tl), tl)
    assert_tl_close(tl.unbind_channels(), [ch for t in tl for ch in (t.unbind(0) if t.ndim >= 2 else (t,))])
    assert repr(TensorList([torch.tensor(1.0)])) == "TensorList([tensor(1.)])"
    holes = TensorList([None, tl[1], None])
    filled = holes.fill_none(tl[:3])
    assert filled[1] is tl[1] and torch.equal(filled[0], torch.zeros_like(tl[0]))
    assert holes.fill_none_(tl[:3]) is holes and holes[2].shape == tl[2].shape
    a, b = make(seed=1, shapes=[(2,)]), make(seed=2, shapes=[(2,)])
    a0, b0 = a[0].clone(), b[0].clone()
    a.swap_tensors(b)
    assert torch.equal(a[0], b0) and torch.equal(b[0], a0)
    assert_tl_close(tl.map(torch.exp), [t.exp() for t in tl])
    assert tl.clone().map_inplace_(torch.Tensor.zero_).global_sum() == 0
    assert len(tl.filter(lambda t: t.ndim >= 2)) == 3
    assert len(tl.filter_by_list([True, False] * 2 + [True])) == 3
    assert_tl_close(tl.zipmap(torch.add, tl, alpha=2), [t + 2 * t for t in tl])
    assert_tl_close(tl.zipmap_args(torch.clamp, -0.1, NumberList([0.1] * n)), [t.clamp(-0.1, 0.1) for t in tl])
    with pytest.raises(ValueError):
        tl.zipmap(torch.add, tl[:2])
    assert_tl_close(tl._foreach_apply(torch._foreach_mul, 2.0), [t * 2 for t in tl])


def test_subclass_is_preserved():
    class MyList(TensorList):
        pass

    m = MyList(make())
    for out in (m + 1, m.sqrt(), m.clone(), m.map(torch.sin), m.eq(0), m.from_vec(m.to_vec()), 1 - m, m.norm(2)):
        assert type(out) is MyList


def test_as_tensorlist():
    tl = make()
    assert as_tensorlist(tl) is tl
    assert isinstance(as_tensorlist(list(tl)), TensorList)
    t = torch.ones(3)
    assert len(as_tensorlist(t)) == 1 and as_tensorlist(t)[0] is t


# ============================================================================ generic functions
def test_generic_functions():
    tl = make(torch.float64)
    t = tl[2]
    for x in (t, tl):
        is_tl = isinstance(x, TensorList)
        vec = x.to_vec() if is_tl else x
        assert generic_is_tensorlist(x) == is_tl
        torch.testing.assert_close(generic_vector_norm(x), torch.linalg.vector_norm(vec))
        torch.testing.assert_close(generic_vector_norm(x, 1), vec.abs().sum())
        torch.testing.assert_close(generic_sum(x), vec.sum())
        torch.testing.assert_close(generic_max(x), vec.max())
        torch.testing.assert_close(generic_min(x), vec.min())
        assert generic_numel(x) == vec.numel()
        assert generic_finfo(x) == torch.finfo(torch.float64)
        assert generic_finfo_eps(x) == torch.finfo(torch.float64).eps
        assert generic_finfo_tiny(x) == torch.finfo(torch.float64).tiny
        for fn, value in ((generic_zeros_like, 0.0), (generic_ones_like, 1.0)):
            out = fn(x)
            assert isinstance(out, type(x)) and bool((out == value).all() if not is_tl else (out == value).global_all())
        full = generic_full_like(x, 2.0)
        assert isinstance(full, type(x))
        r1 = generic_randn_like(x, generator=torch.Generator().manual_seed(0))
        r2 = generic_randn_like(x, generator=torch.Generator().manual_seed(0))
        assert isinstance(r1, type(x)) and torch.equal(r1.to_vec() if is_tl else r1, r2.to_vec() if is_tl else r2)
        torch.testing.assert_close(
            (generic_add(x, 1.0, alpha=2) if not is_tl else generic_add(x, 1.0, alpha=2).to_vec()), vec + 2
        )
        for fn, ref in ((generic_sub, vec - 3), (generic_mul, vec * 3), (generic_div, vec / 3)):
            out = fn(x, 3.0)
            torch.testing.assert_close(out.to_vec() if is_tl else out, ref)
        clamped = generic_clamp(x, -0.1, 0.1)
        torch.testing.assert_close(clamped.to_vec() if is_tl else clamped, vec.clamp(-0.1, 0.1))
    # plain lists of tensors are treated as TensorLists
    torch.testing.assert_close(generic_vector_norm(list(tl)), tl.global_vector_norm())
    assert isinstance(generic_mul(list(tl), 2), TensorList)
    # numbers and sequences of numbers
    assert generic_eq(1, 1) and generic_eq([1, 1], 1) and generic_eq(1.0, (1, 1)) and not generic_eq([1, 2], 1)
    assert generic_eq([1, 2], NumberList([1, 2])) and not generic_eq([1, 2], [1, 3]) and not generic_eq([1], [1, 1])
    assert generic_eq(torch.tensor([1.0, 1.0]), 1) and not generic_eq(tl, 0) and generic_eq(tl, tl)
    assert generic_ne(2, 1) and not generic_ne([0, 0], 0) and generic_ne(torch.tensor(1.0), 1)
    assert generic_clamp(5, max=3) == 3 and generic_clamp(-1, 0) == 0 and generic_clamp(0.5, 0, 1) == 0.5
    assert list(generic_clamp(NumberList([-1, 0.5, 2]), 0, 1)) == [0, 0.5, 1]
    assert generic_clamp((-1, 2), 0, 1) == (0, 1)
    assert (
        generic_add(1, 2, alpha=3) == 7
        and generic_sub(1, 2) == -1
        and generic_mul(2, 3) == 6
        and generic_div(1, 4) == 0.25
    )
    assert generic_finfo(TensorList()) == torch.finfo(torch.get_default_dtype())
