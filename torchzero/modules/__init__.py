"""All modules, exported as ``torchzero.m.<Name>``."""
from . import experimental
from .adaptive import *  # noqa: F403
from .clipping import *  # noqa: F403
from .conjugate_gradient import *  # noqa: F403
from .grad_approximation import *  # noqa: F403
from .higher_order import *  # noqa: F403
from .least_squares import *  # noqa: F403
from .line_search import *  # noqa: F403
from .misc import *  # noqa: F403
from .momentum import *  # noqa: F403
from .ops import *  # noqa: F403
from .projections import *  # noqa: F403
from .quasi_newton import *  # noqa: F403
from .restarts import *  # noqa: F403
from .second_order import *  # noqa: F403
from .smoothing import *  # noqa: F403
from .step_size import *  # noqa: F403
from .termination import *  # noqa: F403
from .trust_region import *  # noqa: F403
from .variance_reduction import *  # noqa: F403
from .weight_decay import *  # noqa: F403
from .wrappers import *  # noqa: F403
from .zeroth_order import *  # noqa: F403
