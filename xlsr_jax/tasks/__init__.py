"""What is trained: one `Task` per `config.task`, listed in `TASKS`.

  TASKS["pretrain"]  PretrainTask  Wav2Vec2ForPreTraining             (tasks/pretrain.py)
  TASKS["ctc"]       CtcTask       Wav2Vec2ForCTC                     (tasks/ctc.py)
  TASKS["lid"]       LidTask       Wav2Vec2ForSequenceClassification  (tasks/lid.py)
  TASKS["st"]        SpeechTranslationTask  Wav2Vec2ForSpeechTranslation (tasks/st.py)

A new task is a model head (xlsr_jax/models), one file here subclassing `Task` (or
`FinetuneTask`), one line in `TASKS`, and a config. The trainer sits above this package; no
task imports it.
"""

from __future__ import annotations

import ml_collections

from xlsr_jax.tasks.base import Task
from xlsr_jax.tasks.ctc import CtcTask
from xlsr_jax.tasks.finetune import FinetuneTask
from xlsr_jax.tasks.lid import LidTask
from xlsr_jax.tasks.pretrain import PretrainTask
from xlsr_jax.tasks.st import SpeechTranslationTask

TASKS: dict[str, type[Task]] = {
    PretrainTask.name: PretrainTask,
    CtcTask.name: CtcTask,
    LidTask.name: LidTask,
    SpeechTranslationTask.name: SpeechTranslationTask,
}


def create_task(config: ml_collections.ConfigDict) -> Task:
    """The task named by `config.task`, built from `config`.

    Raises:
      ValueError: no task of that name in `TASKS`.
    """
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; known: {sorted(TASKS)}")
    return TASKS[config.task](config)


__all__ = [
    "TASKS",
    "CtcTask",
    "FinetuneTask",
    "LidTask",
    "PretrainTask",
    "SpeechTranslationTask",
    "Task",
    "create_task",
]
