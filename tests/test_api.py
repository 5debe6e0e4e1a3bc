"""API tests: the launched demo driven through gradio_client, as a script or notebook would use it."""
import json

import pytest
from conftest import SETTINGS
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

STATUS, TURN = 1, 2  # positions in the outputs of chat, score, add_candidate and use_candidate
SKIPPED = {"__type__": "update"}  # what an output the app left alone (gr.skip) comes back as


@pytest.fixture
def client(app_url):
    client = Client(app_url, verbose=False)
    yield client
    client.close()


def test_chat_score_pick_and_export(client):
    outputs = client.predict("Hello", **SETTINGS, api_name="/chat")
    turn = outputs[TURN]
    assert "Scored 4 candidates" in outputs[STATUS] and len(turn["rewards"]) == 4
    assert turn["ranking"][0] == max(range(4), key=turn["rewards"].__getitem__)

    edited = {f"candidate_{i + 1}": text for i, text in enumerate(turn["candidates"])}
    edited["candidate_2"] = "An edited second reply."
    rescored = client.predict(rm="tiny", readout="card", rm2="none", **edited, api_name="/score")[TURN]
    assert rescored["candidates"][1] == "An edited second reply." and rescored["rewards"][0] == turn["rewards"][0]

    added = client.predict("My own reply.", "tiny", "card", "none", *rescored["candidates"], api_name="/add_candidate")
    assert added[TURN]["candidates"][-1] == "My own reply." and len(added[TURN]["rewards"]) == 5

    facts = client.predict(1.0, api_name="/insight")
    assert facts["ranking"] == added[TURN]["ranking"] and len(facts["traces"]) == 5
    assert [len(t["values"]) for t in facts["traces"]] == added[TURN]["lengths"]
    p = facts["win_probabilities"]
    assert len(p) == 5 and p[0][0] == 0.5 and abs(p[1][3] + p[3][1] - 1) < 1e-12

    worst = added[TURN]["ranking"][-1]
    picked = client.predict(worst + 1, api_name="/use_candidate")
    assert picked[TURN]["chosen"] == worst and "picked by you" in json.dumps(picked[0])

    with open(client.predict(api_name="/export_pairs"), encoding="utf-8") as f:
        assert len(f.readlines()) == 4
    with open(client.predict(api_name="/export_nectar"), encoding="utf-8") as f:
        record = json.loads(f.read())
    assert record["answers"][worst]["chosen"] and record["num_responses"] == 5


def test_rewardbench_format_through_the_api(client):
    """rm_format comes last, after the cards, so calls written before it existed still work (the test above)."""
    turn = client.predict("Hello", **(SETTINGS | {"rm_format": "rewardbench", "readout": "last-token"}),
                          api_name="/chat")[TURN]
    assert turn["rm_format"] == "rewardbench" and turn["readout"] == "last-token"
    cards = {f"candidate_{i + 1}": text for i, text in enumerate(turn["candidates"])}
    rlhf = client.predict(rm="tiny", readout="last-token", rm2="none", **cards, api_name="/score")[TURN]
    assert rlhf["rm_format"] == "rlhf" and rlhf["rewards"] != turn["rewards"]
    again = client.predict(rm="tiny", readout="last-token", rm2="none", **cards, rm_format="rewardbench",
                           api_name="/score")[TURN]
    assert again["rewards"] == turn["rewards"]
    with pytest.raises(AppError, match="'bench' .* is not in the list of choices: \\['rlhf', 'rewardbench'\\]"):
        client.predict(rm="tiny", readout="card", rm2="none", **cards, rm_format="bench", api_name="/score")


def test_streaming_and_separate_sessions(client, app_url):
    job = client.submit("Stream please", **SETTINGS, api_name="/chat")
    updates = list(job)
    assert len(updates) > 3 and "Scored" in job.result()[STATUS]
    other = Client(app_url, verbose=False)  # a new client is a new visitor with its own conversation
    try:
        assert other.predict(1, api_name="/use_candidate")[TURN] == SKIPPED  # nothing to pick from: warned, nothing changed
        assert len(other.predict("Two only", **(SETTINGS | {"n": 2}), api_name="/chat")[TURN]["candidates"]) == 2
        assert client.predict(4, api_name="/use_candidate")[TURN]["chosen"] == 3
    finally:
        other.close()


def test_bad_message_is_rejected_without_losing_the_turn(client):
    first = client.predict("Hi", **SETTINGS, api_name="/chat")[TURN]
    outputs = client.predict("   ", **SETTINGS, api_name="/chat")
    assert outputs[TURN] == SKIPPED
    assert client.predict(1, api_name="/use_candidate")[TURN]["candidates"] == first["candidates"]


def test_evaluate_endpoint(client, tmp_path):
    path = tmp_path / "eval.jsonl"
    row = {"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Bye."}
    path.write_text(json.dumps(row) + "\n{broken\n", encoding="utf-8")
    report, errors, status, accuracy, margins, rows = client.predict(handle_file(str(path)), "tiny", "card",
                                                                     api_name="/evaluate")
    assert report["data"][0][:2] == ["all rows", 1] and errors.startswith("line 2") and "Evaluated 1 rows" in status
    assert json.loads(open(rows, encoding="utf-8").readline())["line"] == 1 and accuracy["type"] == "altair"
    # A second reward model on the same rows: each row gets its rewards too, the status compares the two.
    *_, status, _, _, rows = client.predict(handle_file(str(path)), "tiny", "card", "rlhf", "tiny-34b",
                                            api_name="/evaluate")
    assert "**tiny-34b** against **tiny**" in status and "rewards_b" in json.loads(open(rows).readline())


def test_cards_left_out_leave_the_turn_as_it_stands_and_cards_past_it_are_refused(client):
    """A script that sends only some cards (or none) scores the turn with the others as they are, never as empty
    replies; a text in a card past the turn's candidates is refused with a sentence, the turn unchanged."""
    turn = client.predict("Hello", **SETTINGS, api_name="/chat")[TURN]
    again = client.predict(rm="tiny", readout="card", rm2="none", api_name="/score")[TURN]
    assert again["candidates"] == turn["candidates"] and again["rewards"] == turn["rewards"]
    edited = client.predict(rm="tiny", readout="card", rm2="none", candidate_3="A third, rewritten.",
                            api_name="/score")[TURN]
    assert edited["candidates"] == [*turn["candidates"][:2], "A third, rewritten.", turn["candidates"][3]]
    added = client.predict("My own reply.", "tiny", "card", "none", api_name="/add_candidate")[TURN]
    assert added["candidates"] == [*edited["candidates"], "My own reply."]
    refused = client.predict(rm="tiny", readout="card", rm2="none", candidate_7="Out of range.", api_name="/score")
    assert all(o["__type__"] == "update" and "value" not in o | o.get("props", {}) for o in refused)  # a warning
    # says why (tests/test_hardening.py), and the turn is as it was
    assert client.predict(1, api_name="/use_candidate")[TURN]["candidates"] == added["candidates"]


def test_a_candidate_number_reaches_the_app_as_sent(client):
    """1.5 is not rounded to 2 on its way in (the app refuses it with a sentence, the turn unchanged); 2 picks #2."""
    client.predict("Hello", **SETTINGS, api_name="/chat")
    refused = client.predict(1.5, api_name="/use_candidate")
    assert all(o["__type__"] == "update" and "value" not in o | o.get("props", {}) for o in refused)
    assert client.predict(2, api_name="/use_candidate")[TURN]["chosen"] == 1


def test_the_readmes_curl_example_works_as_written(app_url):
    """The REST example in README, run by bash and curl as written, but for the address and the models (this server
    offers the tiny ones): a first turn, its four candidates scored."""
    import re
    import shutil
    import subprocess
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    [example] = re.findall(r"```bash\n(curl .*?)```", readme, re.S)
    example = example.replace("http://127.0.0.1:7860/", app_url).replace('"starling-lm-7b-beta"', '"tiny"')
    example = example.replace('"starling-rm-7b-alpha"', '"tiny"')
    assert shutil.which("curl"), "the REST example needs curl"
    stream = subprocess.run(["bash", "-c", example], capture_output=True, text=True, timeout=120).stdout
    assert "event: complete" in stream
    outputs = json.loads(stream.split("event: complete\n")[1].split("data: ", 1)[1].splitlines()[0])
    session, conversation, status, turn = outputs[:4]
    assert session is None and len(conversation) == 2 and "Scored 4 candidates" in status
    assert len(turn["candidates"]) == 4 and len(turn["rewards"]) == 4
