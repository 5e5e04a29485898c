"""The reward function verl loads: ``reward.custom_reward_function.path=pkg://llmctl.core.verl_reward``.

This public path is named in users' verl configs, so it stays; the code lives in
:mod:`llmctl.core.rewards.compute_score`.
"""

from llmctl.core.rewards.compute_score import *  # noqa: F403
from llmctl.core.rewards.compute_score import __all__ as __all__  # noqa: F401
