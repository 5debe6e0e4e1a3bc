"""Stateless endpoints for agents and scripts: each takes a whole conversation and returns JSON text, keeping no
session. With `--mcp` they are the app's MCP tools; they are in the Gradio API too (`/score_candidates`, …).

Their docstrings are the tools' descriptions: Gradio reads each argument's from one line, so those lines run long,
and joins the lines after "Returns:" with commas."""
from __future__ import annotations

import json

import gradio as gr

from .. import insight
from ..engine import Engine
from ..limits import MAX_MESSAGE_CHARS, check_text
from ..templates import check_conversation, check_rm_format
from .cards import MAX_CARDS
from .inputs import models, turn_settings
from .models import PROBLEMS, explain
from .probing import probe_edits

TOOLS = ("score_candidates", "generate_candidates", "probe_candidate", "attribute_reply")


def conversation_of(messages) -> list[dict]:
    """`messages` (a list, or its JSON text) as a checked conversation: {role, content} objects ending with the
    user's, each text at most MAX_MESSAGE_CHARS; else ValueError saying what is wrong."""
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except ValueError:
            raise ValueError("'messages' must be a JSON list of {role, content} objects.") from None
    check_conversation(messages)
    for number, message in enumerate(messages, 1):
        check_text(f"Message {number}", message["content"], MAX_MESSAGE_CHARS)
    return [{"role": message["role"], "content": message["content"]} for message in messages]


def candidates_of(candidates) -> list[str]:
    """`candidates` (a list of texts, or its JSON text) checked: 1 to MAX_CARDS non-empty texts within the limits."""
    if isinstance(candidates, str):
        try:
            candidates = json.loads(candidates)
        except ValueError:
            candidates = [candidates]  # one reply, as plain text
    if not (isinstance(candidates, list) and 1 <= len(candidates) <= MAX_CARDS
            and all(isinstance(text, str) and text.strip() for text in candidates)):
        raise ValueError(f"'candidates' must be a list of 1 to {MAX_CARDS} non-empty texts.")
    return [check_text(f"Candidate {k}", text, MAX_MESSAGE_CHARS) for k, text in enumerate(candidates, 1)]


def reply_of(candidate) -> str:
    """The one reply a probe or an attribution is about, checked as a candidate."""
    if not (isinstance(candidate, str) and candidate.strip()):
        raise ValueError("'candidate' must be a non-empty text.")
    return check_text("The candidate", candidate, MAX_MESSAGE_CHARS)


def scoring_of(engine: Engine, rm: str | None, readout: str | None, rm_format: str | None) -> tuple:
    """(rm, readout, rm_format) as a tool's call gives them, checked: an empty one is the server's default."""
    rm, rm_format = rm or engine.rm_name, rm_format or "rlhf"
    models(engine, rm=rm)
    check_rm_format(rm_format)
    return rm, readout or None, rm_format


def answered(work) -> str:
    """`work()`'s result as JSON text (what an MCP client reads; Gradio would give it Python's repr of a dict), or
    a gr.Error with the one sentence that says what to change."""
    try:
        return json.dumps(work(), ensure_ascii=False)
    except PROBLEMS as error:
        raise gr.Error(explain(error)) from None


def scores_json(engine: Engine, messages: list[dict], candidates: list[str], rm: str, readout: str | None,
                rm_format: str) -> dict:
    engine.rm(rm)  # loaded outside the device lock
    with engine.lock("rm", rm):
        scores = engine.score(messages, candidates, rm, readout, rm_format)
    ranking = insight.ranking(scores.rewards)
    return {"rm": rm, "readout": scores.readout, "readout_note": scores.note, "rm_format": rm_format,
            "rewards": scores.rewards, "ranking": ranking, "best": ranking[0], "lengths": scores.lengths}


def score_candidates(engine: Engine, messages, candidates, rm: str | None = None, readout: str | None = None,
                     rm_format: str = "rlhf") -> str:
    """Score candidate replies to a conversation with a Starling reward model, exactly as the app scores a turn.

    Args:
        messages: the conversation: a list of {"role": "system", "user" or "assistant", "content": text}, ending with the user's.
        candidates: the candidate replies to score: a list of 1 to 8 texts.
        rm: the reward model (empty: the server's); the choices are the app's reward-model presets.
        readout: "card" (the read-out of the model's card; empty: the default) or "last-token".
        rm_format: "rlhf" (the text Starling's RLHF scored; default) or "rewardbench" (RewardBench's text).

    Returns:
        JSON text: "rewards" (one per candidate, in their order)
        "ranking" (candidate indices, 0-based, best first), "best", "lengths" (reply tokens)
        and the "rm", "readout" and "rm_format" used.
    """
    def work():
        conversation, texts = conversation_of(messages), candidates_of(candidates)
        return scores_json(engine, conversation, texts, *scoring_of(engine, rm, readout, rm_format))
    return answered(work)


def generate_candidates(engine: Engine, messages, n: float = 4, temperature: float = 0.7,
                        max_new_tokens: float = 256, seed: str | None = None, lm: str | None = None,
                        rm: str | None = None, readout: str | None = None, rm_format: str = "rlhf") -> str:
    """Sample N candidate replies to a conversation with Starling-LM, then score and rank them with the reward model.

    Args:
        messages: the conversation: a list of {"role": "system", "user" or "assistant", "content": text}, ending with the user's.
        n: how many candidates to sample (1 to 8).
        temperature: sampling temperature (0 to 2; 0 is greedy).
        max_new_tokens: the longest a reply may be, in tokens.
        seed: a whole number to repeat a sample (empty: random).
        lm: the language model (empty: the server's).
        rm: the reward model (empty: the server's).
        readout: "card" (default) or "last-token".
        rm_format: "rlhf" (default) or "rewardbench".

    Returns:
        JSON text: "candidates" (texts), "token_counts", "finished" (why each ended), "seed"
        and their scores, as score_candidates gives them.
    """
    def work():
        conversation, language, scoring = conversation_of(messages), lm or engine.lm_name, scoring_of(
            engine, rm, readout, rm_format)
        models(engine, lm=language)
        settings = turn_settings(engine, language, n, temperature, 1.0, max_new_tokens, seed, "GPT4 Correct", "")
        engine.lm(language)  # loaded outside the device lock
        with engine.lock("lm", language):
            *_, final = engine.generate(conversation, settings, language)
        return {"candidates": final.texts, "token_counts": final.token_counts, "finished": final.finished,
                "seed": final.seed, "lm": language} | scores_json(engine, conversation, final.texts, *scoring)
    return answered(work)


def probe_candidate(engine: Engine, messages, candidate: str, edits=None, prefix: str | None = None,
                    suffix: str | None = None, find: str | None = None, replace: str | None = None,
                    rm: str | None = None, readout: str | None = None, rm_format: str = "rlhf") -> str:
    """Probe what moves a reply's reward: score it as written and under each edit (refusal, repetition, Markdown
    stripped, …, and your own), with the change each edit makes.

    Args:
        messages: the conversation: a list of {"role": ..., "content": text}, ending with the user's message.
        candidate: the reply to probe.
        edits: the names of the edits to run (empty: all of them).
        prefix: your own edit: text put before the reply.
        suffix: your own edit: text put after the reply.
        find: your own edit: text to replace in the reply (with replace).
        replace: what replaces find.
        rm: the reward model (empty: the server's).
        readout: "card" (default) or "last-token".
        rm_format: "rlhf" (default) or "rewardbench".

    Returns:
        JSON text: the reply's "reward"
        and "edits": per edit its "edit" name, "description", "changed", the edited reply's "reward"
        and "delta" (edited minus as written).
    """
    def work():
        conversation, text = conversation_of(messages), reply_of(candidate)
        chosen = probe_edits(edits or None, prefix, suffix, find, replace, {"the reply": text})
        model, read, text_format = scoring_of(engine, rm, readout, rm_format)
        run = engine.probe(conversation, [text], chosen, model, read, text_format)
        [result] = run["candidates"]
        return {"rm": model, "readout": run["readout"], "rm_format": text_format, "reward": result["reward"],
                "edits": [{key: value for key, value in edit.items() if key != "text"} for edit in result["edits"]]}
    return answered(work)


def attribute_reply(engine: Engine, messages, candidate: str, rm: str | None = None, readout: str | None = None,
                    rm_format: str = "rlhf") -> str:
    """Which parts of a reply earn its reward: the reward with each sentence, list item or code block left out.

    Args:
        messages: the conversation: a list of {"role": ..., "content": text}, ending with the user's message.
        candidate: the reply to explain.
        rm: the reward model (empty: the server's).
        readout: "card" (default) or "last-token".
        rm_format: "rlhf" (default) or "rewardbench".

    Returns:
        JSON text: the reply's "reward"
        and its "units", each with its "text", "kind", "start" and "end" (characters), "reward_without" it
        and "drop" (the reward it earns: positive if the reply scores lower without it).
    """
    def work():
        conversation, text = conversation_of(messages), reply_of(candidate)
        model, read, text_format = scoring_of(engine, rm, readout, rm_format)
        return {"rm": model} | engine.attribute(conversation, text, model, read, text_format)
    return answered(work)


TEXTS = {"type": "array", "items": {"type": "string"}}
MESSAGES = {"type": "array", "items": {"type": "object", "properties": {
    "role": {"type": "string", "enum": ["system", "user", "assistant"]}, "content": {"type": "string"}},
    "required": ["role", "content"]}}


def json_input(schema: dict) -> gr.JSON:
    """A hidden JSON input whose API schema is `schema`: Gradio's own, {"type": {}}, is no JSON Schema, and MCP
    clients refuse every call against it."""
    component = gr.JSON(visible=False)
    component.api_info = lambda: schema
    return component


def add_tools(in_group) -> None:
    """The stateless endpoints, API-only events with hidden inputs, in the Blocks being built; `in_group(group,
    handler, inputs)` gives each its concurrency group and binds the engine, as for the page's events."""
    def hidden(kind, *args):
        return [kind(visible=False) for _ in args]

    text, number = gr.Textbox, gr.Number
    scoring = hidden(text, "rm", "readout", "rm_format")
    events = [(score_candidates, [json_input(MESSAGES), json_input(TEXTS), *scoring], "gpu"),
              (generate_candidates, [json_input(MESSAGES), *hidden(number, "n", "temperature", "tokens"),
                                     *hidden(text, "seed", "lm"), *scoring], "gpu"),
              (probe_candidate, [json_input(MESSAGES), *hidden(text, "candidate"), json_input(TEXTS),
                                 *hidden(text, "prefix", "suffix", "find", "replace"), *scoring], "probe"),
              (attribute_reply, [json_input(MESSAGES), *hidden(text, "candidate"), *scoring], "probe")]
    trigger, result = gr.Button(visible=False), gr.Textbox(visible=False)
    for handler, inputs, group in events:
        trigger.click(outputs=result, api_name=handler.__name__, **in_group(group, handler, inputs))


def only_tools_for_mcp(demo: gr.Blocks) -> None:
    """Gradio's MCP server lists every public endpoint as a tool, but the page's endpoints act on a browser session,
    which an MCP call does not keep: mark them out (it lists a function whose `_mcp_type`, if set, is "tool")."""
    for fn in demo.fns.values():
        function = getattr(fn.fn, "__func__", fn.fn)
        if function is not None and fn.api_name not in TOOLS:
            try:
                function._mcp_type = "session"
            except AttributeError:  # a built-in: not an endpoint of ours
                pass
