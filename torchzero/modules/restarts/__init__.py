"""Restart strategies: reset the state of other modules when a test fires."""
from .restarts import BirginMartinezRestart, PowellRestart, RestartEvery, RestartOnStuck, RestartStrategyBase

__all__ = ["RestartStrategyBase", "RestartEvery", "RestartOnStuck", "PowellRestart", "BirginMartinezRestart"]
