"""``aigc-synth evaluate``: is the output realistic, and does it show the requested conditions?"""

from aigc_synth.evaluation.evaluate import EvaluationError, evaluate

__all__ = ["EvaluationError", "evaluate"]
