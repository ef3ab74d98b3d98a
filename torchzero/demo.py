"""The torchzero demo (``python -m torchzero``): module chains next to their ``torch.optim`` counterparts.

Two tasks, each with one declarative list of optimizers to compare:

- ``ROSENBROCK_CHAINS``: the 2-D Rosenbrock function from (-1.1, 2.5), in float64 (first-order chains, and
  quasi-Newton, conjugate-gradient and Newton methods with line searches);
- ``MLP_CHAINS``: a small MLP on scikit-learn's bundled ``digits`` data set (no download).

Each entry is a chain of ``tz.m`` modules and, where one exists, the ``torch.optim`` optimizer it reproduces;
both are run from the same starting point and printed one below the other, so the table shows that they agree.
To add an optimizer to the demo, append an entry to one of the lists.

Run ``python -m torchzero --quick`` for a run of a few seconds.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

import torchzero as tz

ROSENBROCK_X0 = (-1.1, 2.5)
ROSENBROCK_STEPS = 2000
ROSENBROCK_QUICK_STEPS = 200

MLP_EPOCHS = 30
MLP_QUICK_EPOCHS = 3
MLP_BATCH_SIZE = 64
MLP_HIDDEN = (32, 32)
SEED = 0

Closure = Callable[..., torch.Tensor]


# --------------------------------------------------------------------------------------------------
# declarative optimizer specifications
# --------------------------------------------------------------------------------------------------
def _format_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


@dataclass(frozen=True)
class ModuleSpec:
    """A ``tz.m`` module class and the arguments to build it with; ``str`` gives ``tz.m.Name(args)``."""

    cls: Callable[..., tz.core.Module]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> tz.core.Module:
        """A new instance of the module."""
        return self.cls(*self.args, **self.kwargs)

    def __str__(self) -> str:
        return f"tz.m.{self.cls.__name__}({_format_args(self.args, self.kwargs)})"


def mod(cls: Callable[..., tz.core.Module], *args: Any, **kwargs: Any) -> ModuleSpec:
    """``mod(tz.m.Adam, 0.9)`` specifies ``tz.m.Adam(0.9)``."""
    return ModuleSpec(cls, args, kwargs)


@dataclass(frozen=True)
class TorchSpec:
    """A ``torch.optim`` optimizer class and its keyword arguments; ``str`` gives ``torch.optim.Name(kwargs)``."""

    cls: Callable[..., torch.optim.Optimizer]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        """A new optimizer over ``params``."""
        return self.cls(params, **self.kwargs)

    def __str__(self) -> str:
        return f"torch.optim.{self.cls.__name__}({_format_args((), self.kwargs)})"


def torch_opt(cls: Callable[..., torch.optim.Optimizer], **kwargs: Any) -> TorchSpec:
    """``torch_opt(torch.optim.SGD, lr=0.1)`` specifies ``torch.optim.SGD(params, lr=0.1)``."""
    return TorchSpec(cls, kwargs)


@dataclass(frozen=True)
class ChainSpec:
    """A chain of modules and, optionally, the ``torch.optim`` optimizer that computes the same steps."""

    modules: tuple[ModuleSpec, ...]
    reference: TorchSpec | None = None

    def build(self, params: Iterable[torch.Tensor]) -> tz.Modular:
        """A new ``tz.Modular`` over ``params``."""
        return tz.Modular(params, *(m.build() for m in self.modules))

    def __str__(self) -> str:
        return " -> ".join(str(m) for m in self.modules)


def chain(*modules: ModuleSpec, reference: TorchSpec | None = None) -> ChainSpec:
    """``chain(mod(tz.m.Adam), mod(tz.m.LR, 1e-2), reference=torch_opt(torch.optim.Adam, lr=1e-2))``."""
    return ChainSpec(tuple(modules), reference)


ROSENBROCK_CHAINS: list[ChainSpec] = [
    chain(mod(tz.m.LR, 1e-3), reference=torch_opt(torch.optim.SGD, lr=1e-3)),
    chain(mod(tz.m.HeavyBall, 0.9), mod(tz.m.LR, 1e-3), reference=torch_opt(torch.optim.SGD, lr=1e-3, momentum=0.9)),
    chain(mod(tz.m.NAG, 0.9), mod(tz.m.LR, 3e-4),
          reference=torch_opt(torch.optim.SGD, lr=3e-4, momentum=0.9, nesterov=True)),
    chain(mod(tz.m.Adam), mod(tz.m.LR, 0.1), reference=torch_opt(torch.optim.Adam, lr=0.1)),
    chain(mod(tz.m.ClipNorm, 1.0), mod(tz.m.Adam), mod(tz.m.LR, 1e-2)),
    chain(mod(tz.m.Normalize), mod(tz.m.LR, 1e-2)),
    chain(mod(tz.m.LBFGS), mod(tz.m.StrongWolfe)),
    chain(mod(tz.m.BFGS), mod(tz.m.Backtracking)),
    chain(mod(tz.m.PolakRibiere), mod(tz.m.StrongWolfe, c2=0.1, a_init="first-order")),
    chain(mod(tz.m.Newton), mod(tz.m.Backtracking)),
]
"""Optimizers compared on Rosenbrock (learning rates picked so that each makes visible progress)."""

MLP_CHAINS: list[ChainSpec] = [
    chain(mod(tz.m.Adam), mod(tz.m.LR, 1e-2), reference=torch_opt(torch.optim.Adam, lr=1e-2)),
    chain(mod(tz.m.Adam), mod(tz.m.WeightDecay, 1e-2), mod(tz.m.LR, 1e-2),
          reference=torch_opt(torch.optim.AdamW, lr=1e-2, weight_decay=1e-2)),
    chain(mod(tz.m.HeavyBall, 0.9), mod(tz.m.LR, 0.1), reference=torch_opt(torch.optim.SGD, lr=0.1, momentum=0.9)),
    # per-tensor gradient norms here stay below 1 (ClipNorm(1.0) would never clip), so clip at 0.1
    chain(mod(tz.m.ClipNorm, 0.1), mod(tz.m.Adam), mod(tz.m.LR, 1e-2)),
]
"""Optimizers compared on the MLP."""


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """Outcome of one optimizer run.

    Attributes:
        name: the optimizer as written in the table.
        is_reference: True for a ``torch.optim`` optimizer run next to the chain before it.
        metrics: task-specific final values (column name → value).
        initial_loss: the objective at the starting point.
        final_loss: the objective at the end.
        evaluations: number of objective evaluations (``opt.num_evaluations`` for ``tz.Modular``).
        seconds: wall time of the optimization loop.
        params: the final parameters (detached copies), to compare a chain with its reference.
    """

    name: str
    is_reference: bool
    metrics: dict[str, float]
    initial_loss: float
    final_loss: float
    evaluations: int
    seconds: float
    params: list[torch.Tensor]


class CountingClosure:
    """Wraps a closure and counts its calls (for ``torch.optim`` optimizers, which don't count them)."""

    def __init__(self, closure: Closure):
        self.closure = closure
        self.calls = 0

    def __call__(self, backward: bool = True) -> torch.Tensor:
        self.calls += 1
        return self.closure(backward)


def make_closure(opt: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor]) -> Closure:
    """The ``closure(backward=True)`` of ``loss_fn`` for ``opt``: zeroes the gradients and backpropagates."""

    def closure(backward: bool = True) -> torch.Tensor:
        loss = loss_fn()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    return closure


def _evaluations(opt: torch.optim.Optimizer, counter: CountingClosure | None) -> int:
    if isinstance(opt, tz.Modular):
        return opt.num_evaluations
    return 0 if counter is None else counter.calls


def _max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _run_entries(entries: Sequence[ChainSpec],
                 run_one: Callable[[str, bool, Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]], RunResult],
                 ) -> list[RunResult]:
    """Runs every chain and, right after it, its ``torch.optim`` reference."""
    results = []
    for spec in entries:
        results.append(run_one(str(spec), False, spec.build))
        if spec.reference is not None:
            results.append(run_one(str(spec.reference), True, spec.reference.build))
    return results


# --------------------------------------------------------------------------------------------------
# task 1: Rosenbrock
# --------------------------------------------------------------------------------------------------
def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """``(1 − x₀)² + 100 (x₁ − x₀²)²``, minimum 0 at (1, 1)."""
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def run_rosenbrock(steps: int = ROSENBROCK_STEPS, entries: Sequence[ChainSpec] | None = None) -> list[RunResult]:
    """Minimises Rosenbrock from ``ROSENBROCK_X0`` in float64 for ``steps`` steps with every entry of
    ``entries`` (default ``ROSENBROCK_CHAINS``) and its reference."""
    x_star = torch.ones(2, dtype=torch.float64)

    def run_one(name: str, is_reference: bool,
                make_opt: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]) -> RunResult:
        x = torch.tensor(ROSENBROCK_X0, dtype=torch.float64, requires_grad=True)
        opt = make_opt([x])
        counter = CountingClosure(make_closure(opt, lambda: rosenbrock(x)))
        initial = float(rosenbrock(x.detach()))
        start = time.perf_counter()
        for _ in range(steps):
            opt.step(counter)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            f = float(rosenbrock(x))
            dist = float(torch.linalg.vector_norm(x - x_star))
        return RunResult(name, is_reference, {"f(x)": f, "|x - (1,1)|": dist}, initial, f,
                         _evaluations(opt, counter), seconds, [x.detach().clone()])

    return _run_entries(ROSENBROCK_CHAINS if entries is None else entries, run_one)


# --------------------------------------------------------------------------------------------------
# task 2: MLP on digits
# --------------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Standardised train/test tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


def load_digits_dataset(seed: int = SEED) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1797 samples, 10 classes): a stratified 75/25 split, standardised with
    the training statistics. Raises ``ImportError`` without scikit-learn."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    return Dataset(torch.tensor(scaler.transform(x_tr), dtype=torch.float32), torch.tensor(y_tr),
                   torch.tensor(scaler.transform(x_te), dtype=torch.float32), torch.tensor(y_te),
                   int(y.max()) + 1)


def make_mlp(in_features: int, num_classes: int, hidden: Sequence[int] = MLP_HIDDEN) -> torch.nn.Sequential:
    """An MLP with tanh activations."""
    layers: list[torch.nn.Module] = []
    for width in hidden:
        layers += [torch.nn.Linear(in_features, width), torch.nn.Tanh()]
        in_features = width
    layers.append(torch.nn.Linear(in_features, num_classes))
    return torch.nn.Sequential(*layers)


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _full_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def run_mlp(epochs: int = MLP_EPOCHS, entries: Sequence[ChainSpec] | None = None,
            batch_size: int = MLP_BATCH_SIZE, seed: int = SEED) -> list[RunResult]:
    """Trains the same initial MLP on digits with every entry of ``entries`` (default ``MLP_CHAINS``) and its
    reference: minibatches of ``batch_size`` in the same shuffled order for every run, ``epochs`` epochs.
    Raises ``ImportError`` without scikit-learn."""
    data = load_digits_dataset(seed)
    torch.manual_seed(seed)
    init_state = {k: v.clone() for k, v in make_mlp(data.x_train.shape[1], data.num_classes).state_dict().items()}

    def run_one(name: str, is_reference: bool,
                make_opt: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]) -> RunResult:
        model = make_mlp(data.x_train.shape[1], data.num_classes)
        model.load_state_dict(init_state)
        opt = make_opt(model.parameters())
        initial = _full_loss(model, data.x_train, data.y_train)
        generator = torch.Generator().manual_seed(seed)
        calls = 0
        start = time.perf_counter()
        for _ in range(epochs):
            for idx in torch.randperm(len(data.y_train), generator=generator).split(batch_size):
                xb, yb = data.x_train[idx], data.y_train[idx]
                counter = CountingClosure(make_closure(opt, lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb)))
                opt.step(counter)
                calls += counter.calls
        seconds = time.perf_counter() - start
        train_loss = _full_loss(model, data.x_train, data.y_train)
        metrics = {"train loss": train_loss, "test acc": _accuracy(model, data.x_test, data.y_test)}
        evaluations = opt.num_evaluations if isinstance(opt, tz.Modular) else calls
        return RunResult(name, is_reference, metrics, initial, train_loss, evaluations, seconds,
                         [p.detach().clone() for p in model.parameters()])

    return _run_entries(MLP_CHAINS if entries is None else entries, run_one)


# --------------------------------------------------------------------------------------------------
# printing
# --------------------------------------------------------------------------------------------------
def _format_value(column: str, value: float) -> str:
    if column == "test acc":
        return f"{100 * value:.2f}%"
    return f"{value:.4e}"


def format_table(title: str, results: Sequence[RunResult]) -> str:
    """Aligned plain-text table of ``results``: one row per run, a reference right below its chain (prefixed
    ``vs``, with the largest difference of its final parameters from the chain's)."""
    metric_names = list(results[0].metrics) if results else []
    headers = ["optimizer", *metric_names, "max|dparams|", "evals", "time"]
    rows: list[list[str]] = []
    chain_params: list[torch.Tensor] | None = None
    for r in results:
        if r.is_reference:
            name = f"  vs {r.name}"
            diff = f"{_max_abs_diff(r.params, chain_params):.1e}" if chain_params is not None else "-"
        else:
            name, diff, chain_params = r.name, "", r.params
        rows.append([name, *(_format_value(k, r.metrics[k]) for k in metric_names), diff, str(r.evaluations),
                     f"{r.seconds:.2f}s"])

    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    note = ("max|dparams|: largest difference between the final parameters of a torch.optim optimizer and those of "
            "the chain above it.")
    return "\n".join([title, rule, line(headers), rule, *(line(r) for r in rows), rule, note])


def print_table(title: str, results: Sequence[RunResult]) -> None:
    """Prints ``format_table(title, results)`` followed by a blank line."""
    print(format_table(title, results))
    print()


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of ``python -m torchzero``."""
    parser = argparse.ArgumentParser(prog="python -m torchzero",
                                     description="torchzero demo: module chains next to torch.optim.")
    parser.add_argument("--quick", action="store_true",
                        help=f"short run ({ROSENBROCK_QUICK_STEPS} Rosenbrock steps, {MLP_QUICK_EPOCHS} MLP epochs)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"Rosenbrock steps (default {ROSENBROCK_STEPS}, quick {ROSENBROCK_QUICK_STEPS})")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"MLP epochs (default {MLP_EPOCHS}, quick {MLP_QUICK_EPOCHS})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads during the demo (default 1: the problems are tiny; 0 leaves the "
                             "setting alone)")
    parser.add_argument("--task", choices=("all", "rosenbrock", "mlp"), default="all", help="which task to run")
    return parser.parse_args(argv)


def has_sklearn() -> bool:
    """Whether scikit-learn (needed by the MLP task) is installed."""
    return importlib.util.find_spec("sklearn") is not None


def warm_up(mlp: bool) -> None:
    """Runs every optimizer for a few steps, untimed, so that one-off costs (lazy initialisation of kernels and
    autograd) don't count in the time of whichever run comes first."""
    run_rosenbrock(steps=3)
    if mlp:
        run_mlp(epochs=1, batch_size=512)


def main(argv: list[str] | None = None) -> None:
    """Runs the demo and prints one comparison table per task."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        _run_demo(args)
    finally:
        torch.set_num_threads(threads)


def _run_demo(args: argparse.Namespace) -> None:
    """The body of ``main``."""
    torch.manual_seed(SEED)
    steps = args.steps if args.steps is not None else (ROSENBROCK_QUICK_STEPS if args.quick else ROSENBROCK_STEPS)
    epochs = args.epochs if args.epochs is not None else (MLP_QUICK_EPOCHS if args.quick else MLP_EPOCHS)
    sklearn_available = has_sklearn()
    print(f"torchzero {tz.__version__} demo (torch {torch.__version__})\n")
    warm_up(mlp=sklearn_available and args.task in ("all", "mlp"))

    if args.task in ("all", "rosenbrock"):
        x0 = ", ".join(str(v) for v in ROSENBROCK_X0)
        f0 = float(rosenbrock(torch.tensor(ROSENBROCK_X0, dtype=torch.float64)))
        print_table(f"Rosenbrock from ({x0}), float64, {steps} steps (f = {f0:.4g} at the start, 0 at (1, 1))",
                    run_rosenbrock(steps))

    if args.task in ("all", "mlp"):
        if not sklearn_available:
            print("MLP task skipped: it needs scikit-learn (pip install scikit-learn).")
            return
        results = run_mlp(epochs)
        hidden = "-".join(str(h) for h in MLP_HIDDEN)
        initial = results[0].initial_loss if results else float("nan")
        print_table(f"MLP (hidden {hidden}, tanh) on sklearn digits, {epochs} epochs, batch {MLP_BATCH_SIZE} "
                    f"(initial train loss {initial:.4f})", results)
