"""convert-rm: both reward-model layouts to a LlamaForSequenceClassification checkpoint, and refusals."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, LlamaForSequenceClassification

from starling_demo import convert
from starling_demo.cli import main
from starling_demo.convert import convert_rm
from starling_demo.loading import LoadError, load_rm
from starling_demo.presets import rm_preset
from starling_demo.scoring import score
from starling_demo.templates import reward_inputs
from starling_demo.tiny import SERVABLE_SHAPE, tiny_checkpoint, write_tiny

SINGLE = [{"role": "user", "content": "Hi"}]
MULTI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
         {"role": "user", "content": "How are   you?\n    return x"}]
CANDIDATES = ["Hello", "Fine, thanks.\n\n  And you?"]


@pytest.mark.parametrize("name", ["tiny", "tiny-34b"])
def test_converted_model_gives_the_projects_last_token_reward(tmp_path, monkeypatch, name):
    monkeypatch.setattr(convert, "MAX_SHARD_SIZE", "2MB")  # several shards and an index, as a real model gets
    summary = convert_rm(name, tmp_path / "out")
    assert summary.pop("shards") > 1 and (tmp_path / "out" / "model.safetensors.index.json").exists()
    assert summary == {"destination": str(tmp_path / "out"), "tensors": 21, "dtype": "float32", "hidden_size": 64,
                       "layers": 2}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1  # num_labels
    assert config["pad_token_id"] == 0 and config["dtype"] == "float32"
    model, info = LlamaForSequenceClassification.from_pretrained(tmp_path / "out", dtype=torch.float32,
                                                                 output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    rm = load_rm(rm_preset(name), "fp32", "cpu")
    assert torch.equal(model.score.weight, rm.model.v_head.weight)
    for messages in (SINGLE, MULTI):
        scores = score(rm, messages, CANDIDATES, readout="last-token")
        encoded = reward_inputs(rm.tokenizer, rm.preset.template, messages, CANDIDATES, rm.preset.add_bos)
        assert [e.text for e in encoded] == scores.texts
        with torch.inference_mode():
            rewards = [model(torch.tensor([e.ids])).logits[0, 0].item() for e in encoded]
        assert rewards == pytest.approx(scores.rewards, abs=1e-5)


@pytest.mark.parametrize("name, marker", [("tiny", "[INST]"), ("tiny-34b", "<|im_start|>")])
def test_auto_tokenizer_of_the_converted_model_gives_the_projects_ids(tmp_path, name, marker):
    convert_rm(name, tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    rm = load_rm(rm_preset(name), "fp32", "cpu")
    for messages in (SINGLE, MULTI):
        for e in reward_inputs(rm.tokenizer, rm.preset.template, messages, CANDIDATES, rm.preset.add_bos):
            assert marker in e.text
            assert tokenizer(e.text, add_special_tokens=False).input_ids == e.ids
            # As a server tokenises a text: the BOS (RM-7B's `<s>`, none for RM-34B) comes from the tokenizer.
            assert tokenizer(e.text.removeprefix("<s>")).input_ids == e.ids
    assert tokenizer.pad_token_id == 0


def test_a_servable_shape_written_locally_converts(tmp_path):
    folder = write_tiny("rm-7b", tmp_path / "rm", **SERVABLE_SHAPE)
    summary = convert_rm(str(folder), tmp_path / "out", kind="starling-rm-7b-alpha")
    assert (summary["hidden_size"], summary["layers"]) == (128, 2)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 64  # vLLM's CPU attention needs head_dim 64
    model = LlamaForSequenceClassification.from_pretrained(tmp_path / "out", dtype=torch.float32)
    state = torch.load(folder / "pytorch_model.bin")
    assert torch.equal(model.score.weight, state["v_head.weight"])
    assert torch.equal(model.model.layers[1].mlp.down_proj.weight, state["transformer.layers.1.mlp.down_proj.weight"])


def without_7b(tmp_path, key):
    folder = tmp_path / "rm"
    shutil.copytree(tiny_checkpoint("rm-7b"), folder)
    state = torch.load(folder / "pytorch_model.bin")
    del state[key]
    torch.save(state, folder / "pytorch_model.bin")
    return folder, "starling-rm-7b-alpha"


def without_34b(tmp_path, key):
    folder = tmp_path / "rm"
    shutil.copytree(tiny_checkpoint("rm-34b"), folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = folder / index["weight_map"].pop(key)
    save_file({k: v for k, v in load_file(shard).items() if k != key}, shard, metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder, "starling-rm-34b"


@pytest.mark.parametrize("edit", [without_7b, without_34b])
@pytest.mark.parametrize("key", ["v_head.weight", "transformer.layers.1.mlp.down_proj.weight"])
def test_a_missing_tensor_is_named_and_nothing_is_written(tmp_path, edit, key):
    folder, kind = edit(tmp_path, key)
    with pytest.raises(LoadError, match=f"lacks {key.replace('.', '[.]')}: it is not a complete"):
        convert_rm(str(folder), tmp_path / "out", kind=kind)
    assert [p.name for p in tmp_path.iterdir() if p.name != "views"] == ["rm"]  # no destination, no staging folder


def test_an_unexpected_tensor_or_a_used_destination_is_refused(tmp_path):
    folder, kind = without_7b(tmp_path, "model.lm_head.weight")  # an ignored duplicate: converts
    state = torch.load(folder / "pytorch_model.bin")
    torch.save(state | {"transformer.extra.weight": torch.zeros(2)}, folder / "pytorch_model.bin")
    with pytest.raises(LoadError, match="does not: transformer[.]extra[.]weight;"):
        convert_rm(str(folder), tmp_path / "out", kind=kind)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("mine")
    with pytest.raises(LoadError, match="already exists and is not an empty folder"):
        convert_rm("tiny", tmp_path / "used")
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["file"]
    (tmp_path / "empty").mkdir()
    assert convert_rm("tiny", tmp_path / "empty")["tensors"] == 21


def test_cli_prints_the_summary_or_an_error(tmp_path, capsys):
    code = main(["convert-rm", "tiny-34b", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["destination"] == str(tmp_path / "out") and len(out.splitlines()) == 1
    assert (tmp_path / "out" / "model.safetensors").exists()
    code = main(["convert-rm", str(tmp_path / "nowhere"), str(tmp_path / "out2")])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.startswith("error: Unknown reward model") and "\n" == err[-1]
    code = main(["convert-rm", str(tmp_path / "out"), str(tmp_path / "out3")])  # a directory needs its kind
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and "--reward-kind" in err and not (tmp_path / "out3").exists()
