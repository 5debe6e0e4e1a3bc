"""Loading both reward-model layouts and the LM, in 4-bit and fp32, and failing clearly on bad input."""
import json
import shutil

import pytest
import torch
from bitsandbytes.nn import Linear4bit
from safetensors.torch import load_file

from starling_demo import loading
from starling_demo.loading import LoadError, fetch, load_lm, load_rm
from starling_demo.presets import lm_preset, rm_preset
from starling_demo.tiny import tiny_checkpoint


@pytest.mark.parametrize("precision", ["fp32", "4bit"])
def test_rm_7b_layout_loads_head_from_pytorch_checkpoint(precision):
    rm = load_rm(rm_preset("tiny"), precision, "cpu")
    saved = torch.load(tiny_checkpoint("rm-7b") / "pytorch_model.bin")
    assert torch.equal(rm.model.v_head.weight, saved["v_head.weight"])
    assert rm.model.v_head.weight.dtype == torch.float32
    q_proj = rm.model.transformer.layers[0].self_attn.q_proj
    assert isinstance(q_proj, Linear4bit) == (precision == "4bit")
    if precision == "fp32":
        assert torch.equal(q_proj.weight, saved["transformer.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize("precision", ["fp32", "4bit"])
def test_rm_34b_layout_loads_sharded_safetensors(precision):
    folder = tiny_checkpoint("rm-34b")
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    rm = load_rm(rm_preset("tiny-34b"), precision, "cpu")
    shard = next(p for p in folder.glob("*.safetensors") if "v_head.weight" in load_file(p))
    assert torch.equal(rm.model.v_head.weight, load_file(shard)["v_head.weight"])


@pytest.mark.parametrize("precision", ["fp32", "4bit"])
def test_lm_loads_with_32002_tokens(precision):
    lm = load_lm(lm_preset("tiny"), precision, "cpu")
    assert len(lm.tokenizer) == lm.model.config.vocab_size == 32002
    assert lm.tokenizer.convert_tokens_to_ids("<|end_of_turn|>") == 32000
    assert isinstance(lm.model.lm_head, torch.nn.Linear) and not isinstance(lm.model.lm_head, Linear4bit)


def test_a_checkpoint_without_v_head_fails_loudly(tmp_path):
    folder = tmp_path / "rm"
    shutil.copytree(tiny_checkpoint("rm-7b"), folder)
    state = torch.load(folder / "pytorch_model.bin")
    del state["v_head.weight"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(LoadError, match="v_head.weight"):
        load_rm(rm_preset(str(folder), "starling-rm-7b-alpha"), "fp32", "cpu")


def test_local_directories_with_a_pt_checkpoint_load_like_the_card_each_their_own(tmp_path):
    heads = []
    for name, scale in (("a", 1.0), ("b", 2.0)):  # two folders with the same name, different weights
        folder = tmp_path / name / "rm"
        shutil.copytree(tiny_checkpoint("rm-7b"), folder)
        state = torch.load(folder / "pytorch_model.bin")
        state["v_head.weight"] = state["v_head.weight"] * scale
        torch.save(state, folder / "model.pt")
        (folder / "pytorch_model.bin").unlink()
        heads.append(load_rm(rm_preset(str(folder), "starling-rm-7b-alpha"), "fp32", "cpu").model.v_head.weight)
    assert heads[0].shape == (1, 64) and torch.allclose(heads[1], 2 * heads[0])


def test_bad_directories_and_names(tmp_path):
    with pytest.raises(ValueError, match="--reward-kind"):
        rm_preset(str(tmp_path))
    with pytest.raises(LoadError, match="no config.json"):
        load_rm(rm_preset(str(tmp_path), "starling-rm-34b"), "fp32", "cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(LoadError):
        load_rm(rm_preset(str(tmp_path), "starling-rm-7b-alpha"), "fp32", "cpu")
    with pytest.raises(ValueError, match="Unknown language model"):
        lm_preset("gpt-5")
    with pytest.raises(LoadError, match="precision"):
        load_lm(lm_preset("tiny"), "int3", "cpu")


@pytest.mark.parametrize("with_added_tokens_decoder", [True, False])
def test_alpha_sep_token_is_dropped(tmp_path, with_added_tokens_decoder):
    folder = tmp_path / "alpha"
    shutil.copytree(tiny_checkpoint("lm"), folder)
    # As in the alpha repo: <sep> named in both files, and in neither vocabulary.
    config = json.loads((folder / "tokenizer_config.json").read_text())
    if not with_added_tokens_decoder:  # then transformers takes special_tokens_map.json's <sep> over sep_token=None
        config.pop("added_tokens_decoder")
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"sep_token": "<sep>"}))
    specials = json.loads((folder / "special_tokens_map.json").read_text())
    (folder / "special_tokens_map.json").write_text(json.dumps(specials | {"sep_token": "<sep>"}))
    with pytest.raises(LoadError, match="32003 tokens"):
        load_lm(lm_preset(str(folder)), "fp32", "cpu")
    alpha = loading.LMPreset(str(folder), str(folder), drop_sep_token=True)
    assert len(load_lm(alpha, "fp32", "cpu").tokenizer) == 32002


def test_no_network_and_nothing_cached_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(LoadError, match="tiny presets"):
        fetch("berkeley-nest/Starling-RM-7B-alpha", ["*.json"])


def test_gated_repo_without_token_says_set_hf_token(monkeypatch):
    import httpx
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        response = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co/api/models/x"))
        raise GatedRepoError("401 Client Error: access to model Nexusflow/Starling-RM-34B is restricted",
                             response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(LoadError, match="HF_TOKEN") as error:
        fetch("Nexusflow/Starling-RM-34B", ["*.json"])
    assert "https://huggingface.co/Nexusflow/Starling-RM-34B" in str(error.value)


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        assert loading.resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(LoadError, match="--device cpu"):
            loading.resolve_device("cuda")


def test_4bit_is_nf4_without_double_quantisation_as_the_documents_say():
    from pathlib import Path

    from starling_demo.loading import precision_kwargs

    quant = precision_kwargs("4bit", "cpu", ["lm_head"])["quantization_config"]
    assert quant.bnb_4bit_quant_type == "nf4" and quant.bnb_4bit_use_double_quant is False
    results = (Path(__file__).resolve().parent.parent / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    assert "double quantisation off" in results and "which the loader leaves off" in results


def test_loading_on_a_gpu_turns_cudnn_attention_off_and_leaves_the_cpu_alone(monkeypatch):
    """torch puts cuDNN's attention first on Hopper and Blackwell GPUs, and it builds a plan for every new shape: the
    loaders turn it off where they put a model on a GPU (`attention_without_plans`), and on a CPU touch nothing."""
    calls = []
    monkeypatch.setattr(torch.backends.cuda, "enable_cudnn_sdp", calls.append)
    loading.attention_without_plans("cuda")
    assert calls == [False]
    seen = []
    monkeypatch.setattr(loading, "attention_without_plans", seen.append)
    load_lm(lm_preset("tiny"), "fp32", "cpu")
    load_rm(rm_preset("tiny"), "fp32", "cpu")
    assert seen == ["cpu", "cpu"] and calls == [False]  # each loader asks, for the device it resolved
