"""Many visitors on one launched server: one cannot fill the queue, hold the device or send what the app
cannot read. Driven through gradio_client, like the load benchmark's visitors."""
import json
import math
import socket
import threading
import time
import uuid

import httpx
import pytest
from conftest import SETTINGS
from gradio_client import Client, handle_file
from gradio_client.exceptions import ValidationError

from starling_demo import limits
from starling_demo.ui import evaluation, server, sharing
from starling_demo.edits import EDITS
from starling_demo.ui.cards import MAX_CARDS

STATUS, TURN = 1, 2
SKIPPED = {"__type__": "update"}
ROW = {"messages": [{"role": "user", "content": "Name a bird."}], "chosen": "A starling.", "rejected": "A cat."}


@pytest.fixture
def visitors(app_url):
    """A factory of visitors: each Client is one browser session with its own conversation."""
    clients = []

    def visitor():
        clients.append(Client(app_url, verbose=False))
        return clients[-1]

    yield visitor
    for client in clients:
        client.close()


@pytest.fixture
def watched_scoring(engine, monkeypatch):
    """Counts the evaluation rows scored (ROW's candidates), and notes when the scoring loop is closed."""
    scored, closed, score_rows = [], threading.Event(), evaluation.score_rows

    def counting(rm, groups, *args):  # a batch of the evaluation: one group per row
        scored.extend([1] * len(groups))
        return type(engine).values(engine, rm, groups, *args)

    def watched(*args, **kwargs):
        try:
            yield from score_rows(*args, **kwargs)
        finally:
            closed.set()

    monkeypatch.setattr(engine, "values", counting)
    monkeypatch.setattr(evaluation, "score_rows", watched)
    return scored, closed


def big_file(tmp_path, rows=limits.MAX_EVAL_ROWS):
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(json.dumps(ROW) for _ in range(rows)), encoding="utf-8")
    return handle_file(str(path))


def test_a_visitor_with_a_job_running_is_told_so_and_others_are_served(visitors, app_url):
    first, second = visitors(), visitors()
    long_turn = first.submit("Tell me a long story.", **(SETTINGS | {"n": 8, "max_new_tokens": 512}),
                             api_name="/chat")
    next(iter(long_turn))  # it streams: the turn is running
    score = [None, "tiny", "card", "none", *[""] * 8, "rlhf"]
    assert join(app_url, "score", score, first.session_hash).status_code == 200  # it may wait behind the turn
    refused = join(app_url, "chat", [None, "Hi", *SETTINGS.values()], first.session_hash)
    assert refused.status_code == 422 and "You already have a turn running and a request waiting" in refused.text
    with pytest.raises(ValidationError, match="You already have a turn running and a request waiting"):
        first.predict("Hi", **SETTINGS, api_name="/chat")
    queued = second.submit("Hi", **SETTINGS, api_name="/chat")  # another visitor still gets a place
    long_turn.cancel()
    assert "Scored 4 candidates" in queued.result()[STATUS]
    first.predict(api_name="/clear")  # whatever of the cancelled turn was kept
    assert "Scored 4 candidates" in first.predict("Hi again", **SETTINGS, api_name="/chat")[STATUS]  # its slots are free


def test_a_visitors_turn_completes_while_a_big_evaluation_runs_and_cancel_stops_it(visitors, tmp_path,
                                                                                  watched_scoring):
    scored, closed = watched_scoring
    hostile, visitor = visitors(), visitors()
    evaluation = hostile.submit(big_file(tmp_path), "tiny", "card", api_name="/evaluate")
    next(iter(evaluation))  # its first chunk is scored
    assert "Scored 4 candidates" in visitor.predict("Hello", **SETTINGS, api_name="/chat")[STATUS]
    assert not evaluation.done()  # the turn did not wait for the whole file
    evaluation.cancel()
    assert closed.wait(timeout=60)
    stopped_at = len(scored)
    assert "Scored 4 candidates" in visitor.predict("Still there?", **SETTINGS, api_name="/chat")[STATUS]
    assert len(scored) == stopped_at < limits.MAX_EVAL_ROWS


def join(url: str, api_name: str, data: list, session: str | None, address: str = "127.0.0.1") -> httpx.Response:
    """Join the queue as the page does, with `data` as raw JSON (NaN included), from `address` (any of 127.0.0.0/8
    is this machine: distinct clients); answered once admitted or not."""
    config = httpx.get(f"{url}config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address)) as client:
        return client.post(f"{url}gradio_api/queue/join", content=json.dumps(body),
                           headers={"content-type": "application/json"})


def raw_messages(url: str, api_name: str, data: list):
    """A new visitor's job, joined with `join`; yields its event stream's messages. Closing this generator
    closes the stream, as closing the browser tab does."""
    session = uuid.uuid4().hex
    join(url, api_name, data, session).raise_for_status()
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                yield json.loads(line.removeprefix("data:"))


def test_a_visitor_who_leaves_mid_evaluation_stops_it(app_url, tmp_path, watched_scoring):
    scored, closed = watched_scoring
    upload = httpx.post(f"{app_url}gradio_api/upload", files={"files": open(big_file(tmp_path)["path"], "rb")})
    file = {"path": upload.json()[0], "meta": {"_type": "gradio.FileData"}}
    stream = raw_messages(app_url, "evaluate", [file, "tiny", "card", "rlhf", "none"])
    next(message for message in stream if message["msg"] == "process_generating")
    stream.close()  # the tab is closed
    assert closed.wait(timeout=60)
    assert len(scored) < limits.MAX_EVAL_ROWS


@pytest.mark.parametrize("setting, value, problem", [
    ("temperature", math.nan, "Temperature must be a number from 0 to 2, not nan."),
    ("top_p", math.nan, "top_p must be a number from 0.05 to 1, not nan."),
    ("n", math.nan, "The number of candidates (N) must be a whole number from 1 to 8, not nan."),
    ("max_new_tokens", math.nan, "Max new tokens (for tiny) must be a whole number from 1 to 512, not nan."),
    ("temperature", math.inf, "Temperature must be a number from 0 to 2, not inf."),  # sent as Infinity
    ("top_p", -math.inf, "top_p must be a number from 0.05 to 1, not -inf."),
    ("temperature", 5, "Temperature must be a number from 0 to 2, not 5."),  # Gradio's own check answered first
    ("n", "four", "The number of candidates (N) must be a whole number from 1 to 8, not 'four'."),
    ("max_new_tokens", None, "Max new tokens (for tiny) must be a whole number from 1 to 512, not None."),
    ("system", "b " * 500_000, "The system prompt has 999,999 characters; shorten it to at most 8,000."),
    ("system", "\ud800",
     "The system prompt is not valid Unicode (a lone surrogate \\ud800 at character 1): remove it."),
])
def test_raw_json_numbers_and_huge_texts_change_nothing(app_url, setting, value, problem):
    # None: the conversation state, kept server-side; then the settings, the 8 cards as shown (none here), and
    # "Judge first" (off).
    data = [None, "Hi", *(SETTINGS | {setting: value}).values(), *[""] * MAX_CARDS, False]
    messages = []
    for message in raw_messages(app_url, "chat", data):
        messages.append(message)
        if message["msg"] == "process_completed":
            break
    assert [m["log"] for m in messages if m["msg"] == "log"] == [problem]
    outputs = messages[-1]["output"]["data"]
    # gr.HTML outputs (ranking, badges) send their skip wrapped in "props"; the message comes back to its box.
    skipped = [output == SKIPPED or output == SKIPPED | {"props": SKIPPED} for output in outputs[1:4] + outputs[5:]]
    assert messages[-1]["success"] and outputs[0] is None and all(skipped) and outputs[4] == "Hi"


def test_a_request_over_the_size_limit_is_refused_before_it_is_read(app_url):
    body = b'{"data": ["' + b"b" * (limits.MAX_REQUEST_BYTES + 1) + b'"]}'
    answer = httpx.post(f"{app_url}gradio_api/queue/join", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["detail"] == (
        "The request has 2.0 MB; this server takes at most 2 MB: shorten the texts (see README's limits).")


@pytest.fixture
def held_turns(engine):
    """While a test runs, every turn waits at the start of its prefill until the test lets it go; the prompt lengths
    in the order the turns started, and an event per start."""
    started, go, starts = [], threading.Event(), [threading.Event() for _ in range(8)]

    def hold(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids.shape[-1] > 1:  # a prefill: a turn starts
            started.append(ids.shape[-1])
            starts[len(started) - 1].set()
            assert go.wait(60), "the test never let the turns go on"

    handle = engine.lm().model.register_forward_pre_hook(hold, with_kwargs=True)
    try:
        yield started, go, starts
    finally:
        go.set()
        handle.remove()


def test_a_client_holds_its_share_of_the_queue_however_many_sessions_it_opens(app_url, engine, held_turns):
    """Limits count per address, not per session id (which a client chooses, or leaves out), and the queue takes
    clients in turn: another client's turn goes before this client's second one."""
    started, go, starts = held_turns
    turn = lambda message: [None, message, *(SETTINGS | {"max_new_tokens": 3}).values(), *[""] * 8, False]  # noqa: E731
    attacker, honest = "127.0.0.2", "127.0.0.3"
    since = time.monotonic()
    assert join(app_url, "chat", turn("Hi"), uuid.uuid4().hex, attacker).status_code == 200
    assert starts[0].wait(60)  # it runs (held), the next ones wait in the queue
    for _ in range(limits.MAX_JOBS_PER_CLIENT["gpu"] - 1):
        assert join(app_url, "chat", turn("Hi"), uuid.uuid4().hex, attacker).status_code == 200
    refused = join(app_url, "chat", turn("Hi"), uuid.uuid4().hex, attacker)  # from a new session
    assert refused.status_code == 422 and "Your address already has 4 turns running or waiting" in refused.text
    with httpx.Client(transport=httpx.HTTPTransport(local_address=attacker)) as client:  # from none: REST's /call
        refused = client.post(f"{app_url}gradio_api/call/chat", json={"data": turn("Hi")[1:-1]})
    assert refused.status_code == 422 and "Your address already has 4 turns running or waiting" in refused.text
    message = "Tell me everything about starlings, please."
    before = engine.device_lock.clients()  # the attacker's, and any other test's left in this engine's servers
    assert not engine.device_lock.unserved(since)  # the attacker's queued turns: it has had one since
    assert join(app_url, "chat", turn(message), uuid.uuid4().hex, honest).status_code == 200
    assert engine.device_lock.clients() == before + 1 >= 2  # batch work's share shrinks by one more client's
    assert engine.device_lock.unserved(since)  # a due chunk of batch work waits for the honest client's turn
    go.set()
    assert starts[limits.MAX_JOBS_PER_CLIENT["gpu"]].wait(60)  # all five ran
    attacker_prompt = started[0]
    assert started[1] != attacker_prompt and started[2:] == [attacker_prompt] * (len(started) - 2)


def raw_request(url: str, head: str, body: bytes) -> bytes:
    """Send `head` (the request line and headers) and `body` as they are over one connection; the answer's bytes.
    The server may answer, and close, before the body is all sent."""
    address = httpx.URL(url)
    with socket.create_connection((address.host, address.port), timeout=30) as sock:
        try:
            sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b'"}' in answer:
                return answer
        return answer


def chunked(data: bytes, size: int = 65536) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size])
                    for i in range(0, len(data), size)) + b"0\r\n\r\n"


def test_a_body_over_the_limit_is_refused_by_its_bytes_and_a_stalled_one_in_time(app_url, monkeypatch):
    """The limit counts the bytes that arrive: a chunked body, or one that says it is 5 bytes long and is not, is
    refused once past 2 MB, before the app parses it; a body that stops coming is refused after BODY_SECONDS."""
    body = b'{"data": ["' + b"b" * (limits.MAX_REQUEST_BYTES + 1) + b'"]}'
    answer = httpx.post(f"{app_url}gradio_api/queue/join", content=iter([body[:1000], body[1000:]]),
                        headers={"content-type": "application/json"})  # an iterator: sent chunked
    assert answer.status_code == 413 and answer.json()["detail"].startswith("The request has over 2.0 MB; this")
    path = f"{httpx.URL(app_url).path}gradio_api/queue/join"
    lying = raw_request(app_url, f"POST {path} HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                                 "Content-Length: 5\nTransfer-Encoding: chunked\n", chunked(body))
    assert lying.startswith(b"HTTP/1.1 413") and b"this server takes at most 2 MB" in lying
    monkeypatch.setattr(server, "BODY_SECONDS", 1)
    stalled = raw_request(app_url, f"POST {path} HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                                   "Content-Length: 100\n", b'{"data": [')
    assert stalled.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in stalled


@pytest.fixture
def parked_probe(engine, monkeypatch):
    """The next probe stops before its second pass, outside the device, until the test lets it go: (parked, go)."""
    parked, go, batch = threading.Event(), threading.Event(), engine.device_lock.batch
    passes = []

    def parking():
        passes.append(1)
        if len(passes) == 2:
            parked.set()
            assert go.wait(90), "the test never let the probe go on"
        return batch()

    monkeypatch.setattr(engine.device_lock, "batch", parking)
    yield parked, go
    go.set()


def test_a_turn_goes_between_the_passes_of_anothers_long_probe(visitors, parked_probe):
    """A probe runs pass by pass as batch work beside the turns' queue: another client's turn does not wait for the
    whole probe, and the prober's own session takes nothing else until its probe ends (a turn that ended meanwhile
    would be undone by the session the probe keeps)."""
    parked, go = parked_probe
    prober, visitor = visitors(), visitors()
    prober.predict("Hi", **SETTINGS, api_name="/chat")
    probe = prober.submit(number="all", prefix="word " * 2000, api_name="/probe")  # passes of long variants
    assert parked.wait(60)
    assert "Scored 4 candidates" in visitor.submit("Hello", **SETTINGS, api_name="/chat").result(timeout=60)[STATUS]
    assert not probe.done()
    refused = prober.predict("And you?", **SETTINGS, api_name="/chat")  # test_hardening checks its sentence
    assert refused[STATUS] == refused[TURN] == SKIPPED
    with pytest.raises(ValidationError, match="Your probe is still running"):
        prober.predict(number="1", api_name="/probe")
    go.set()
    table, _, figures = probe.result(timeout=120)
    assert len(figures["candidates"]) == 4 and all(len(c["edits"]) == len(EDITS) + 1 for c in figures["candidates"])
    assert len(prober.predict("And you?", **SETTINGS, api_name="/chat")[0]) == 4  # two turns: two exchanges


def test_a_clients_requests_for_jobs_are_paced_and_a_flood_refused(engine, monkeypatch):
    """After a burst, a client's requests for turns wait for their turn at the pace; one that would wait too long waits
    that long and is refused, so a script that resends refused jobs at once cannot make the server answer as fast as
    it asks. Other clients are not held back."""
    from starling_demo.ui import build_demo, launch_kwargs
    monkeypatch.setattr(sharing, "JOB_REQUEST_BURST", 2)
    monkeypatch.setattr(sharing, "JOB_REQUESTS_PER_SECOND", 0.1)
    monkeypatch.setattr(sharing, "PACE_SECONDS", 0.5)
    demo = build_demo(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        score = [None, "tiny", "card", "none", *[""] * 8, "rlhf"]  # no turn yet: a quick job
        flood, other = "127.0.0.4", "127.0.0.5"
        assert [join(url, "score", score, uuid.uuid4().hex, flood).status_code for _ in range(2)] == [200, 200]
        refused = join(url, "score", score, uuid.uuid4().hex, flood)
        assert refused.status_code == 422 and "faster than 0.1 a second" in refused.text
        assert join(url, "score", score, uuid.uuid4().hex, other).status_code == 200
    finally:
        demo.close()


def test_a_session_keeps_no_copy_of_every_blocks_config_and_value(engine):
    """Gradio's sessions copy every block's config and keep each input's and output's last value, for deep links
    alone (this app has none): 0.36 MiB a session before its first event. The app's sessions keep their state only."""
    import gradio as gr
    import gradio.state_holder
    from starling_demo.ui import build_demo

    demo = build_demo(engine)
    assert gradio.state_holder.SessionState is server.LeanSessionState
    assert len(server.LeanSessionState.__bases__[0](demo).config_values) > 100  # Gradio's own session: every block
    session = gradio.state_holder.SessionState(demo)
    state = next(key for key, block in demo.blocks.items() if isinstance(block, gr.State))
    assert session[state] == demo.blocks[state].value and session[state] is not demo.blocks[state].value
    session[state] = {"turns": ["kept"]}
    session._update_value_in_config(state, "a rendered card " * 10_000)
    assert session[state] == {"turns": ["kept"]} and session.config_values == {}


def test_a_client_keeps_a_bounded_number_of_sessions_however_many_it_opens(engine, monkeypatch):
    """A client with new session ids gets no more of the server's memory: past MAX_SESSIONS_PER_CLIENT, its least
    recently used idle session is forgotten. Another client's are not touched."""
    from starling_demo.ui import build_demo, launch_kwargs
    monkeypatch.setattr(sharing, "MAX_SESSIONS_PER_CLIENT", 2)
    demo = build_demo(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    score = [None, "tiny", "card", "none", *[""] * 8, "rlhf"]  # no turn yet: a quick job

    def scored(session: str, address: str) -> None:
        assert join(url, "score", score, session, address).status_code == 200
        with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as stream:
            next(line for line in stream.iter_lines() if "process_completed" in line)

    try:
        other, *mine = [uuid.uuid4().hex for _ in range(4)]
        scored(other, "127.0.0.7")
        for session in mine:
            scored(session, "127.0.0.6")
        assert [session in demo.state_holder for session in [other, *mine]] == [True, False, True, True]
    finally:
        demo.close()
