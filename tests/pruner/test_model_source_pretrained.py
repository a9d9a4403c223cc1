"""`--model NAME` for a timm name starts from timm's trained weights unless --no-pretrained says otherwise.

timm itself does not import beside this environment's CPU torch (the real-timm round trip runs in .venv-timm, see
test_pruner_timm.py), so these tests put a recording stand-in for `timm.create_model` in `sys.modules`: what they
check is which arguments `build_model` hands to timm and how it reports timm's failure, not timm.
"""

from __future__ import annotations

import sys
import types

import pytest

from pruner.model_source import build_model


class Offline(RuntimeError):
    pass


@pytest.fixture
def timm_calls(monkeypatch):
    calls: list[dict] = []

    def create_model(name, **kwargs):
        calls.append({"name": name, **kwargs})
        raise Offline("cannot reach the Hugging Face hub")

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    return calls


def test_a_timm_name_asks_for_trained_weights_by_default(timm_calls):
    with pytest.raises(ValueError, match="--no-pretrained starts from random weights") as info:
        build_model("deit_base_patch16_224", num_classes=1000)
    assert timm_calls == [{"name": "deit_base_patch16_224", "pretrained": True, "num_classes": 1000, "img_size": 224}]
    assert "Offline: cannot reach the Hugging Face hub" in str(info.value)
    assert "\n" not in str(info.value)  # one line for the CLI's `error:`


def test_no_pretrained_asks_timm_for_random_weights(timm_calls):
    with pytest.raises(ValueError) as info:
        build_model("deit_base_patch16_224", num_classes=10, image_size=64, pretrained=False)
    assert timm_calls[0]["pretrained"] is False and timm_calls[0]["img_size"] == 64
    assert "--no-pretrained" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "hint"),
    [("deit-small", "deit_small_patch16_224"), ("custom:emb=64,depth=2,heads=2,head_dim=16,mlp=128", None)],
)
def test_pretrained_is_refused_for_a_model_whose_weights_are_not_timms(timm_calls, name, hint):
    with pytest.raises(ValueError, match="--pretrained applies to timm model names") as info:
        build_model(name, num_classes=10, pretrained=True)
    assert (hint in str(info.value)) if hint else ("timm name" not in str(info.value).split(";", 1)[1])
    assert timm_calls == []
    assert build_model(name, num_classes=10, image_size=32, patch_size=8).config.num_classes == 10  # default: fine


def test_the_prune_command_passes_no_pretrained_through(timm_calls, tmp_path):
    from pruner.__main__ import main
    from tests.pruner.image_folder_data import make_image_folder, write_small_table

    data = make_image_folder(tmp_path / "data")
    table = tmp_path / "t.json"
    write_small_table(table)
    args = ["prune", "--model", "vit_tiny_patch16_224", "--data", str(data), "--table-file", str(table),
            "--target", "0.5", "--out", str(tmp_path / "out"), "--image-size", "32", "--batch-size", "8",
            "--no-pretrained"]  # fmt: skip
    assert main(args) == 2
    assert timm_calls and timm_calls[0]["pretrained"] is False
    timm_calls.clear()
    assert main(args[:-1]) == 2
    assert timm_calls and timm_calls[0]["pretrained"] is True
