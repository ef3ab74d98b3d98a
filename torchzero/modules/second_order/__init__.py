"""Second-order methods: Newton with the exact Hessian, inverse-free Newton, matrix-free Newton–CG/MINRES (and the
trust-region Newton–CG of Steihaug), Nyström-sketched Newton, and multipoint Newton methods."""
from .inverse_free_newton import InverseFreeNewton
from .multipoint import SixthOrder3P, SixthOrder3PM2, SixthOrder5P, TwoPointNewton
from .newton import Newton
from .newton_cg import NewtonCG, NewtonCGSteihaug
from .nystrom import NystromPCG, NystromSketchAndSolve

__all__ = [
    "InverseFreeNewton",
    "Newton",
    "NewtonCG",
    "NewtonCGSteihaug",
    "NystromPCG",
    "NystromSketchAndSolve",
    "SixthOrder3P",
    "SixthOrder3PM2",
    "SixthOrder5P",
    "TwoPointNewton",
]
