"""Trust regions over a curvature ``LinearOperator`` (``get_H`` of a curvature module): the base class with its
radius strategies, Steihaug–Toint CG, dogleg, Levenberg–Marquardt and cubic regularization."""
from .cubic import CubicRegularization
from .dogleg import Dogleg
from .levenberg_marquardt import LevenbergMarquardt
from .trust_cg import TrustCG
from .trust_region import RadiusStrategy, TrustRegionBase, default_radius, fixed_radius

__all__ = ["TrustRegionBase", "TrustCG", "Dogleg", "LevenbergMarquardt", "CubicRegularization"]
