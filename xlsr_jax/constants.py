"""Numbers shared by the library and the input pipeline (light to import: no JAX, no TensorFlow).

`data_pipelines` imports this module, so it must stay free of heavy imports.
"""

# Hz: the input rate of every wav2vec 2.0 / XLSR / XLS-R model (wav2vec 2.0 paper, Baevski et al.
# 2020, section 4.1: "16 kHz"; fairseq `task.sample_rate: 16000`; HF `sampling_rate: 16000`).
# The input pipeline resamples every corpus to it; exports record it as `audio.sampling_rate`.
SAMPLE_RATE = 16000
