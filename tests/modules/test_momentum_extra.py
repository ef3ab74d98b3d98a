"""Averaging, MedianAveraging, WeightedAveraging, Cautious, IntermoduleCautious, UpdateGradientSignConsistency,
ScaleByGradCosineSimilarity and ScaleModulesByCosineSimilarity: the shared sweep, each catalog check, and slow
loop references."""
from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import pytest
import torch
from sweep import Objective, assert_all_close, assert_all_equal, check_module, make_params, snapshot

import torchzero as tz
from torchzero.core import Module, Var
from torchzero.modules.adaptive.adam import Adam
from torchzero.modules.momentum.averaging import Averaging, MedianAveraging, WeightedAveraging
from torchzero.modules.momentum.cautious import (
    Cautious,
    IntermoduleCautious,
    ScaleByGradCosineSimilarity,
    ScaleModulesByCosineSimilarity,
    UpdateGradientSignConsistency,
)
from torchzero.modules.momentum.momentum import EMA, HeavyBall
from torchzero.modules.ops.unary import Negate
from torchzero.modules.ops.utility import Grad, Identity
from torchzero.modules.step_size.lr import LR

SWEEP: dict[str, Callable[[], list[Module]]] = {
    "Averaging": lambda: [Averaging(3), LR(0.01)],
    "Averaging_grad_target": lambda: [Averaging(2, target="grad"), HeavyBall(0.5), LR(0.01)],
    "MedianAveraging_odd": lambda: [MedianAveraging(3), LR(0.01)],
    "MedianAveraging_even": lambda: [MedianAveraging(4), LR(0.01)],
    "WeightedAveraging": lambda: [WeightedAveraging([0.5, 0.0, 2.0]), LR(0.01)],
    "Cautious": lambda: [HeavyBall(0.9), Cautious(), LR(0.01)],
    "Cautious_normalize": lambda: [HeavyBall(0.9), Cautious(normalize=True), LR(0.01)],
    "Cautious_grad": lambda: [Adam(), Cautious(mode="grad"), LR(0.01)],
    "Cautious_backtrack": lambda: [HeavyBall(0.9), Cautious(mode="backtrack"), LR(0.01)],
    "IntermoduleCautious": lambda: [IntermoduleCautious(Adam(), HeavyBall(0.9)), LR(0.01)],
    "IntermoduleCautious_chains": lambda: [IntermoduleCautious([EMA(0.5), Adam()], [HeavyBall(0.9), EMA(0.3)],
                                                               normalize=True), LR(0.01)],
    "IntermoduleCautious_grad": lambda: [IntermoduleCautious(Adam(), Grad(), mode="grad"), LR(0.01)],
    "UpdateGradientSignConsistency": lambda: [HeavyBall(0.9), UpdateGradientSignConsistency(normalize=True),
                                              LR(0.01)],
    "ScaleByGradCosineSimilarity": lambda: [HeavyBall(0.9), ScaleByGradCosineSimilarity(), LR(0.01)],
    "ScaleModulesByCosineSimilarity": lambda: [ScaleModulesByCosineSimilarity(Adam(), HeavyBall(0.9)), LR(0.01)],
}


@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep(name: str) -> None:
    # 7 steps: the histories fill up, drop entries and the exact re-summation of Averaging runs
    check_module(SWEEP[name], n_steps=7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SWEEP))
def test_sweep_cuda(name: str) -> None:
    check_module(SWEEP[name], n_steps=7, device="cuda")


# ----------------------------------------------------------------------------------------------- helpers
def _feed(module: Module, updates: Sequence[Sequence[torch.Tensor]], grads: Sequence[Sequence[torch.Tensor]] | None
          = None, params: list[torch.Tensor] | None = None) -> list[list[torch.Tensor]]:
    """Steps ``module`` once per entry of ``updates`` (lists of tensors, same parameters every time) and returns
    copies of its outputs."""
    if params is None:
        params = [torch.zeros_like(u) for u in updates[0]]
    outs = []
    for k, us in enumerate(updates):
        var = Var(params=params, closure=None, model=None, current_step=k)
        var.grad = [g.clone() for g in (grads[k] if grads is not None else us)]
        var.update = [u.clone() for u in us]
        outs.append([o.clone() for o in module.step(var).update])
    return outs


def _scalars(module: Module, values: Sequence[float]) -> list[float]:
    return [float(o[0]) for o in _feed(module, [[torch.tensor(v, dtype=torch.float64)] for v in values])]


def _random_updates(n: int, shapes=((3, 2), (4,), ()), seed: int = 0, dtype=torch.float64) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(n)]


# ----------------------------------------------------------------------------------------------- averaging
def test_averaging_is_mean_of_window():
    seq = _random_updates(13)
    for k in (1, 3, 4):
        outs = _feed(Averaging(k), seq)
        for t, out in enumerate(outs, 1):
            window = seq[max(0, t - k):t]
            expected = [torch.stack([w[i] for w in window]).mean(0) for i in range(len(out))]
            assert_all_close(out, expected, rtol=1e-12, atol=1e-14, msg=f"k={k} t={t}")


def test_averaging_running_sum_does_not_drift():
    """Early huge updates followed by tiny ones: a plain running sum keeps their rounding error forever (in float32
    ~1e4·6e-8 ≈ 6e-4, larger than the 1e-4 signal); the periodic exact re-summation removes it."""
    g = torch.Generator().manual_seed(0)
    seq = [[torch.randn(50, generator=g) * (1e4 if t < 3 else 1e-4)] for t in range(40)]
    outs = _feed(Averaging(3), seq)
    for t in range(10, 40):
        expected = torch.stack([s[0].double() for s in seq[t - 2:t + 1]]).mean(0)
        torch.testing.assert_close(outs[t][0].double(), expected, rtol=1e-4, atol=1e-9)


def test_averaging_state_and_output_do_not_alias():
    module = Averaging(2)
    params = [torch.zeros(3)]
    u = torch.ones(3)
    (out,) = _feed(module, [[u]], params=params)[0]
    out.add_(100)
    (out2,) = _feed(module, [[u]], params=params)[0]
    torch.testing.assert_close(out2, torch.ones(3))
    state = module.state[params[0]]
    assert len(state["history"]) == 2 and torch.equal(state["average"], 2 * torch.ones(3))


def test_averaging_grad_target_transforms_gradient():
    p = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = tz.Modular([p], Averaging(2, target="grad"), LR(1.0))
    grads = [torch.tensor([2.0, 0.0]), torch.tensor([4.0, 2.0])]
    for g in grads:
        p.grad = g.clone()
        opt.step()
        assert torch.equal(p.grad, g)  # the user's gradient is not modified
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, 2.0]) - grads[0] - (grads[0] + grads[1]) / 2)


def test_median_averaging_check():
    assert _scalars(MedianAveraging(3), [1, 5, 2, 8]) == [1, 3, 2, 5]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8, 9, 10])  # up to 8: sorting network; beyond: torch.sort
def test_median_averaging_matches_loop_reference(k: int):
    seq = _random_updates(12, shapes=((2, 3), (4,)), seed=k)
    outs = _feed(MedianAveraging(k), seq)
    for t, out in enumerate(outs, 1):
        window = seq[max(0, t - k):t]
        for i, o in enumerate(out):
            expected = torch.empty_like(o).reshape(-1)
            for j in range(expected.numel()):
                expected[j] = statistics.median(float(w[i].reshape(-1)[j]) for w in window)
            torch.testing.assert_close(o, expected.view_as(o), rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(o, torch.stack([w[i] for w in window]).quantile(0.5, dim=0), rtol=1e-12,
                                       atol=1e-14)


@pytest.mark.parametrize("k", [3, 4, 9, 10])
def test_median_averaging_propagates_nan_while_in_window(k: int):
    nan = float("nan")
    values = [1.0, 4.0, nan] + [2.0] * (k + 1)
    out = _scalars(MedianAveraging(k), values)
    assert not any(v != v for v in out[:2])
    assert all(v != v for v in out[2:2 + k]) and out[2 + k] == 2.0
    # inf is an ordinary value: the median of (inf, 1, 2) is 2
    assert _scalars(MedianAveraging(3), [float("inf"), 1.0, 2.0])[-1] == 2.0


def test_weighted_averaging_checks():
    assert _scalars(WeightedAveraging([0, 0, 3]), [1, 5, 2, 8]) == [3, 7.5, 2, 8]
    seq = _random_updates(8)
    for a, b in zip(_feed(WeightedAveraging([1, 1, 1]), seq), _feed(Averaging(3), seq)):
        assert_all_close(a, b, rtol=1e-12, atol=1e-14)


def test_weighted_averaging_matches_loop_reference():
    weights = [0.3, -1.0, 0.0, 2.5]
    seq = _random_updates(9)
    outs = _feed(WeightedAveraging(torch.tensor(weights, dtype=torch.float64)), seq)
    for t, out in enumerate(outs, 1):
        n = min(t, len(weights))
        window, ws = seq[t - n:t], weights[len(weights) - n:]
        for i, o in enumerate(out):
            expected = sum(w * u[i] for w, u in zip(ws, window)) / n
            torch.testing.assert_close(o, expected, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------- cautious
U4, G4 = torch.tensor([1.0, -1.0, 2.0, -2.0]), torch.tensor([1.0, 1.0, -1.0, -1.0])


@pytest.mark.parametrize("kwargs, expected", [
    ({}, [1, 0, 0, -2]),
    ({"normalize": True}, [2, 0, 0, -4]),
    ({"mode": "grad"}, [1, 1, -1, -2]),
    ({"mode": "backtrack"}, [1, 1, -2, -2]),
])
def test_cautious_check(kwargs, expected):
    (out,) = _feed(Cautious(**kwargs), [[U4]], grads=[[G4]])[0]
    assert torch.equal(out, torch.tensor(expected, dtype=out.dtype))


def test_cautious_normalize_uses_global_mean():
    # 3 of 6 elements over two tensors agree -> divide by 0.5
    us = [torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0, 1.0])]
    gs = [torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0, -1.0, -1.0])]
    out = _feed(Cautious(normalize=True), [us], grads=[gs])[0]
    assert torch.equal(out[0], torch.tensor([2.0, 0.0])) and torch.equal(out[1], torch.tensor([2.0, 2.0, 0.0, 0.0]))
    # nothing agrees: the fraction is floored at eps, the output is zero and finite
    out = _feed(Cautious(normalize=True, eps=1e-3), [[-us[0]]], grads=[[gs[0].abs()]])[0]
    assert torch.equal(out[0], torch.zeros(2))


def test_cautious_sign_mask_does_not_underflow_in_half_precision():
    u = torch.tensor([1e-4, -1e-4], dtype=torch.float16)  # u*g underflows to 0 in float16
    (out,) = _feed(Cautious(), [[u]], grads=[[u.clone()]])[0]
    assert torch.equal(out, u)
    (mask,) = _feed(UpdateGradientSignConsistency(), [[u]], grads=[[u.clone()]])[0]
    assert torch.equal(mask, torch.ones(2, dtype=torch.float16))


def test_update_gradient_sign_consistency_check():
    u, g = torch.tensor([1.0, -1.0, 2.0]), torch.tensor([1.0, 1.0, 2.0])
    (out,) = _feed(UpdateGradientSignConsistency(), [[u]], grads=[[g]])[0]
    assert torch.equal(out, torch.tensor([1.0, 0.0, 1.0]))
    (out,) = _feed(UpdateGradientSignConsistency(normalize=True), [[u]], grads=[[g]])[0]
    torch.testing.assert_close(out, torch.tensor([1.5, 0.0, 1.5]))


def test_scale_by_grad_cosine_similarity_check():
    g = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    out = _feed(ScaleByGradCosineSimilarity(), [[-2 * t for t in g]], grads=[g])[0]
    assert_all_close(out, [2 * t for t in g], rtol=1e-13)
    out = _feed(ScaleByGradCosineSimilarity(), [g], grads=[g])[0]
    assert_all_close(out, g, rtol=1e-13)
    # orthogonal update -> zero; zero update -> zero (not NaN)
    out = _feed(ScaleByGradCosineSimilarity(), [[torch.tensor([1.0, 0.0])]], grads=[[torch.tensor([0.0, 3.0])]])[0]
    assert torch.equal(out[0], torch.zeros(2))
    out = _feed(ScaleByGradCosineSimilarity(), [[torch.zeros(2)]], grads=[[torch.tensor([0.0, 3.0])]])[0]
    assert torch.equal(out[0], torch.zeros(2))


def test_scale_by_grad_cosine_similarity_matches_formula():
    u = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    g = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    uv, gv = torch.cat([t.ravel() for t in u]), torch.cat([t.ravel() for t in g])
    cos = float(uv @ gv) / (float(uv.norm()) * float(gv.norm()))
    out = _feed(ScaleByGradCosineSimilarity(), [u], grads=[g])[0]
    assert_all_close(out, [cos * t for t in u], rtol=1e-12)


# ----------------------------------------------------------------------------------------------- module operands
def _trajectory(modules: Callable[[], list[Module]], n_steps: int = 30, use_closure: bool = True
                ) -> tuple[list[list[torch.Tensor]], int]:
    params = make_params(torch.float64)
    f = Objective(params)
    opt = tz.Modular(params, *modules())
    out = []
    for _ in range(n_steps):
        if use_closure:
            def closure(backward=True):
                loss = f(params)
                if backward:
                    opt.zero_grad()
                    loss.backward()
                return loss
            opt.step(closure)
        else:
            opt.zero_grad()
            f(params).backward()
            opt.step()
        out.append(snapshot(params))
    return out, opt.num_evaluations


@pytest.mark.parametrize("kwargs", [{}, {"normalize": True}, {"mode": "grad"}, {"mode": "backtrack"}])
@pytest.mark.parametrize("use_closure", [True, False])
def test_intermodule_cautious_with_grad_equals_cautious(kwargs, use_closure):
    a, evals_a = _trajectory(lambda: [IntermoduleCautious(Adam(), Grad(), **kwargs), LR(0.05)], use_closure=use_closure)
    b, evals_b = _trajectory(lambda: [Adam(), Cautious(**kwargs), LR(0.05)], use_closure=use_closure)
    for k, (x, y) in enumerate(zip(a, b)):
        assert_all_equal(x, y, f"step {k}")
    assert evals_a == evals_b == 30  # the gradient computed for `main` is reused by `compare`


def test_scale_modules_by_cosine_similarity_of_identical_modules_is_identity():
    a, _ = _trajectory(lambda: [ScaleModulesByCosineSimilarity(Adam(), Adam()), LR(0.05)])
    b, _ = _trajectory(lambda: [Adam(), LR(0.05)])
    for k, (x, y) in enumerate(zip(a, b)):
        assert_all_close(x, y, rtol=1e-12, atol=1e-14, msg=f"step {k}")


def test_scale_modules_by_cosine_similarity_formula():
    u = [torch.tensor([1.0, 2.0]), torch.tensor([-1.0])]
    # main = u, compare = -u scaled: cos = -1 -> output -u
    out = _feed(ScaleModulesByCosineSimilarity(Identity(), [Negate(), LR(3.0)]), [u])[0]
    assert_all_close(out, [-t for t in u], rtol=1e-6)


def test_operands_get_independent_copies_of_the_update():
    """main negates the update in place; compare must still see the original update, so nothing agrees."""
    u = [torch.tensor([1.0, -2.0, 3.0])]
    out = _feed(IntermoduleCautious(Negate(), Identity()), [u])[0]
    assert torch.equal(out[0], torch.zeros(3))
    out = _feed(IntermoduleCautious(Negate(), Identity(), mode="grad"), [u])[0]
    assert torch.equal(out[0], u[0])


def test_operand_children_state_is_saved_and_reset():
    module = IntermoduleCautious(Adam(), HeavyBall(0.9))
    params = [torch.zeros(3)]
    _feed(module, [[torch.ones(3)], [torch.ones(3)]], params=params)
    sd = module.state_dict()
    assert "exp_avg" in next(iter(sd["children"]["main"]["state"].values()))
    assert "exp_avg" in next(iter(sd["children"]["compare"]["state"].values()))
    module.reset()
    assert not module.children["main"].state and not module.children["compare"].state


# ----------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("make", [
    lambda: Averaging(0), lambda: Averaging(2.5), lambda: Averaging(True), lambda: Averaging(3, target="x"),
    lambda: MedianAveraging(-1), lambda: WeightedAveraging([]), lambda: WeightedAveraging(["a"]),
    lambda: WeightedAveraging([1.0, float("nan")]), lambda: WeightedAveraging(torch.ones(2, 2)),
    lambda: WeightedAveraging(3), lambda: Cautious(mode="nope"), lambda: Cautious(eps=-1),
    lambda: Cautious(normalize="yes"), lambda: UpdateGradientSignConsistency(eps=-1),
    lambda: ScaleByGradCosineSimilarity(eps=-1), lambda: IntermoduleCautious(Adam(), 1.0),
    lambda: IntermoduleCautious("adam", Grad()), lambda: IntermoduleCautious(Adam(), Grad(), mode="x"),
    lambda: ScaleModulesByCosineSimilarity(Adam(), None),
])
def test_invalid_arguments_fail_at_construction(make):
    with pytest.raises((ValueError, TypeError)):
        make()


def test_shared_operand_instance_is_rejected():
    adam = Adam()
    with pytest.raises(ValueError, match="IntermoduleCautious"):
        IntermoduleCautious(adam, adam)
    with pytest.raises(ValueError, match="ScaleModulesByCosineSimilarity"):
        ScaleModulesByCosineSimilarity(adam, adam)


def test_errors_name_the_class():
    with pytest.raises(ValueError, match="Averaging"):
        Averaging(0)
    with pytest.raises(ValueError, match="Cautious"):
        Cautious(mode="nope")
    with pytest.raises(TypeError, match="WeightedAveraging"):
        WeightedAveraging(["a"])
