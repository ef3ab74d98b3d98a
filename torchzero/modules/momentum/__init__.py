from .momentum import EMA, NAG, HeavyBall

__all__ = ["EMA", "HeavyBall", "NAG"]
