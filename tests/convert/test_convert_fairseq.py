"""fairseq `.pt` checkpoints: layout, config forms, safe loading, and numerical agreement.

No fairseq install is needed (nor available offline): a fairseq-layout checkpoint is built from
a random-initialised transformers model by renaming its state dict through our HF -> fairseq
table, with a `cfg` written the way fairseq writes it (plain dict, omegaconf DictConfig, or the
old `args` Namespace). Because the table pair is checked against transformers' own weights and
the converted model is compared against the transformers model's outputs, a wrong entry in
either direction fails the test.
"""

from __future__ import annotations

import argparse
import builtins
import os
import pickletools
import subprocess
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="fairseq checkpoints are torch pickles: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="the reference model comes from transformers")

from tests.convert_testlib import audio_batch, hf_config, max_abs_diff
from xlsr_jax import pretrained
from xlsr_jax.convert import UnsafeCheckpointError, fairseq_to_orbax
from xlsr_jax.convert.__main__ import main as cli
from xlsr_jax.convert.fairseq import hf_state_to_fairseq
from xlsr_jax.convert.torch_pickle import load_torch_file, to_plain
from xlsr_jax.models import Wav2Vec2Model

TOL = 1e-4


def fairseq_model_cfg(norm: str, stable: bool) -> dict:
    """The fairseq `cfg['model']` equivalent of tests.convert_testlib.TINY_HF."""
    return {
        "_name": "wav2vec2",
        "extractor_mode": "default" if norm == "group" else "layer_norm",
        "encoder_layers": 2,
        "encoder_embed_dim": 32,
        "encoder_ffn_embed_dim": 40,
        "encoder_attention_heads": 4,
        "activation_fn": "gelu",
        "layer_type": "transformer",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.05,
        "dropout_input": 0.1,
        "dropout_features": 0.1,
        "final_dim": 12,
        "layer_norm_first": stable,
        "conv_feature_layers": "[(16, 10, 5), (24, 3, 2)] + [(32, 3, 2)]",
        "conv_bias": norm == "layer",
        "logit_temp": 0.1,
        "quantize_targets": True,
        "quantize_input": False,
        "same_quantizer": False,
        "target_glu": False,
        "feature_grad_mult": 0.1,
        "latent_vars": 12,
        "latent_groups": 2,
        "latent_dim": 16,
        "mask_length": 3,
        "mask_prob": 0.3,
        "mask_selection": "static",
        "mask_channel_prob": 0.0,
        "mask_channel_length": 10,
        "num_negatives": 5,
        "negatives_from_everywhere": False,
        "cross_sample_negatives": 0,
        "codebook_negatives": 0,
        "conv_pos": 8,
        "conv_pos_groups": 4,
        "pos_conv_depth": 1,
        "latent_temp": [2.0, 0.5, 0.999995],
    }


def _tensors(state):
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def _hf_state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _encoder_matches(hf_base, loaded):
    audio, padding = audio_batch((1600, 1100), seed=11)
    with torch.no_grad():
        ref = hf_base(
            torch.from_numpy(audio), attention_mask=torch.from_numpy(~padding).long(), output_hidden_states=True
        )
    base = loaded.params["wav2vec2"]
    out = Wav2Vec2Model(loaded.config).apply(
        {"params": base}, jnp.asarray(audio), jnp.asarray(padding), deterministic=True, output_hidden_states=True
    )
    valid = ~np.asarray(out.padding_mask)
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        assert max_abs_diff(a, b, valid) < TOL, f"hidden state {i}"


@pytest.fixture
def fake_modules(monkeypatch):
    """Registers stand-ins for fairseq / omegaconf classes so `torch.save` can pickle them as
    the real libraries would (by module and class name); returns a namespace of the classes."""

    def module(name, **classes):
        parts = name.split(".")
        for i in range(1, len(parts)):  # pickle imports the parent packages too
            parent = ".".join(parts[:i])
            if parent not in sys.modules:
                monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
        mod = types.ModuleType(name)
        for cls_name, cls in classes.items():
            cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
            setattr(mod, cls_name, cls)
        monkeypatch.setitem(sys.modules, name, mod)

    class DictConfig:  # omegaconf keeps items in `_content`, leaves in nodes' `_val`
        def __init__(self, content):
            self._metadata, self._parent = None, None
            self._content = content

    class AnyNode:
        def __init__(self, value):
            self._metadata, self._parent, self._val = None, None, value

    class AverageMeter:  # fairseq.logging.meters, found in checkpoints' extra_state
        def __init__(self):
            self.val, self.sum, self.count = 1.5, 3.0, 2

    module("omegaconf.dictconfig", DictConfig=DictConfig)
    module("omegaconf.nodes", AnyNode=AnyNode)
    module("fairseq.logging.meters", AverageMeter=AverageMeter)
    return types.SimpleNamespace(DictConfig=DictConfig, AnyNode=AnyNode, AverageMeter=AverageMeter)


def _as_dictconfig(ns, obj):
    if isinstance(obj, dict):
        return ns.DictConfig({k: _as_dictconfig(ns, v) for k, v in obj.items()})
    return ns.AnyNode(obj)


@pytest.mark.parametrize(
    "norm,stable,cfg_form",
    [("layer", True, "dict"), ("group", False, "dictconfig")],
    ids=["xlsr-layer-preLN-dict", "base-group-postLN-dictconfig"],
)
def test_pretraining_checkpoint_converts_and_matches(norm, stable, cfg_form, tmp_path, fake_modules):
    torch.manual_seed(3)
    hf = transformers.Wav2Vec2ForPreTraining(hf_config(norm, stable)).eval()
    state = hf_state_to_fairseq(_hf_state(hf), norm, ctc=False)
    assert "encoder.pos_conv.0.weight_g" in state and "final_proj.weight" in state and "quantizer.vars" in state
    assert (
        "feature_extractor.conv_layers.0.2.1.weight" if norm == "layer" else "feature_extractor.conv_layers.0.2.weight"
    ) in state
    cfg = {
        "model": fairseq_model_cfg(norm, stable),
        "criterion": {"_name": "wav2vec", "loss_weights": [0.1, 10.0]},
        "task": {"_name": "audio_pretraining", "normalize": norm == "layer"},
    }
    if cfg_form == "dictconfig":
        cfg = _as_dictconfig(fake_modules, cfg)
    ckpt = {
        "cfg": cfg,
        "model": _tensors(state),
        "optimizer_history": [
            {"criterion_name": "Wav2vecCriterion", "optimizer_name": "FairseqAdam", "num_updates": 7}
        ],
        "extra_state": {
            "metrics": {"train": [("loss", fake_modules.AverageMeter(), 0)]},
            "train_iterator": {"epoch": 2},
        },
        "last_optimizer_state": None,
    }
    torch.save(ckpt, tmp_path / "checkpoint_best.pt")
    assert cli(["fairseq-to-orbax", str(tmp_path / "checkpoint_best.pt"), str(tmp_path / "ours")]) == 0
    loaded = pretrained.load_pretrained(tmp_path / "ours")
    assert loaded.architecture == "Wav2Vec2ForPreTraining"
    assert (loaded.config.feature_grad_mult, loaded.config.feature_penalty_weight) == (0.1, 10.0)
    assert loaded.config.layerdrop == 0.05 and loaded.config.feat_proj_dropout == 0.1
    assert loaded.audio["do_normalize"] == (norm == "layer")  # from cfg['task']['normalize']
    _encoder_matches(hf.wav2vec2, loaded)
    for name in ("project_q", "project_hid"):
        np.testing.assert_array_equal(loaded.params[name]["kernel"], getattr(hf, name).weight.detach().numpy().T)
    np.testing.assert_array_equal(loaded.params["quantizer"]["codevectors"], hf.quantizer.codevectors[0].detach())


def test_ctc_checkpoint_with_old_args_and_dictionary(tmp_path):
    """Old fairseq (argparse `args`) CTC fine-tuned checkpoint + dict.ltr.txt, then on to HF."""
    torch.manual_seed(4)
    hf = transformers.Wav2Vec2ForCTC(hf_config("group", False)).eval()
    state = hf_state_to_fairseq(_hf_state(hf), "group", ctc=True)
    assert "w2v_encoder.proj.weight" in state and "w2v_encoder.w2v_model.mask_emb" in state
    w2v_args = argparse.Namespace(
        arch="wav2vec2", **{k: v for k, v in fairseq_model_cfg("group", False).items() if k != "_name"}
    )
    args = argparse.Namespace(
        arch="wav2vec_ctc",
        w2v_args=w2v_args,
        w2v_path="/data/pretrain.pt",
        dropout=0.0,
        activation_dropout=0.1,
        attention_dropout=0.0,
        dropout_input=0.0,
        mask_prob=0.5,
        mask_length=10,
        mask_channel_prob=0.1,
        mask_channel_length=64,
        layerdrop=0.1,
        feature_grad_mult=0.0,
        final_dropout=0.0,
        criterion="ctc",
    )
    torch.save({"args": args, "model": _tensors(state), "optimizer_history": []}, tmp_path / "ft.pt")
    with open(tmp_path / "dict.ltr.txt", "w") as f:
        f.write("| 94802\nE 51860\nT 38431\nA 33152\nO 31495\nN 28855\n")
    out = fairseq_to_orbax(tmp_path / "ft.pt", tmp_path / "ours", dict_path=tmp_path / "dict.ltr.txt")
    loaded = pretrained.load_pretrained(out)
    assert loaded.architecture == "Wav2Vec2ForCTC" and loaded.config.vocab_size == 10
    assert loaded.vocab == {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7, "O": 8, "N": 9}
    assert (loaded.config.mask_time_prob, loaded.config.mask_feature_length, loaded.config.feature_grad_mult) == (
        0.5,
        64,
        0.0,
    )
    audio, _ = audio_batch((1600, 1600), seed=12)
    with torch.no_grad():
        ref = hf(torch.from_numpy(audio)).logits
    logits, _ = loaded.model().apply({"params": loaded.params}, jnp.asarray(audio), None, deterministic=True)
    assert max_abs_diff(logits, ref) < TOL
    # And on to transformers, tokenizer included.
    assert cli(["orbax-to-hf", str(out), str(tmp_path / "hf")]) == 0
    processor = transformers.Wav2Vec2Processor.from_pretrained(tmp_path / "hf")
    assert processor.tokenizer.decode([5, 5, 0, 6, 4, 7]) == "ET A"
    assert processor.feature_extractor.return_attention_mask is False  # group-norm convention
    back = transformers.Wav2Vec2ForCTC.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert max_abs_diff(back(torch.from_numpy(audio)).logits, ref) < TOL


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Call:
    """Pickles as a call of `fn(*args)`: what a hostile checkpoint smuggles into `extra_state`."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def test_unsafe_pickle_is_refused_by_name(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "cfg": {"model": {}}, "extra_state": _Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|os\.system"):
        fairseq_to_orbax(tmp_path / "evil.pt", tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert cli(["fairseq-to-orbax", str(tmp_path / "evil.pt"), str(tmp_path / "out")]) == 1


@pytest.mark.parametrize(
    "fn,args,name",
    [
        (builtins.exec, ("open('{m}', 'w')",), r"builtins\.exec"),
        (builtins.eval, ("open('{m}', 'w')",), r"builtins\.eval"),
        (builtins.getattr, ("", "join"), r"builtins\.getattr"),
        (builtins.__import__, ("os",), r"builtins\.__import__"),
        (builtins.open, ("{m}", "w"), r"(io|builtins)\.open"),
        (subprocess.call, (["touch", "{m}"],), r"(subprocess|commands)\.call"),
    ],
)
def test_callable_globals_stay_refused_next_to_builtin_types(fn, args, name, tmp_path):
    """Allowing inert builtin types (for omegaconf configs) must not let any acting callable in."""
    marker = tmp_path / "pwned"
    args = tuple(a.format(m=marker) if isinstance(a, str) else a for a in args)
    args = tuple([x.format(m=marker) for x in a] if isinstance(a, list) else a for a in args)
    evil = {"model": {}, "cfg": {"model": {"n": int("3")}}, "types": [dict, list, int], "extra_state": _Call(fn, *args)}
    torch.save(evil, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=name):
        load_torch_file(tmp_path / "evil.pt")
    assert not marker.exists()


HYDRA_FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "fairseq_hydra_omegaconf206.pt")


def _check_hydra_checkpoint(path, tmp_path):
    """A hydra-era checkpoint (real omegaconf DictConfig `cfg`) converts exactly like the same
    checkpoint with its `cfg` as a plain dict (the form test_pretraining_checkpoint_converts_and_matches
    checks against transformers)."""
    ckpt = load_torch_file(path)
    cfg = to_plain(ckpt["cfg"])
    assert cfg["model"] == fairseq_model_cfg("group", False)  # every value as fairseq wrote it
    assert cfg["criterion"]["loss_weights"] == [0.1, 10.0] and cfg["task"]["normalize"] is False
    torch.save({**ckpt, "cfg": cfg}, tmp_path / "plain.pt")
    assert cli(["fairseq-to-orbax", str(path), str(tmp_path / "hydra")]) == 0
    assert cli(["fairseq-to-orbax", str(tmp_path / "plain.pt"), str(tmp_path / "plain")]) == 0
    hydra, plain = (pretrained.load_pretrained(tmp_path / d) for d in ("hydra", "plain"))
    assert hydra.config == plain.config and hydra.audio == plain.audio
    assert hydra.config.feature_penalty_weight == 10.0 and hydra.config.num_hidden_layers == 2
    jax.tree.map(np.testing.assert_array_equal, hydra.params, plain.params)


def test_hydra_era_omegaconf_checkpoint_converts(tmp_path):
    with zipfile.ZipFile(HYDRA_FIXTURE) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    names = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    # What made it be refused before: omegaconf's builtin type references.
    assert {"__builtin__ dict", "__builtin__ list", "omegaconf.dictconfig DictConfig"} <= names
    _check_hydra_checkpoint(HYDRA_FIXTURE, tmp_path)


def test_hydra_fixture_regenerates_with_omegaconf_2_0(tmp_path):
    omegaconf = pytest.importorskip(
        "omegaconf",
        reason="regenerating the committed fixture needs omegaconf 2.0.x "
        "(pip<24.1 install --no-deps omegaconf==2.0.6; see tests/fixtures/make_fairseq_hydra_checkpoint.py)",
    )
    if not omegaconf.__version__.startswith("2.0."):
        pytest.skip(f"omegaconf {omegaconf.__version__} is installed; fairseq pins 2.0.x")
    from tests.fixtures.make_fairseq_hydra_checkpoint import build_checkpoint

    build_checkpoint(str(tmp_path / "fresh.pt"))
    _check_hydra_checkpoint(tmp_path / "fresh.pt", tmp_path)


def test_mismatched_fairseq_checkpoint_names_keys(tmp_path, capsys):
    torch.manual_seed(5)
    hf = transformers.Wav2Vec2ForPreTraining(hf_config("layer", True)).eval()
    state = hf_state_to_fairseq(_hf_state(hf), "layer", ctc=False)
    state["encoder.layers.0.self_attn.k_proj.weight"] = np.zeros((32, 31), np.float32)
    state["encoder.layers.0.adapter.fc.weight"] = np.zeros((4, 4), np.float32)
    cfg = {"model": fairseq_model_cfg("layer", True), "criterion": {"loss_weights": [0.1, 0.0]}}
    torch.save({"cfg": cfg, "model": _tensors(state)}, tmp_path / "bad.pt")
    assert cli(["fairseq-to-orbax", str(tmp_path / "bad.pt"), str(tmp_path / "out")]) == 1
    assert "encoder.layers.0.adapter.fc.weight" in capsys.readouterr().err
    del state["encoder.layers.0.adapter.fc.weight"]
    torch.save({"cfg": cfg, "model": _tensors(state)}, tmp_path / "bad.pt")
    assert cli(["fairseq-to-orbax", str(tmp_path / "bad.pt"), str(tmp_path / "out")]) == 1
    assert (
        "wav2vec2.encoder.layers.0.attention.k_proj.weight: checkpoint (32, 31) vs config (32, 32)"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "edit,field",
    [
        (
            lambda c: c["model"].update(encoder_layers=10_000_000),
            "config says 10000000 Transformer layers but the state dict has 2",
        ),
        (lambda c: c["model"].update(encoder_embed_dim="32"), "hidden_size must be an integer"),
        (lambda c: c["task"].update(sample_rate="16k"), "task.sample_rate must be a positive integer"),
        (lambda c: c["task"].update(normalize="yes"), "task.normalize must be true or false"),
    ],
)
def test_malformed_fairseq_cfg_is_one_line_naming_file_and_field(edit, field, tmp_path, capsys):
    torch.manual_seed(3)
    hf = transformers.Wav2Vec2ForPreTraining(hf_config("group", False)).eval()
    state = hf_state_to_fairseq(_hf_state(hf), "group", ctc=False)
    cfg = {"model": fairseq_model_cfg("group", False), "task": {"_name": "audio_pretraining", "normalize": False}}
    edit(cfg)
    torch.save({"cfg": cfg, "model": _tensors(state)}, tmp_path / "bad.pt")
    capsys.readouterr()
    assert cli(["fairseq-to-orbax", str(tmp_path / "bad.pt"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "bad.pt") in err and field in err, err
    assert not (tmp_path / "out").exists()


def test_not_a_fairseq_checkpoint_is_one_line(tmp_path, capsys):
    torch.save({"model": [1, 2, 3]}, tmp_path / "odd.pt")
    assert cli(["fairseq-to-orbax", str(tmp_path / "odd.pt"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a fairseq checkpoint" in err and str(tmp_path / "odd.pt") in err


def test_omegaconf_interpolations_resolve_as_omegaconf_would():
    """hydra-era configs reference other fields (`${task.normalize}`); a fine-tuned checkpoint's
    w2v_args resolves inside itself."""
    from xlsr_jax.convert.fairseq import audio_settings, checkpoint_config

    cfg = {
        "task": {"normalize": True, "sample_rate": "${common.rate}"},
        "common": {"rate": 8000},
        "model": {
            "normalize": "${task.normalize}",
            "layers": ["${common.rate}", 3],
            "env": "${env:HOME}",
            "missing": "${nowhere.x}",
            "w2v_args": {"task": {"normalize": False}, "model": {"normalize": "${task.normalize}"}},
        },
    }
    plain = checkpoint_config({"cfg": cfg})
    assert plain["model"]["normalize"] is True and plain["task"]["sample_rate"] == 8000
    assert plain["model"]["layers"] == [8000, 3]
    assert plain["model"]["env"] == "${env:HOME}" and plain["model"]["missing"] == "${nowhere.x}"
    assert plain["model"]["w2v_args"]["model"]["normalize"] is False  # its own root
    assert audio_settings(plain) == {"sampling_rate": 8000, "do_normalize": True}
    cyclic = checkpoint_config({"cfg": {"model": {"a": "${model.b}", "b": "${model.a}"}}})
    assert isinstance(cyclic["model"]["a"], str)
