"""Hydra composition against the typed schema: every option composes, bad input is one line."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from cluster.cli import describe_config
from cluster.schema import CONF_DIR, SCHEMAS, group_options, load_config
from schemas.fields import ConfigError

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())

# Options with required (???) fields get the smallest override that satisfies them.
REQUIRED_EXTRAS = {
    ("model", "pretrained"): ["model.name_or_path=some/dir"],
    ("data", "text-files"): ["data.paths=[corpus/*.txt]"],
    ("data", "hf-dataset"): ["data.hf_name=x"],
    ("tokenizer", "pretrained"): ["tokenizer.name_or_path=some/tokenizer"],
    ("sft", "jsonl"): ["sft.paths=[chat/*.jsonl]"],
    ("sft", "hf-dataset"): ["sft.hf_name=x"],
    ("pref", "files"): ["pref.paths=[pairs/*.jsonl]"],
    ("pref", "hf-dataset"): ["pref.hf_name=x"],
}

ALL_OPTIONS = [(g, o) for g in GROUPS for o in group_options(g)]
# The primary config each group belongs to (the rest compose under conf/train.yaml).
PRIMARY = {"serve": "serve", "sft": "finetune", "pref": "dpo"}
# conf/finetune.yaml and conf/dpo.yaml name no base model: the tests that compose them name one.
FINETUNE_BASE = ["model.name_or_path=some/export"]


def test_every_group_has_options():
    assert {"model", "data", "tokenizer", "deepspeed", "scaling", "optim"} <= set(GROUPS)
    for group in GROUPS:
        assert group_options(group), f"conf/{group}/ has no YAML options"


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes_and_converts(group, option):
    overrides = [f"{group}={option}", *REQUIRED_EXTRAS.get((group, option), [])]
    primary = PRIMARY.get(group, "train")
    base = FINETUNE_BASE if primary in ("finetune", "dpo") else []
    cfg = load_config(primary, overrides + base)
    section = getattr(cfg, group)
    assert dataclasses.is_dataclass(section)

    # Every concrete value in the option's YAML reaches the typed section unchanged, and
    # differs from the schema's default (the YAML holds the diff, nothing restated).
    path = CONF_DIR / group / f"{option}.yaml"
    assert path.read_text().startswith("#"), f"{path} starts with no comment saying what it is"
    raw = OmegaConf.to_container(OmegaConf.load(path)) or {}
    # `# @package _global_` options (gpt2-micro) set keys of several sections.
    sections = raw if path.read_text().startswith("# @package _global_") else {group: raw}
    for name, values in sections.items():
        assert_values_reach(getattr(cfg, name), type(getattr(cfg, name))(), values, name)

    # The typed config survives the round trip the driver does for --cfg and config.yaml.
    again = OmegaConf.to_object(OmegaConf.structured(cfg))
    assert again == cfg


def assert_values_reach(section, default, values: dict, where: str) -> None:
    for key, value in values.items():
        if isinstance(section, dict):  # named sections (a pipeline's stages) or a mapping
            assert key in section, f"{where} lost key {key}"
            actual, default_value = section[key], default.get(key)
        else:
            assert hasattr(section, key), f"{where} sets unknown key {key}"
            actual, default_value = getattr(section, key), getattr(default, key)
        if value == "???":  # required: the tests above give it a value
            continue
        if value is None:  # null may be resolved in __post_init__ (scaling.num_workers)
            assert default_value is not None, f"{where}.{key}=null restates the default"
            continue
        if isinstance(value, dict) and dataclasses.is_dataclass(actual) and default_value is None:
            default_value = type(actual)()  # a new named section: its fields' defaults
        sections = isinstance(actual, dict) and any(map(dataclasses.is_dataclass, actual.values()))
        if isinstance(value, dict) and (dataclasses.is_dataclass(actual) or sections):
            assert_values_reach(actual, default_value, value, f"{where}.{key}")
            continue
        assert actual == value, f"{where}.{key}"
        assert value != default_value, f"{where}.{key}={value!r} restates the default"


@pytest.mark.parametrize("primary", sorted(SCHEMAS))
def test_primary_yaml_sets_only_what_differs_from_the_schema(primary):
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{primary}.yaml"))
    raw.pop("defaults")
    base = FINETUNE_BASE if primary in ("finetune", "dpo") else []
    assert_values_reach(load_config(primary, base), SCHEMAS[primary](), raw, primary)


def every_field(schema: type, prefix: str = ""):
    for f in dataclasses.fields(schema):
        yield f"{prefix}{f.name}", f
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            yield from every_field(type(default), f"{prefix}{f.name}.")


@pytest.mark.parametrize("primary", sorted(SCHEMAS))
def test_every_config_field_is_described_once_on_its_dataclass_and_cfg_shows_it(primary):
    base = FINETUNE_BASE if primary in ("finetune", "dpo") else []
    shown = describe_config(load_config(primary, base))
    for key, f in every_field(SCHEMAS[primary]):
        help = f.metadata.get("help", "")
        assert len(help) > 8, f"{primary}: {key} has no description"
        assert help.split()[0] in shown, f"--cfg does not show the description of {key}"
    # What --cfg prints is YAML that composes back to the same values.
    assert OmegaConf.to_container(OmegaConf.create(shown)) == OmegaConf.to_container(
        OmegaConf.structured(load_config(primary, base))
    )


def test_defaults():
    cfg = load_config("train", [])
    assert cfg.model.model_type == "gpt2"
    assert (cfg.model.hidden_size, cfg.model.num_layers, cfg.model.num_heads) == (128, 2, 4)
    assert cfg.model.from_pretrained is False and cfg.model.name_or_path is None
    assert cfg.deepspeed.stage == 2
    assert not cfg.deepspeed.offload_optimizer and not cfg.deepspeed.offload_param
    assert cfg.scaling.num_workers == 2
    assert cfg.scaling.use_gpu is False
    assert cfg.trainer.precision == "auto"
    assert cfg.data.source == "pydoc"
    assert cfg.tokenizer.kind == "train-bpe"
    assert cfg.trainer.seq_len <= cfg.model.max_position_embeddings
    assert cfg.run_name is None


def test_overrides_apply():
    cfg = load_config(
        "train",
        [
            "model=gpt2-124m",
            "deepspeed=zero3",
            "trainer.max_steps=7",
            "optim.lr=3e-4",
            "scaling.num_workers=4",
        ],
    )
    assert cfg.model.hidden_size == 768
    assert cfg.deepspeed.stage == 3
    assert cfg.trainer.max_steps == 7
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.scaling.num_workers == 4


def test_multi_node_derives_num_workers():
    cfg = load_config(
        "train", ["scaling=multi-node", "scaling.num_nodes=3", "scaling.gpus_per_node=4"]
    )
    assert cfg.scaling.max_workers == 12


# (overrides, text the one-line message must contain)
BAD_INPUT = [
    (["model=nope"], "model"),
    (["deepspeed=zero9"], "deepspeed"),
    (["scaling=nope"], "scaling"),
    (["trainer.bogus=1"], "trainer.bogus"),
    (["bogus=1"], "bogus"),
    (["model.bogus=1"], "model.bogus"),
    (["trainer.max_steps=abc"], "trainer.max_steps"),
    (["model.hidden_size=1.5"], "model.hidden_size"),
    (["deepspeed.offload_param=maybe"], "deepspeed.offload_param"),
    (["trainer.max_steps=null"], "trainer.max_steps"),
    (["trainer.micro_batch_size=0"], "trainer.micro_batch_size"),
    (["trainer.micro_batch_size=-4"], "trainer.micro_batch_size"),
    (["trainer.grad_accum_steps=0"], "trainer.grad_accum_steps"),
    (["trainer.max_steps=0"], "trainer.max_steps"),
    (["trainer.seq_len=0"], "trainer.seq_len"),
    (["trainer.seq_len=512"], "trainer.seq_len"),
    (["model=gpt2-124m", "trainer.seq_len=2048"], "trainer.seq_len"),
    (["deepspeed.stage=5"], "deepspeed.stage"),
    (["deepspeed.offload_param=true"], "deepspeed.offload_param"),
    (["deepspeed=zero0", "deepspeed.offload_optimizer=true"], "deepspeed.offload_optimizer"),
    (["trainer.precision=fp8"], "trainer.precision"),
    (["model=pretrained"], "model.name_or_path"),
    (["model.name_or_path=some/dir"], "model.name_or_path"),
    (["data=text-files"], "data.paths"),
    (["data=hf-dataset"], "data.hf_name"),
    (["data.small_corpus_mib=-1"], "data.small_corpus_mib"),
    (["tokenizer=pretrained"], "tokenizer.name_or_path"),
    (["tokenizer.vocab_size=10"], "tokenizer.vocab_size"),
    (["model.num_heads=3"], "model.num_heads"),
    (["scaling.num_workers=0"], "scaling.num_workers"),
    (["scaling.num_workers=null"], "scaling.num_workers"),
    (["experiment=a/b"], "experiment"),
    (["optim.lr=0"], "optim.lr"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_INPUT, ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        load_config("train", overrides)
    message = str(info.value)
    assert message.strip(), "empty error message"
    assert "\n" not in message, f"multi-line message: {message!r}"
    assert field in message
    if field in GROUPS and "." not in overrides[0]:  # a bad group option lists the good ones
        for option in group_options(field):
            assert option in message


def test_seq_len_error_names_the_limit():
    with pytest.raises(ConfigError, match="max_position_embeddings=256"):
        load_config("train", ["trainer.seq_len=512"])


def test_pretrained_model_skips_seq_len_limit():
    # The checkpoint's own config decides the context; the schema's 256 must not apply.
    cfg = load_config(
        "train", ["model=pretrained", "model.name_or_path=some/dir", "trainer.seq_len=1024"]
    )
    assert cfg.trainer.seq_len == 1024


@pytest.mark.parametrize("override", ["+trainer.max_step=10", "+bogus=1"])
def test_appended_unknown_key_is_refused(override):
    # Hydra merges '+key' with the struct flag off; the schema check must still refuse it.
    key = override[1:].split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}: unknown key"):
        load_config("train", [override])


def test_finetune_and_eval_configs_compose_with_their_documented_defaults():
    cfg = load_config("finetune", FINETUNE_BASE)
    assert (cfg.experiment, cfg.sft.source, cfg.lora.enabled) == ("finetune", "stdlib-qa", False)
    assert cfg.model.from_pretrained and cfg.tokenizer.kind == "pretrained"
    assert cfg.epochs == 6 and cfg.optim.lr < load_config("train", []).optim.lr
    evaluation = load_config("eval", [])
    assert evaluation.export is None and evaluation.sft.source == "stdlib-qa"
    assert evaluation.eval == cfg.eval  # the same evaluation as the end of a fine-tuning run


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["lora.enabled=true", "deepspeed=zero3"], "deepspeed.stage"),
        (["lora.rank=0"], "lora.rank"),
        (["sft.truncation=middle"], "sft.truncation"),
        (["sft=jsonl"], "sft.paths"),
        (["sft.max_bad_fraction=1.5"], "sft.max_bad_fraction"),
        (["epochs=0"], "epochs"),
        (["eval.batch_size=0"], "eval.batch_size"),
    ],
)
def test_bad_finetune_input_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as err:
        load_config("finetune", FINETUNE_BASE + overrides)
    assert "\n" not in str(err.value)


def test_the_dpo_config_composes_with_its_documented_defaults():
    cfg = load_config("dpo", FINETUNE_BASE)
    assert (cfg.experiment, cfg.pref.source, cfg.sft.source) == ("dpo", "stdlib-pref", "stdlib-qa")
    assert (cfg.dpo.beta, cfg.dpo.label_smoothing, cfg.dpo.disable_dropout) == (0.1, 0.0, True)
    assert cfg.epochs == 1 and cfg.optim.lr < load_config("finetune", FINETUNE_BASE).optim.lr


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["dpo.beta=0"], "dpo.beta"),
        (["dpo.label_smoothing=0.5"], "dpo.label_smoothing"),
        (["pref=files"], "pref.paths"),
        (["pref.source=csv"], "pref.source"),
        (["pref.truncation=middle"], "pref.truncation"),
        (["sft.format=csv"], "sft.format"),
    ],
)
def test_bad_dpo_input_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as err:
        load_config("dpo", FINETUNE_BASE + overrides)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override",
    ["run_name=../elsewhere", "run_name=a/b", "run_name=..", "experiment=..", "experiment=x/y"],
)
def test_run_and_experiment_names_cannot_leave_output_dir(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config("train", [override])
