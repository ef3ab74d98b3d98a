"""SciPy's optimizers (``scipy.optimize``) as ``torch.optim.Optimizer`` objects.

Importing this module imports SciPy (an optional dependency: ``pip install torchzero[scipy]``).

Each ``step(closure)`` runs one complete SciPy optimization starting from the current parameters, over the trainable
parameters flattened into one float64 vector, and writes the solution into the parameters. The closure has the
``closure(backward=True)`` form; objective values are evaluated with ``closure(False)`` under ``torch.no_grad()``,
gradients with ``closure()`` and Hessians by autograd from ``closure(False)``. A NaN loss is passed to SciPy as
``+inf``. ``opt.num_evaluations`` counts closure calls and ``opt.result`` holds SciPy's result of the last step.
"""
from .global_search import ScipyBrute, ScipyDE, ScipyDIRECT, ScipyDualAnnealing, ScipySHGO
from .local import ScipyLeastSquaresOptimization, ScipyMinimize, ScipyRootOptimization

__all__ = ["ScipyMinimize", "ScipyRootOptimization", "ScipyLeastSquaresOptimization", "ScipyDE",
           "ScipyDualAnnealing", "ScipySHGO", "ScipyDIRECT", "ScipyBrute"]
