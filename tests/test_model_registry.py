"""The registry of models/*.yaml: family defaults merged under each model, modalities derived by the adapters'
typed arguments, argument checks that read no weight, and the dtype `auto` stands for."""

import subprocess
import sys

import pytest

from mcub.models.base import (
    ModelError,
    build_model,
    check_model_args,
    load_model_specs,
    merge_args,
    resolve_dtype,
)
from mcub.models.modelcompose.arguments import ModelComposeArguments

SPECS = load_model_specs()
DEFAULT_ENCODERS = {
    "image": "hub:openai/clip-vit-large-patch14-336",
    "video": "hub:LanguageBind/LanguageBind_Video_merge",
    "audio": "model/beats/BEATs_iter3_plus_AS2M.pt",
    "point": "model/PointLLM/point_bert_v1.2.pt",
}
MODELCOMPOSE = [name for name, spec in SPECS.items() if spec.adapter == "modelcompose"]


def test_every_modelcompose_model_takes_the_family_defaults():
    assert len(MODELCOMPOSE) == 20
    for name in MODELCOMPOSE:
        spec = SPECS[name]
        assert spec.args["base"] == "hub:lmsys/vicuna-7b-v1.5" and spec.args["encoders"] == DEFAULT_ENCODERS
        assert spec.modalities == tuple(m for m in DEFAULT_ENCODERS if m in spec.args["experts"])
        kind = spec.args["composition"]
        assert all(ref.endswith(f"-{kind}") for ref in spec.args["experts"].values())


def test_modalities_follow_from_the_experts_and_only_their_encoders_are_components():
    assert SPECS["damc-vision"].modalities == ("image",)
    assert SPECS["naivemc-avp"].modalities == ("video", "audio", "point")
    assert SPECS["random"].modalities == SPECS["blind-vicuna"].modalities == ("image", "video", "audio", "point")
    assert SPECS["tiny-damc"].modalities == ("image", "video", "audio", "point")
    assert SPECS["damc-vision"].components() == [
        "base=hub:lmsys/vicuna-7b-v1.5",
        "experts.image=hub:Adu2021/ModelCompose/multimodal-vicuna-7b-v1.5-vision-damc",
        "encoders.image=hub:openai/clip-vit-large-patch14-336",
    ]
    assert SPECS["blind-vicuna"].components() == ["pretrained=lmsys/vicuna-7b-v1.5"]
    assert check_model_args(SPECS["damc-vision"], {})["encoders"] == {"image": DEFAULT_ENCODERS["image"]}


def test_the_vat_models_use_lambda_0333_as_the_authors_readme():
    for name in ("damc-vat", "naivemc-vat"):
        args = check_model_args(SPECS[name], {})
        assert args["lambdas"] == {"image": 0.333, "video": 0.333, "audio": 0.333}
    assert SPECS["damc-all"].arguments().coefficients() == dict.fromkeys(("image", "video", "audio", "point"), 0.25)


def test_a_models_own_args_win_over_its_defaults_key_by_key(tmp_path):
    (tmp_path / "defaults").mkdir()
    (tmp_path / "defaults" / "family.yaml").write_text(
        "adapter: modelcompose\nargs:\n  base: /base\n  encoders: {image: /clip, audio: /beats}\n"
    )
    (tmp_path / "m.yaml").write_text(
        "name: m\ndefaults: family\ndescription: d\n"
        "args:\n  base: /own-base\n  experts: {image: /e1, audio: /e2}\n  encoders: {audio: /own-beats}\n"
    )
    [spec] = load_model_specs(tmp_path).values()
    assert spec.adapter == "modelcompose" and spec.modalities == ("image", "audio")
    assert spec.args == {
        "base": "/own-base",
        "encoders": {"image": "/clip", "audio": "/own-beats"},
        "experts": {"image": "/e1", "audio": "/e2"},
    }
    assert merge_args(spec.args, {"encoders": {"image": "/x"}})["encoders"] == {"image": "/x", "audio": "/own-beats"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: m\ndescription: d\nadapter: random\nmodalities: [audio]\n", "modalities"),
        ("name: m\ndescription: d\ndefaults: nowhere\n", "nowhere.yaml: no such family defaults file"),
        ("name: m\ndescription: d\n", "no adapter"),
        ("name: m\ndescription: d\nadapter: nope\n", "unknown adapter 'nope'"),
        ("name: m\ndescription: d\nadapter: random\nargs: {temperature: 1}\n", "unknown argument(s) temperature"),
        (
            "name: m\ndescription: d\nadapter: modelcompose\n"
            "args: {base: /b, experts: {image: /e}, modalities: [image]}",
            "`modalities` follow from `experts`",
        ),
    ],
)
def test_a_broken_model_file_is_an_error_naming_it(tmp_path, text, message):
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(ModelError, match="m.yaml") as caught:
        load_model_specs(tmp_path)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("model", "overrides", "message"),
    [
        ("random", {"temperature": 1}, "model random: unknown argument(s) temperature; accepted: seed"),
        ("damc-vision", {"encoders": {"audio": "/b.pt"}}, "encoders.audio not used by this model (it takes image)"),
        ("damc-vision", {"encoders": {"smell": "/x"}}, "encoders.smell: Input should be 'image'"),
        ("damc-vision", {"lambdas": {"image": "high"}}, "lambdas.image: Input should be a valid number"),
        ("damc-va", {"lambdas": {"image": 0.5}}, "no lambda for the video, audio expert(s); a lambda for image"),
        (
            "damc-vision",
            {"composition": "median"},
            "unknown composition 'median'; one of damc, naivemc, task-arithmetic",
        ),
        (
            "damc-vision",
            {"composition": "tsv", "lambdas": {"image": 1.0}},
            "tsv does not weigh the experts by `lambdas`",
        ),
        ("damc-vision", {"composition": "dare", "dare": {"p": 1}}, "composition dare: p: Input should be less than 1"),
        ("damc-vision", {"merged": "/m"}, "takes either `experts` (composed at load time) or `merged`"),
        ("damc-vision", {"experts": None, "merged": "/m"}, "a `merged` checkpoint needs its `modalities`"),
        ("tiny-damc", {"lambdas": {"image": 1.0}}, "no lambda for the video, audio, point expert(s)"),
    ],
)
def test_model_arguments_are_checked_by_name_and_type_without_weights(model, overrides, message):
    with pytest.raises(ModelError) as caught:
        check_model_args(SPECS[model], overrides)
    assert message in str(caught.value)


def test_a_merged_checkpoint_takes_no_composition_arguments():
    with pytest.raises(ValueError, match="`lambdas` is not an argument of a `merged` checkpoint"):
        ModelComposeArguments(base="/b", merged="/m", modalities=("image",), lambdas={"image": 1.0})
    merged = ModelComposeArguments(base="/b", merged="/m", modalities=("audio", "image"), encoders=DEFAULT_ENCODERS)
    assert merged.input_modalities() == ("image", "audio")
    assert merged.components() == ["base=/b", "merged=/m"] + [
        f"encoders.{m}={DEFAULT_ENCODERS[m]}" for m in ("image", "audio")
    ]


def test_an_unknown_argument_fails_before_any_weight_is_looked_for():
    with pytest.raises(ModelError, match="unknown argument"):
        build_model(SPECS["damc-vat"], {"temprature": 0}, runtime=None)


def test_auto_dtype_is_the_adapters_on_cuda_and_float32_elsewhere():
    assert resolve_dtype(SPECS["damc-vat"], "cuda", "auto") == "float16"
    assert resolve_dtype(SPECS["tiny-damc"], "cuda:1", "auto") == "float16"
    assert resolve_dtype(SPECS["blind-vicuna"], "cuda", "auto") == "bfloat16"
    assert resolve_dtype(SPECS["random"], "cuda", "auto") == "bfloat16"
    assert {resolve_dtype(spec, "cpu", "auto") for spec in SPECS.values()} == {"float32"}
    assert resolve_dtype(SPECS["damc-vat"], "cuda", "bfloat16") == "bfloat16"


def test_list_models_lists_everything_without_importing_torch():
    script = (
        "import sys; from mcub.eval import main; main(['--list-models']); "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["damc-vision", "image"] for line in lines)
    assert any(line.split()[:2] == ["damc-vat", "image+video+audio"] for line in lines)
    assert sum("encoders.image=hub:openai/clip-vit-large-patch14-336" in line for line in lines) == 10


def test_checking_arguments_imports_no_torch():
    script = (
        "import sys; from mcub.models.base import check_model_args, load_model_specs, resolve_dtype; "
        "specs = load_model_specs(); [check_model_args(s, {}) for s in specs.values() if not s.arguments().missing()]; "
        "check_model_args(specs['openai-compatible'], {'model': 'm', 'base_url': 'http://127.0.0.1:1/v1'}); "
        "resolve_dtype(specs['damc-vat'], 'cuda', 'auto'); "
        "assert 'torch' not in sys.modules and 'aiohttp' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
