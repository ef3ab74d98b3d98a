"""Line searches: find a step size along the update by evaluating the objective (they require a closure)."""
from .adaptive import AdaptiveTracking
from .backtracking import AdaptiveBacktracking, Backtracking
from .line_search import LineSearchBase, MaxLineSearchItersReached
from .scipy import ScipyMinimizeScalar
from .strong_wolfe import StrongWolfe

__all__ = ["LineSearchBase", "Backtracking", "AdaptiveBacktracking", "AdaptiveTracking", "StrongWolfe",
           "ScipyMinimizeScalar"]
