"""Utilities: multi-tensor lists, parameter handling, derivatives."""
from . import derivatives
from .numberlist import NumberList
from .optimizer import Optimizer
from .params import Params, make_param_groups
from .tensorlist import TensorList, as_tensorlist
from .torch_tools import flatten, set_storage_, tofloat, tolist, tonumpy, totensor, vec_to_tensors, vec_to_tensors_

__all__ = ["NumberList", "Optimizer", "Params", "TensorList", "as_tensorlist", "derivatives", "flatten", "make_param_groups",
           "set_storage_", "tofloat", "tolist", "tonumpy", "totensor", "vec_to_tensors", "vec_to_tensors_"]
