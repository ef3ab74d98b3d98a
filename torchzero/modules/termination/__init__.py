from .termination import (
    TerminateAfterNEvaluations,
    TerminateAfterNSeconds,
    TerminateAfterNSteps,
    TerminateAll,
    TerminateAny,
    TerminateByGradientNorm,
    TerminateByUpdateNorm,
    TerminateNever,
    TerminateOnLossReached,
    TerminateOnNoImprovement,
    TerminationCriteriaBase,
    make_termination_criteria,
)

__all__ = [
    "TerminateAfterNEvaluations",
    "TerminateAfterNSeconds",
    "TerminateAfterNSteps",
    "TerminateAll",
    "TerminateAny",
    "TerminateByGradientNorm",
    "TerminateByUpdateNorm",
    "TerminateNever",
    "TerminateOnLossReached",
    "TerminateOnNoImprovement",
    "TerminationCriteriaBase",
    "make_termination_criteria",
]
