"""Perturbation probes and sentence attribution: every variant scored as scoring it alone would, in few passes."""
import pytest

from starling_demo import probes
from starling_demo.edits import EDITS, custom_edit, pick_edits, units, without
from starling_demo.engine import Engine

MESSAGES = [{"role": "user", "content": "How do starlings flock?"}]
CANDIDATES = [
    "Starlings flock in **murmurations**. Each bird follows its seven nearest neighbours.\n\n"
    "- They turn together.\n- They avoid falcons.\n\nIt is a beautiful sight.",
    "I think they just fly around. Dr. Smith studied it in 1999.",
    "```python\nbirds = flock(1000)\n```\nThat is how a simulation starts.",
]


@pytest.fixture(scope="module", params=[("tiny", "card"), ("tiny", "last-token"), ("tiny-34b", None)],
                ids=["rm7b-card", "rm7b-last-token", "rm34b"])
def rm(request):
    name, readout = request.param
    engine = Engine("tiny", name, "fp32", "cpu")
    return engine, name, readout


def alone(engine, name, readout, text, rm_format="rlhf"):
    return engine.score(MESSAGES, [text], name, readout, rm_format).rewards[0]


def test_every_variant_scores_as_it_would_alone(rm):
    engine, name, readout = rm
    edits = pick_edits(None, custom_edit(prefix="Sure! ", find="birds", replace="starlings"))
    run = engine.probe(MESSAGES, CANDIDATES, edits, name, readout)
    assert [c["candidate"] for c in run["candidates"]] == [0, 1, 2]
    for text, result in zip(CANDIDATES, run["candidates"]):
        assert result["reward"] == alone(engine, name, readout, text)  # bit for bit: batch invariance
        assert [e["edit"] for e in result["edits"]] == [*EDITS, "custom"]
        for edit, entry in zip(edits, result["edits"]):
            assert entry["text"] == edit.apply(text)
            assert entry["reward"] == alone(engine, name, readout, entry["text"])
            assert entry["delta"] == pytest.approx(entry["reward"] - result["reward"], abs=1e-9)
            if not entry["changed"]:
                assert entry["text"] == text and entry["delta"] == 0


def test_rewardbench_text_is_probed_in_its_own_format():
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    run = engine.probe(MESSAGES, CANDIDATES[:1], [EDITS["refusal"]], readout="last-token", rm_format="rewardbench")
    refusal = run["candidates"][0]["edits"][0]
    assert run["rm_format"] == "rewardbench" and refusal["reward"] == alone(
        engine, "tiny", "last-token", refusal["text"], "rewardbench")


def test_probes_encode_the_conversation_once_a_batch_not_once_per_variant(monkeypatch):
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    rm, batches, passes = engine.rm(), [], []
    values, forward = rm.values, rm.model.forward
    monkeypatch.setattr(rm, "values", lambda groups, *args: batches.append(groups) or values(groups, *args))
    monkeypatch.setattr(rm.model, "forward", lambda ids, *a, **k: passes.append(ids.shape) or forward(ids, *a, **k))
    candidates = [f"Reply number {k}. It has two sentences." for k in range(8)]
    run = engine.probe(MESSAGES, candidates, list(EDITS.values()))
    # Each distinct text once: some edits give the same text (a refusal is one text for all), some change nothing.
    scored = len({*candidates, *(e["text"] for c in run["candidates"] for e in c["edits"])})
    # In batches of the engine's shared budget (2,048 ids on a CPU: two here).
    assert scored < 8 * 11 and 1 < len(batches) < 4 and sum(len(group) for [group] in batches) == scored
    # The conversation once a batch, then each variant in a pass of its own (batch invariance:
    # `value_passes.invariant_values`).
    assert len(passes) == len(batches) + scored and all(shape[0] == 1 for shape in passes)


def test_attribution_leaves_each_unit_out(rm):
    engine, name, readout = rm
    text = CANDIDATES[0]
    result = engine.attribute(MESSAGES, text, name, readout)
    parts = units(text)
    assert [u["kind"] for u in result["units"]] == ["sentence", "sentence", "item", "item", "sentence"]
    assert result["reward"] == alone(engine, name, readout, text)
    for unit, entry in zip(parts, result["units"]):
        assert (entry["start"], entry["end"]) == (unit.start, unit.end)
        expected = alone(engine, name, readout, without(text, unit))
        assert entry["reward_without"] == expected
        assert entry["drop"] == pytest.approx(result["reward"] - entry["reward_without"], abs=1e-9)
    code = engine.attribute(MESSAGES, CANDIDATES[2], name, readout)["units"]
    assert [u["kind"] for u in code] == ["code", "sentence"] and code[0]["text"].startswith("```python")


def test_mean_interval_and_aggregate():
    mean, low, high = probes.mean_interval([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and 1.0 <= low < mean < high <= 6.0
    assert probes.mean_interval([1.0, 2.0, 3.0, 6.0]) == (mean, low, high)  # seeded: the same every time
    run = {"candidates": [
        {"edits": [{"edit": "a", "description": "A", "changed": True, "delta": 1.0},
                   {"edit": "b", "description": "B", "changed": False, "delta": 0.0}]},
        {"edits": [{"edit": "a", "description": "A", "changed": True, "delta": 3.0},
                   {"edit": "b", "description": "B", "changed": True, "delta": -2.0}]}]}
    rows = probes.aggregate([run])
    assert [(r["edit"], r["mean"], r["n"]) for r in rows] == [("a", 2.0, 2), ("b", -2.0, 1)]
    assert rows[1]["low"] is None and rows[0]["low"] <= 2.0 <= rows[0]["high"]
