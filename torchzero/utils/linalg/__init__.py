"""Linear algebra used by the optimizers: matrix functions, orthogonalization, QR, randomized SVD, and the
``LinearOperator`` family."""
from .linear_operator import AAT, AtA, Dense, DenseInverse, DenseWithInverse, Diagonal, LinearOperator, ScaledIdentity
from .matrix_funcs import (
    eigh_safe,
    eigvals_func,
    inv_sqrt_2x2,
    matrix_power_eigh,
    matrix_power_eigh_safe,
    power_from_eigh,
    singular_vals_func,
    solve_psd_eigh,
)
from .nystrom import nystrom_approximation, nystrom_from_sketch, nystrom_pcg, nystrom_sketch_and_solve
from .orthogonalize import NS_COEFFS, orthogonalize, svd_orthogonalize, zeropower_via_newtonschulz5
from .qr import gram_schmidt, qr_householder
from .solve import CG, cg, find_within_trust_radius, minres
from .svd import randomized_svd
from .x_inv import x_inv

__all__ = [
    "CG",
    "cg",
    "find_within_trust_radius",
    "minres",
    "nystrom_approximation",
    "nystrom_from_sketch",
    "nystrom_pcg",
    "nystrom_sketch_and_solve",
    "x_inv",
    "AAT",
    "NS_COEFFS",
    "AtA",
    "Dense",
    "DenseInverse",
    "DenseWithInverse",
    "Diagonal",
    "LinearOperator",
    "ScaledIdentity",
    "eigh_safe",
    "eigvals_func",
    "gram_schmidt",
    "inv_sqrt_2x2",
    "matrix_power_eigh",
    "matrix_power_eigh_safe",
    "orthogonalize",
    "power_from_eigh",
    "qr_householder",
    "randomized_svd",
    "singular_vals_func",
    "solve_psd_eigh",
    "svd_orthogonalize",
    "zeropower_via_newtonschulz5",
]
