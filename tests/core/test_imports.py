"""The documented import paths of the public API."""
from __future__ import annotations

import types


def test_documented_import_paths():
    import torchzero as tz
    from torchzero.core import Chain, Chainable, Modular, Module, TensorwiseTransform, Transform, Var, maybe_chain
    from torchzero.core.module import Chain as Chain2
    from torchzero.core.module import Chainable as Chainable2
    from torchzero.core.module import Modular as Modular2
    from torchzero.core.module import Module as Module2
    from torchzero.core.module import Var as Var2
    from torchzero.core.module import maybe_chain as maybe_chain2
    from torchzero.core.reformulation import Reformulation
    from torchzero.core.transform import Target, apply_transform
    from torchzero.core.transform import TensorwiseTransform as TT2
    from torchzero.core.transform import Transform as T2

    assert tz.Modular is Modular is Modular2
    assert Var is Var2 and Module is Module2 and Chain is Chain2 and maybe_chain is maybe_chain2
    assert Transform is T2 and TensorwiseTransform is TT2
    assert isinstance(Chainable, types.UnionType) and Chainable == Chainable2
    assert tz.m is tz.modules and callable(apply_transform) and Target is not None and Reformulation is not None
    for name in ("LR", "StepSize", "EMA", "HeavyBall", "NAG", "Adam", "WeightDecay", "ClipValue", "ClipNorm",
                 "Normalize"):
        assert issubclass(getattr(tz.m, name), Module)
    assert tz.utils.TensorList is not None and tz.utils.NumberList is not None
