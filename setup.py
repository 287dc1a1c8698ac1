"""xlsr-jax: XLSR / XLS-R (wav2vec 2.0) in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="xlsr-jax",
    version="0.1.0",
    description="XLSR / XLS-R wav2vec 2.0 pretraining and fine-tuning in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["xlsr_jax", "xlsr_jax.*", "data_pipelines", "data_pipelines.*"]),
    include_package_data=True,
    install_requires=[
        "jax>=0.10,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "tensorflow-cpu>=2.21,<2.22",
        "tensorflow-datasets>=4.9,<5",
        "soundfile>=0.13",  # data_pipelines.audio: decoding
        "soxr>=1.0,<2",  # data_pipelines.audio: resampling to 16 kHz
        "absl-py>=2.1,<3",  # train.py: flags and app
        "ml-collections>=1.1,<2",
        "numpy>=2.0",
        "safetensors>=0.4",
        "tensorboardX>=2.6",
        "jiwer>=3.0",
        "tqdm>=4.60",
        # xlsr_jax.fileio: run-directory files (config, metrics, eval reports) on gs:// workdirs.
        "etils[epath]>=1.7,<2",
        # convert hf-to-orbax with a hub model id (download into the hub cache).
        "huggingface_hub>=1.0,<3",
        # tensorflow-datasets needs it to build datasets (etils epath) but does not declare it.
        "importlib_resources>=6",
    ],
    extras_require={
        # Reading PyTorch checkpoints and the parity tests against transformers.
        "torch": ["torch==2.13.0", "transformers>=5.0,<6"],
        # librosa: the tests' independent resampler (tests/finetune_testlib.py); also what
        # experiments/benchmark_input.py compares the pipeline's soundfile + soxr decoding against.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "librosa>=0.11,<0.12"],
        # CTC beam search with a KenLM n-gram (xlsr_jax.lm): flashlight's decoder, whose wheels carry
        # KenLM (no compiler needed; pyctcdecode needs kenlm built from source and pins numpy<2).
        "lm": ["flashlight-text==0.0.7"],
        # libtpu for ahead-of-time compilation for TPU topologies on a CPU host
        # (experiments/aot_compile.py, tests/training/test_aot_tpu.py); jax[tpu] picks the matching libtpu.
        "tpu": ["jax[tpu]>=0.10,<0.11"],
        # experiments/notebooks/ and tests/test_notebooks.py: nbclient + nbformat execute the notebooks
        # in an ipykernel kernel; matplotlib draws their plots; scikit-learn gives the representations
        # notebook PCA, t-SNE and the logistic-regression language-ID probe.
        # Speech translation (xlsr_jax.translate, the `st` task, data_pipelines/covost.py):
        # sentencepiece tokenises the targets (mBART-50's sentencepiece.bpe.model), sacrebleu scores
        # BLEU and chrF as the CoVoST-2 results are reported.
        "translation": ["sentencepiece>=0.2,<0.3", "sacrebleu>=2.4,<3"],
        "notebooks": [
            "nbclient>=0.10,<0.12",
            "nbformat>=5.10,<6",
            "ipykernel>=6.29,<8",
            "matplotlib>=3.8,<4",
            "scikit-learn>=1.4,<2",
        ],
    },
    entry_points={
        "console_scripts": [
            "xlsr-convert=xlsr_jax.convert.__main__:main",
        ],
    },
)
