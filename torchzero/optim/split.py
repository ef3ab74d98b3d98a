"""``Split``: several optimizers stepped together as one ``torch.optim.Optimizer``."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

__all__ = ["Split"]


def _collect(optimizers: tuple[Any, ...]) -> list[torch.optim.Optimizer]:
    out: list[torch.optim.Optimizer] = []
    for item in optimizers:
        if isinstance(item, torch.optim.Optimizer):
            out.append(item)
        elif isinstance(item, Iterable) and not isinstance(item, (str, bytes, Mapping, torch.Tensor)):
            out.extend(_collect(tuple(item)))
        else:
            raise TypeError(f"Split expects torch.optim.Optimizer instances or iterables of them, got "
                            f"{type(item).__name__}")
    return out


class Split(torch.optim.Optimizer):
    r"""Steps several optimizers, each over its own parameters, as one ``torch.optim.Optimizer``.

    ``step(closure)`` evaluates ``closure()`` once (with backward, so every optimizer sees fresh ``.grad``), then
    calls ``opt.step()`` of each optimizer in order, without a closure, and returns the loss:

    .. math::
        \ell = f(x),\quad g = \nabla f(x);\qquad x_{S_k} \leftarrow \mathrm{opt}_k(x_{S_k}, g_{S_k})\ \ \forall k

    So optimizers that need a closure (``torch.optim.LBFGS``, line searches) can't be parts of a ``Split``.

    ``param_groups`` is the list of the optimizers' own parameter-group dicts (the same objects), so a learning-rate
    scheduler on the ``Split`` schedules every optimizer, and ``zero_grad`` clears all parameters. A parameter given
    to more than one optimizer triggers a warning (each of them would update it). ``state_dict`` holds the
    optimizers' state dicts, in order.

    Args:
        *optimizers: optimizers, or iterables of optimizers.

    Example:
        ```python
        opt = tz.optim.Split(
            torch.optim.SGD(model.body.parameters(), lr=1e-2),
            tz.Modular(model.head.parameters(), tz.m.Adam(), tz.m.LR(1e-3)),
        )
        loss = opt.step(closure)
        ```
    """

    def __init__(self, *optimizers: torch.optim.Optimizer | Iterable[torch.optim.Optimizer]):
        opts = _collect(optimizers)
        if len(opts) == 0:
            raise ValueError("Split needs at least one optimizer")
        for opt in opts:
            if isinstance(opt, torch.optim.LBFGS):
                raise ValueError("Split calls the optimizers' step() without a closure, but torch.optim.LBFGS "
                                 "requires one; step it separately")
        self.optimizers: list[torch.optim.Optimizer] = opts

        seen: set[int] = set()
        unique: list[torch.Tensor] = []
        n_duplicates = 0
        for opt in opts:
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        n_duplicates += 1
                        continue
                    seen.add(id(p))
                    unique.append(p)
        if n_duplicates > 0:
            warnings.warn(f"Split: {n_duplicates} parameter(s) belong to more than one optimizer, and each of them "
                          "will update those parameters", stacklevel=2)
        if len(unique) == 0:
            raise ValueError("Split: the optimizers have no parameters")

        super().__init__(unique, {})
        # share the optimizers' own groups, so schedulers and group edits reach them
        self.param_groups = [group for opt in opts for group in opt.param_groups]
        self._initialized = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Not supported after construction: add the group to one of the optimizers, then build a new ``Split``."""
        if getattr(self, "_initialized", False):
            raise TypeError("Split.add_param_group: add the parameter group to one of its optimizers and create a "
                            "new Split")
        super().add_param_group(param_group)

    def step(self, closure: Callable[..., Any] | None = None) -> Any:  # type: ignore[override]
        """Evaluates ``closure()`` once (if given), then steps every optimizer without a closure.

        Returns:
            the closure's loss, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``zero_grad`` of every optimizer."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """``{'optimizers': [state dict of each optimizer]}``."""
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Loads a state dict made by :meth:`state_dict` of a ``Split`` with the same optimizers."""
        states = state_dict.get("optimizers") if isinstance(state_dict, Mapping) else None
        if not isinstance(states, (list, tuple)):
            raise ValueError("Split.load_state_dict expects a dict with an 'optimizers' list, made by "
                             "Split.state_dict()")
        if len(states) != len(self.optimizers):
            raise ValueError(f"Split.load_state_dict: the state dict holds {len(states)} optimizers, this Split has "
                             f"{len(self.optimizers)}")
        for opt, sd in zip(self.optimizers, states):
            opt.load_state_dict(sd)

    def __repr__(self) -> str:
        inner = ",\n".join("    " + repr(opt).replace("\n", "\n    ") for opt in self.optimizers)
        return f"Split(\n{inner}\n)"
