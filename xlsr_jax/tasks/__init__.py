"""Fine-tuning tasks for the trainer: CTC speech recognition ("ctc") and language ID ("lid").

Importing this package registers both with `xlsr_jax.trainer.register_task`; the trainer
imports it when a config names a task it does not know yet.
"""

from xlsr_jax.tasks import ctc, lid
from xlsr_jax.tasks.ctc import CtcTask
from xlsr_jax.tasks.lid import LidTask

__all__ = ["CtcTask", "LidTask", "ctc", "lid"]
