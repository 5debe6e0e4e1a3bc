"""The vLLM backend against REAL vLLM servers (the CPU build, tests/vllm_env.sh), serving tiny models written here."""
import json
import threading
import time

import pytest
from gradio_client import Client
from vllm_servers import serve_tiny

from starling_demo.backends import vllm
from starling_demo.cli import main
from starling_demo.engine import Engine, Settings
from starling_demo.loading import LoadError
from starling_demo.templates import openchat_prompt

KIND = "starling-rm-7b-alpha"  # the tiny RM is in RM-7B-alpha's layout
CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is the capital of France?"}],
    "multi": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"},
              {"role": "user", "content": "Write a haiku about **rain**.\n\n- short\n- calm"}],
    # Past the RM's 2,048 tokens: the project truncates, and the server must score exactly the ids sent.
    "long": [{"role": "user", "content": "Summarise this: " + "The quick brown fox jumps over the lazy dog. " * 260}],
}
REPLIES = ["Paris.", "The capital of France is Paris, a city on the Seine.", "I don't know.\n\n```python\nprint(1)\n```"]


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """An LM server, an RM server with per-token values and one with the last token's value only, all real."""
    servers = serve_tiny(tmp_path_factory.mktemp("vllm"))
    yield servers
    servers.stop()


def vllm_engine(served, rm_url=None, **kwargs) -> Engine:
    return Engine(str(served.lm), str(served.rm), "fp32", "cpu", rm_kind=KIND, backend="vllm",
                  lm_url=served.lm_server.url, rm_url=rm_url or served.rm_server.url, **kwargs)


@pytest.fixture(scope="module")
def local(served):
    return Engine(str(served.lm), str(served.rm), "fp32", "cpu", rm_kind=KIND)


@pytest.fixture(scope="module")
def remote(served):
    return vllm_engine(served)


def test_the_server_gets_exactly_our_prompt_ids_and_streams_n_candidates(remote, monkeypatch):
    echoed = []

    def take(state, choice, prompt_ids, stop_ids):
        if choice.get("prompt_token_ids") is not None:
            echoed.append(choice["prompt_token_ids"])
        return real_take(state, choice, prompt_ids, stop_ids)

    real_take = vllm.take
    monkeypatch.setattr(vllm, "take", take)
    messages = CONVERSATIONS["multi"]
    steps = list(remote.generate(messages, Settings(n=4, max_new_tokens=12, seed=1)))
    ours = openchat_prompt(remote.lm().tokenizer, messages).ids
    assert echoed == [ours] * 4  # each candidate's first chunk echoes the prompt the server decoded
    assert steps[-1].prompt.ids == ours and steps[-1].token_counts == [12] * 4
    assert steps[-1].finished == ["length"] * 4 and len(set(steps[-1].texts)) == 4
    assert len(steps) > 12  # streamed token by token, not in one piece
    assert [len(t) for t in steps[0].texts] != [len(t) for t in steps[-1].texts]


def test_candidates_stop_at_end_of_turn_without_it(remote, monkeypatch):
    """The tiny random model almost never ends a turn itself: a logit bias toward id 32000 makes it."""
    stream = remote.lm().server.client.stream

    def biased(method, path, json):
        return stream(method, path, json=json | {"logit_bias": {"32000": 6.0}})

    monkeypatch.setattr(remote.lm().server.client, "stream", biased)
    final = list(remote.generate(CONVERSATIONS["single"], Settings(n=4, max_new_tokens=200, seed=2)))[-1]
    assert final.finished == ["stop"] * 4 and max(final.token_counts) < 200
    assert not any("<|end_of_turn|>" in text for text in final.texts)


def test_a_seeded_turn_repeats(remote):
    run = lambda seed: list(remote.generate(CONVERSATIONS["single"], Settings(n=3, max_new_tokens=16, seed=seed)))[-1]
    first = run(5)
    assert run(5).texts == first.texts and run(6).texts != first.texts and first.seed == 5


def test_stop_cancels_the_request_on_the_server(remote, served):
    before = served.lm_server.metric("vllm:generation_tokens_total")
    steps = remote.generate(CONVERSATIONS["single"], Settings(n=4, max_new_tokens=900, seed=3))
    for _, step in zip(range(5), steps):
        pass
    assert served.lm_server.metric("vllm:num_requests_running") == 4
    steps.close()  # what Stop does: the turn's loop leaves the generator, which closes the connection
    # The server notices the closed connection at its next token and aborts; it signals that only through its
    # gauge, so poll that, for at most 10 s (a full 4 x 900-token run takes far longer here).
    deadline = time.monotonic() + 10
    while served.lm_server.metric("vllm:num_requests_running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.lm_server.metric("vllm:num_requests_running") == 0
    assert served.lm_server.metric("vllm:generation_tokens_total") - before < 4 * 900 / 4


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_vllm_rewards_equal_the_in_process_last_token_rewards(name, local, remote, served):
    messages = CONVERSATIONS[name]
    here = local.score(messages, REPLIES, readout="last-token", traces=True)
    there = remote.score(messages, REPLIES, traces=True)  # the preset's card read-out is asked for: not given
    assert there.rewards == pytest.approx(here.rewards, abs=1e-4)
    assert there.readout == "last-token" and "index 2047" in there.note and here.note is None
    assert there.lengths == here.lengths and there.truncated == here.truncated
    assert all(a == pytest.approx(b, abs=1e-4) for a, b in zip(there.traces, here.traces))
    classify = vllm_engine(served, rm_url=served.classify_server.url).score(messages, REPLIES, traces=True)
    assert classify.rewards == pytest.approx(here.rewards, abs=1e-4) and classify.traces == [[]] * 3
    if name == "long":
        assert all(here.truncated)


def test_a_server_with_another_vocabulary_or_none_is_refused(served):
    # The RM's tokenizer has no <|end_of_turn|>: the LM's probe text gives other ids there.
    wrong = Engine(str(served.lm), str(served.rm), "fp32", "cpu", rm_kind=KIND, backend="vllm",
                   lm_url=served.rm_server.url)
    with pytest.raises(LoadError, match="whose vocabulary is not that of .*probe text's token"):
        wrong.lm()
    not_an_rm = vllm_engine(served, rm_url=served.lm_server.url)
    with pytest.raises(LoadError, match="not a one-output reward model: convert the RM"):
        not_an_rm.rm()
    nowhere = vllm_engine(served, rm_url="http://127.0.0.1:9")
    with pytest.raises(LoadError, match="Cannot use the vLLM server at http://127.0.0.1:9 for the reward model"):
        nowhere.rm()


def test_eight_visitors_at_once_keep_their_own_conversations(served):
    from starling_demo.ui import build_demo, launch_kwargs

    engine = vllm_engine(served)
    # Each of the first 8 turns waits in its generation until all 8 are generating: served one at a time, they
    # would break the barrier (its timeout) instead.
    together, generate = threading.Barrier(8, timeout=120), engine.generate
    started = iter(range(8))

    def generate_together(*args):
        steps = generate(*args)
        if next(started, None) is not None:
            together.wait()
        yield from steps

    engine.generate = generate_together
    # Eight visitors from eight addresses, as a proxy reports them (one address may hold 4 jobs: `server`).
    demo = build_demo(engine, turns_at_once=8, client_header="X-Forwarded-For")
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    settings = dict(lm=str(served.lm), rm=str(served.rm), n=2, temperature=0.7, top_p=1.0, max_new_tokens=8,
                    seed="3", mode="GPT4 Correct", system="", readout="last-token", rm2="none", rm_format="rlhf")
    results, errors = {}, []

    def visitor(k: int):
        client = Client(url, verbose=False, headers={"X-Forwarded-For": f"198.51.100.{k + 1}"})
        try:
            for turn in range(2):
                outputs = client.predict(f"visitor {k} turn {turn}", **settings, api_name="/chat")
                results[k] = outputs
        except Exception as error:  # reported below with the visitor's number
            errors.append((k, error))
        finally:
            client.close()

    try:
        threads = [threading.Thread(target=visitor, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        demo.close()
    assert not errors
    assert sorted(results) == list(range(8))
    for k, (chatbot, status, turn, *_) in results.items():
        said = [part["text"] for message in chatbot if message["role"] == "user" for part in message["content"]]
        assert said == [f"visitor {k} turn 0", f"visitor {k} turn 1"]  # their own conversation, nobody else's
        assert "Scored 2 candidates" in status and "reads the last token" not in status  # last-token was asked for
        assert len(turn["rewards"]) == 2 and turn["readout"] == "last-token"


def test_the_cli_scores_and_generates_on_vllm(served, local, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"messages": messages, "candidates": REPLIES[:k]}) + "\n"
                            for k, messages in enumerate(CONVERSATIONS.values(), 1)))
    model = ["--reward-model", str(served.rm), "--reward-kind", KIND, "--precision", "fp32", "--device", "cpu",
             "--backend", "vllm", "--rm-url", served.rm_server.url]
    # Every line in one batch, one request to the server; each line's rewards and traces as in process, in order.
    assert main(["score", *model, "--traces", str(path)]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["messages"] for line in lines] == list(CONVERSATIONS.values())
    for k, (line, messages) in enumerate(zip(lines, CONVERSATIONS.values()), 1):
        here = local.score(messages, REPLIES[:k], readout="last-token", traces=True)
        assert line["rewards"] == pytest.approx(here.rewards, abs=1e-4)
        assert [trace["values"] for trace in line["traces"]] == [pytest.approx(t, abs=1e-4) for t in here.traces]
    assert "note: " in err and "reads the last token" in err  # where the CLI shows the read-out
    path.write_text(json.dumps({"messages": CONVERSATIONS["multi"], "candidates": REPLIES}) + "\n")
    assert main(["generate", "--lm", str(served.lm), "--lm-url", served.lm_server.url, "--n", "2",
                 "--max-new-tokens", "6", "--seed", "4", *model, str(path)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["candidates"]) == 2 and record["finish_reasons"] == ["length"] * 2 and len(record["rewards"]) == 2
    assert main(["score", *model[:-1], "http://127.0.0.1:9", str(path)]) == 1
    assert "error: Cannot use the vLLM server at http://127.0.0.1:9" in capsys.readouterr().err


def test_generation_on_vllm_with_the_rm_card_read_out_in_process(served, local):
    mixed = Engine(str(served.lm), str(served.rm), "fp32", "cpu", rm_kind=KIND, backend="vllm",
                   lm_url=served.lm_server.url)
    final = list(mixed.generate(CONVERSATIONS["single"], Settings(n=2, max_new_tokens=8, seed=9)))[-1]
    scores = mixed.score(CONVERSATIONS["single"], final.texts)
    assert not mixed.lm().in_process and mixed.rm().in_process and mixed.lock("rm") is mixed.device_lock
    assert scores.readout == "card" and scores.note is None
    assert scores.rewards == local.score(CONVERSATIONS["single"], final.texts).rewards


def test_probes_and_attribution_on_vllm_equal_those_in_process(local, remote):
    from starling_demo.edits import EDITS

    messages = CONVERSATIONS[next(iter(CONVERSATIONS))]
    reply = "Starlings mimic sounds. They also flock.\n\n- In autumn.\n- At dusk."
    there = remote.probe(messages, [reply], list(EDITS.values()))
    here = local.probe(messages, [reply], list(EDITS.values()), readout="last-token")
    assert there["readout"] == "last-token" and "index 2047" in there["readout_note"]
    assert [e["reward"] for e in there["candidates"][0]["edits"]] == pytest.approx(
        [e["reward"] for e in here["candidates"][0]["edits"]], abs=1e-4)
    units = remote.attribute(messages, reply)["units"]
    assert [u["reward_without"] for u in units] == pytest.approx(
        [u["reward_without"] for u in local.attribute(messages, reply, readout="last-token")["units"]], abs=1e-4)
