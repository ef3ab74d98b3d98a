"""Other libraries' optimizers as ``torch.optim.Optimizer`` objects.

This package imports nothing on purpose: each wrapper module imports its library (an optional dependency) when it
is imported, so import the module you need explicitly::

    from torchzero.optim.wrappers.scipy import ScipyMinimize
    from torchzero.optim.wrappers.nevergrad import NevergradWrapper

Modules (library, extra to install): ``scipy`` (SciPy, ``torchzero[scipy]``), ``nevergrad`` (``torchzero[nevergrad]``),
``nlopt`` (``torchzero[nlopt]``), ``optuna`` (``torchzero[optuna]``), ``directsearch`` (``torchzero[directsearch]``),
``fcmaes`` (``torchzero[fcmaes]``), ``mads`` (``torchzero[mads]``).
"""
