"""`Source`: what every corpus reader returns (one corpus split as metadata columns + a loader).

Its own module so that the readers (`sources`, `tfrecord`, `tfds_reader`) and the writers
(`tfrecord_writer`, `tfds_builder`) share it without importing each other.
"""

from __future__ import annotations

import numpy as np

UNKNOWN_LANGUAGE = "und"  # ISO 639 "undetermined"


class Source:
    """One corpus split: metadata columns plus on-demand loading of utterance i.

    Attributes:
      name: short description for logs.
      languages: list[str] [n], language code per utterance.
      num_samples: int64 [n], length at 16 kHz (estimated from metadata).
      transcripts: list[str] [n] or None when the corpus has no text.
      ids: list[str] [n], path or key per utterance (for skip reports).
    """

    def __init__(self, name, languages, num_samples, transcripts, ids, loader):
        self.name = name
        self.languages = list(languages)
        self.num_samples = np.asarray(num_samples, dtype=np.int64)
        self.transcripts = None if transcripts is None else list(transcripts)
        self.ids = list(ids)
        self._loader = loader
        n = len(self.ids)
        if not (len(self.languages) == len(self.num_samples) == n) or (
            self.transcripts is not None and len(self.transcripts) != n
        ):
            raise ValueError(f"{name}: metadata columns have different lengths")

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> np.ndarray:
        """Decodes utterance i: float32 [samples] mono at 16 kHz; raises AudioDecodeError."""
        return self._loader(int(i))
