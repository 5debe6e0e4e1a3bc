"""The app as an MCP server (`--mcp`), driven by the `mcp` package's own client: the stateless tools, the same
rewards as the page's scoring, and the per-client limits for MCP callers."""
import asyncio
import json

import httpx
import pytest
from conftest import SETTINGS
from gradio_client import Client
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from test_sharing import held_turns, join  # noqa: F401 - a fixture, and the queue's join

from starling_demo import limits
from starling_demo.ui import build_demo, launch_kwargs
from starling_demo.ui.tools import TOOLS

MESSAGES = [{"role": "user", "content": "Which bird mimics car alarms?"}]


@pytest.fixture(scope="module")
def mcp_url(engine):
    demo = build_demo(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, mcp_server=True, **launch_kwargs())
    yield url
    demo.close()


def on_mcp(url: str, work, address: str = "127.0.0.1"):
    """`work(session)`'s result, with an MCP client session open on the app's MCP server from `address` (any of
    127.0.0.0/8 is this machine: distinct clients)."""
    def client(headers=None, timeout=None, auth=None):
        return httpx.AsyncClient(headers=headers, timeout=timeout, auth=auth, follow_redirects=True,
                                 transport=httpx.AsyncHTTPTransport(local_address=address))

    async def run():
        async with streamablehttp_client(f"{url}gradio_api/mcp/", httpx_client_factory=client) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)
    return asyncio.run(run())


def test_the_tools_are_listed_with_what_they_do_and_score_as_the_page_does(mcp_url):
    tools = on_mcp(mcp_url, lambda session: session.list_tools())
    listed = {tool.name: tool for tool in tools.tools}
    assert sorted(listed) == sorted(TOOLS)  # the page's endpoints act on a browser session: not tools
    score = listed["score_candidates"]
    assert score.description.startswith("Score candidate replies to a conversation with a Starling reward model")
    assert "rewards" in score.description and set(score.inputSchema["properties"]) >= {"messages", "candidates"}

    # The page's own scoring of a turn with these two candidates, through /score.
    client = Client(mcp_url, verbose=False)
    _, _, turn, *_ = client.predict(MESSAGES[0]["content"], **(SETTINGS | {"n": 2}), api_name="/chat")
    candidates = ["The lyrebird, famously.", "A starling can, and so can a mockingbird."]
    _, _, scored, *_ = client.predict("tiny", "card", "none", *candidates, *[""] * 6, "rlhf", api_name="/score")

    result = on_mcp(mcp_url, lambda session: session.call_tool(
        "score_candidates", {"messages": MESSAGES, "candidates": candidates, "rm": "", "readout": "",
                             "rm_format": ""}))
    assert not result.isError
    answer = json.loads(result.content[0].text)
    assert answer["rewards"] == scored["rewards"] and answer["ranking"] == scored["ranking"]


def test_a_bad_call_gets_one_sentence_and_the_other_tools_answer(mcp_url):
    bad = on_mcp(mcp_url, lambda session: session.call_tool(
        "score_candidates", {"messages": [{"role": "assistant", "content": "Hi"}], "candidates": ["x"], "rm": "",
                             "readout": "", "rm_format": ""}))
    assert bad.isError and bad.content[0].text == ("message 1 should be a user message with text content; turns must "
                                                   "alternate user/assistant after an optional system message")
    probe = on_mcp(mcp_url, lambda session: session.call_tool(
        "probe_candidate", {"messages": MESSAGES, "candidate": "The lyrebird. It mimics chainsaws too.",
                            "edits": ["refusal", "repeat"], "prefix": "", "suffix": " Hope this helps!", "find": "",
                            "replace": "", "rm": "", "readout": "", "rm_format": ""}))
    edits = json.loads(probe.content[0].text)["edits"]
    assert [edit["edit"] for edit in edits] == ["repeat", "refusal", "custom"]  # in EDITS' order, then your own
    assert all(edit["delta"] == pytest.approx(edit["reward"] - json.loads(probe.content[0].text)["reward"])
               for edit in edits)


def test_an_mcp_caller_is_held_to_its_own_addresss_limits(mcp_url, held_turns):
    """Gradio's MCP server runs a tool by calling the app from this machine, as one session for every caller: the
    limits still count the caller's own address (`server.RelayPeer`), not the server's nor that one session."""
    import uuid

    started, go, starts = held_turns
    turn = [None, "Hi", *(SETTINGS | {"max_new_tokens": 3}).values(), *[""] * 8, False]
    caller = "127.0.0.6"
    for _ in range(limits.MAX_JOBS_PER_CLIENT["gpu"]):
        assert join(mcp_url, "chat", turn, uuid.uuid4().hex, caller).status_code == 200
    assert starts[0].wait(60)  # the first runs (held), the others wait
    refused = on_mcp(mcp_url, lambda session: session.call_tool(
        "score_candidates", {"messages": MESSAGES, "candidates": ["x"], "rm": "", "readout": "", "rm_format": ""}),
        address=caller)
    go.set()
    assert refused.isError and "Your address already has 4 turns running or waiting" in refused.content[0].text
