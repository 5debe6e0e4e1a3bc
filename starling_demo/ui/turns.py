"""Event handlers of the turns, which run the models: generate and score candidates, score edited or own ones.

Handlers take the engine first (the UI binds it) and the session dict `{"turns": [...]}`; they never keep
models in the session. Recoverable problems raise `gr.Warning` and leave the session as it was.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import time

import gradio as gr

from .. import insight
from ..engine import Engine
from ..limits import shown_as_text
from ..templates import check_rm_format
from .blind import JUDGE_FIRST, hidden
from .cards import MAX_CARDS, origins_after_edit, unscored_edit
from .inputs import card_texts, message_text, models, named_cards, turn_settings
from .models import PROBLEMS, explain, loading_status
from .render import conversation
from .view import RUNNING, STILL_RUNNING, STOP_REQUESTS, busy, current_turn, running, unchanged, view

# A streamed turn sends the page at most one frame per FRAME_SECONDS: token-rate updates of N long texts
# cost the browser a re-render each, and it fell behind the server (4x slower than the API).
FRAME_SECONDS = 0.1
# Frames of all visitors together, per second, beyond which each visitor's frames come further apart: every frame
# costs the server a postprocessing pass over every output, and with many turns at once (a serving backend) that
# CPU time is better spent generating (benchmarks/RESULTS.md, "Many visitors at once").
SHARED_FRAMES_PER_SECOND = 20


class Pace:
    """When a streamed turn sends its next frame: at most once per FRAME_SECONDS, and each other turn streaming
    at the same time puts another 1 / SHARED_FRAMES_PER_SECOND s between its frames."""

    def __init__(self, clock=time.monotonic, streaming=lambda: len(RUNNING)):
        self.clock, self.streaming, self.last = clock, streaming, float("-inf")

    def interval(self) -> float:
        """Seconds between frames now.

        >>> Pace(streaming=lambda: 1).interval(), Pace(streaming=lambda: 8).interval()
        (0.1, 0.35)
        """
        return max(FRAME_SECONDS, (self.streaming() - 1) / SHARED_FRAMES_PER_SECOND)

    def due(self) -> bool:
        now = self.clock()
        if now - self.last < self.interval():
            return False
        self.last = now
        return True


def score_turn(engine: Engine, turn: dict, rm: str, readout: str, rm2: str | None, rm_format: str = "rlhf",
               held=None) -> None:
    """Score a turn's candidates in place; best-of-N picks the best unless the user picked one. `held`: the lock
    the turn already holds (`Engine.lock`)."""
    # Models load here, outside `engine.score`: a ZeroGPU call runs in a process that ends with it.
    loaded = engine.rm(rm)
    # How close two rewards must be to count as a tie, from the batch noise measured where this RM runs.
    margin, note = insight.tie_margin(loaded.where, getattr(loaded, "precision", "served"))
    with engine.lock("rm", rm, held=held):
        scores = engine.score(turn["messages"], turn["candidates"], rm, readout, rm_format, traces=True)
    # The tokens' texts are worked out only for the trace on show (`analysis.reply_tokens`).
    turn.update(rewards=scores.rewards, lengths=scores.lengths, traces=scores.traces, reply_ids=scores.reply_ids,
                rm_texts=scores.texts, readout=scores.readout, readout_note=scores.note, rm_format=rm_format, rm=rm,
                rm2=None, rewards2=None, probes={}, attribution=None,  # of the texts as they were
                tie_margin=margin, tie_note=note)
    if rm2 and rm2 != "none":
        try:
            engine.rm(rm2)
            with engine.lock("rm", rm2, held=held):
                rewards2 = engine.score(turn["messages"], turn["candidates"], rm2, readout, rm_format).rewards
            turn.update(rm2=rm2, rewards2=rewards2)
        except PROBLEMS as error:  # the comparison is optional: keep the turn, say why it is missing
            gr.Warning(f"Not compared with {rm2}: {explain(error)}")
    if hidden(turn):  # the person picks, blind
        return
    if turn.get("picked_by") != "you" or turn.get("chosen") is None:
        turn.update(chosen=insight.ranking(scores.rewards)[0], picked_by="best")


def scored_status(turn: dict) -> str:
    if hidden(turn):
        return (f"Scored {len(turn['candidates'])} candidates with **{turn['rm']}**; rewards hidden until you judge "
                "(rank them below).")
    best = insight.ranking(turn["rewards"])[0]
    text = "RewardBench's text, " if turn.get("rm_format") == "rewardbench" else ""
    note = f" · {turn['readout_note']}" if turn.get("readout_note") else ""
    return (f"Scored {len(turn['candidates'])} candidates with **{turn['rm']}** ({text}{turn['readout']} read-out) · "
            f"best: candidate {best + 1} (reward {turn['rewards'][best]:.3f}) · seed {turn.get('seed')}{note}")


@named_cards
def chat(engine: Engine, session: dict, message: str, lm: str, rm: str, n: float, temperature: float,
         top_p: float, max_new_tokens: float, seed: str | int | None, mode: str, system: str, readout: str,
         rm2: str | None, rm_format: str = "rlhf", request: gr.Request = None, *cards: str, blind: bool = False):
    """Send a message: stream N candidates side by side, then score and rank them (also after Stop).

    `cards` are the cards' texts as shown: an edit not yet scored is not dropped silently. With `blind`, the
    rewards stay on the server until the person has judged the candidates (`judge`, `use_candidate`).
    """
    # Back to the box if the turn is refused (the page emptied it when it sent), if it can be shown at all.
    typed = message if isinstance(message, str) and shown_as_text(message) else None
    try:
        models(engine, lm, rm, rm2)
        message = message_text(message)
        settings = turn_settings(engine, lm, n, temperature, top_p, max_new_tokens, seed, mode, system)
        check_rm_format(rm_format)
    except ValueError as error:
        yield unchanged(str(error), typed)
        return
    if running(request):
        yield unchanged(STILL_RUNNING, typed)
        return
    if hidden(current_turn(session)):
        yield unchanged(f"The last turn is not judged yet. {JUDGE_FIRST} Then send again.", typed)
        return
    if current_turn(session) and current_turn(session).get("chosen") is None:
        yield unchanged("The last turn has no reply yet: press Score or pick a candidate, then send again.", typed)
        return
    edit = unscored_edit(current_turn(session), cards, "send")
    if edit:
        yield unchanged(edit, typed)
        return
    if settings.temperature == 0 and settings.n > 1:
        gr.Info("Temperature 0 is greedy decoding: all candidates will be the same. Raise it to compare replies.")
    work = copy.deepcopy(session)
    system = settings.system
    messages = ([{"role": "system", "content": system}] if system else []) + conversation(work["turns"])
    messages.append({"role": "user", "content": message})
    turn = {"messages": messages, "candidates": [], "settings": vars(settings), "lm": lm, "blind": bool(blind)}
    visitor = getattr(request, "session_hash", None)
    pace = Pace()
    RUNNING.add(visitor)
    work["turns"].append(turn)
    try:
        # Both models load before the turn holds the device: other visitors' turns go on meanwhile, and a reward
        # model that cannot load costs no generation.
        for kind, name, load in (("lm", lm, engine.lm), ("rm", rm, engine.rm)):
            if not engine.is_loaded(kind, name):
                yield view(work, loading_status(kind, name))  # shown while it loads
                load(name)
        # The page emptied the message box when it sent; what the visitor types meanwhile is left alone.
        yield view(work, f"Generating {settings.n} candidates with **{lm}**…")
        # Held from the first token to the reward, so that no batch chunk goes between them; released when the
        # generator is closed, also on cancel or disconnect. A served LM's request ends with the generator.
        device = engine.lock("lm", lm)
        with device:
            with contextlib.closing(engine.generate(messages, settings, lm)) as steps:
                for step in steps:
                    turn.update(candidates=step.texts, token_counts=step.token_counts, finished=step.finished,
                                prompt=step.prompt.text, seed=step.seed, warning=step.warning)
                    if visitor in STOP_REQUESTS:
                        turn["stopped"] = True
                        break
                    if pace.due():
                        yield view(work, f"Generating {settings.n} candidates with **{lm}** · seed {step.seed}… "
                                         "(■ Stop ends it early)")
            if turn.get("warning"):
                gr.Warning(turn["warning"])
            yield view(work, ("Stopped early. " if turn.get("stopped") else "") + f"Scoring with **{rm}**…")
            score_turn(engine, turn, rm, readout, rm2, rm_format, held=device)
    except PROBLEMS as error:
        gr.Warning(explain(error))
        # The message comes back to the box.
        yield view(session, f"Nothing changed: {explain(error)}", message)
        return
    finally:
        RUNNING.discard(visitor)
        STOP_REQUESTS.discard(visitor)
    yield view(work, ("Stopped early. " if turn.get("stopped") else "") + scored_status(turn))


def request_stop(page_asked: bool, request: gr.Request):
    """Stop this visitor's generation after the current token, or at its first if the turn has not started yet;
    the partial candidates are then scored. Kept only while the visitor's page has asked for a turn that has not
    ended (`page_asked`) or one is queued or running, so that it cannot stop a later turn.

    A flag rather than `cancels=`: cancelling races with the next event and can lose the partial turn.
    """
    if page_asked is True or busy(request):
        STOP_REQUESTS.add(request.session_hash)


@named_cards
def regenerate(engine: Engine, session: dict, lm: str, rm: str, n: float, temperature: float, top_p: float,
               max_new_tokens: float, seed: str | int | None, mode: str, system: str, readout: str, rm2: str | None,
               rm_format: str = "rlhf", request: gr.Request = None, *cards: str, blind: bool = False):
    """Generate the last turn again with the current settings (refused while one of its cards has an edit
    that was not scored)."""
    turn = current_turn(session)
    if not turn:
        yield unchanged("Nothing to regenerate yet: send a message first.")
        return
    edit = unscored_edit(turn, cards, "regenerate")
    if edit:
        yield unchanged(edit)
        return
    earlier = {**session, "turns": session["turns"][:-1]}
    settings = (lm, rm, n, temperature, top_p, max_new_tokens, seed, mode, system, readout, rm2, rm_format)
    for outputs in chat(engine, earlier, turn["messages"][-1]["content"], *settings, request, blind=blind):
        # A failure before anything changed shows the session as it was, last turn included; the message box,
        # which Regenerate did not empty, is left alone.
        yield view(session, outputs[2]) if outputs[0] is earlier else [*outputs[:4], gr.skip(), *outputs[5:]]


def rescored(engine: Engine, session: dict, candidates: list[str], rm: str, readout: str, rm2: str | None,
             request: gr.Request | None, rm_format: str):
    """The session with the current turn's candidates replaced and scored, or a warning saying why not. An empty
    text leaves its candidate as it stands (a card a call left out, or a new own candidate's slot: never empty).

    While it scores, the visitor counts as running, so that Undo or Clear meanwhile are refused rather
    than undone by the scored session this returns.
    """
    if running(request):
        return None, STILL_RUNNING
    work = copy.deepcopy(session)
    turn = current_turn(work)
    try:
        models(engine, rm=rm, rm2=rm2)
        check_rm_format(rm_format)
        candidates = [text or old for text, old in itertools.zip_longest(card_texts(candidates), turn["candidates"])
                      ][:len(candidates)]
    except ValueError as error:
        return None, str(error)
    turn.update(origins=origins_after_edit(turn, candidates), candidates=candidates)
    visitor = getattr(request, "session_hash", None)
    RUNNING.add(visitor)
    try:
        score_turn(engine, turn, rm, readout, rm2, rm_format)
    except PROBLEMS as error:
        return None, explain(error)
    finally:
        RUNNING.discard(visitor)
    return work, None


def beyond_the_turn(cards, count: int) -> str | None:
    """Why `cards` cannot be scored as the turn's `count` candidates: a text in a card past them (None if none).

    >>> beyond_the_turn(["a", "", "", "c"], 2)
    'Candidate 4: this turn has 2 candidates, so cards 3 to 8 must be left empty (add a reply with Add & score).'
    """
    extra = next((k for k, card in enumerate(cards[count:], count + 1) if card), None)
    return None if extra is None else (f"Candidate {extra}: this turn has {count} candidates, so cards {count + 1} to "
                                       f"{MAX_CARDS} must be left empty (add a reply with Add & score).")


@named_cards
def rescore(engine: Engine, session: dict, rm: str, readout: str, rm2: str | None, request: gr.Request,
            *cards: str, rm_format: str = "rlhf"):
    """Score the current candidates again, as edited in their cards, without regenerating."""
    turn = current_turn(session)
    if not turn or not turn["candidates"]:
        return unchanged("Nothing to score yet: send a message first.")
    if error := beyond_the_turn(cards, len(turn["candidates"])):
        return unchanged(error)
    work, error = rescored(engine, session, list(cards[: len(turn["candidates"])]), rm, readout, rm2, request,
                           rm_format)
    return unchanged(error) if error else view(work, scored_status(current_turn(work)))


@named_cards
def add_candidate(engine: Engine, session: dict, text: str, rm: str, readout: str, rm2: str | None,
                  request: gr.Request, *cards: str, rm_format: str = "rlhf"):
    """Add an own reply to the current candidates and rank it with them; outputs end with the emptied box."""
    turn = current_turn(session)
    try:
        text = message_text(text, "Your candidate")
    except ValueError as error:
        problem = str(error)
    else:
        if not turn:
            problem = "Send a message first: your candidate is scored as a reply to it."
        elif len(turn["candidates"]) >= MAX_CARDS:
            problem = f"All {MAX_CARDS} cards are in use: edit one of them and press Score instead."
        elif problem := beyond_the_turn(cards, len(turn["candidates"])):
            pass
        else:
            count = len(turn["candidates"])
            work, problem = rescored(engine, session, [*cards[:count], text], rm, readout, rm2, request, rm_format)
    if problem:
        return unchanged(problem) + [gr.skip()]
    return view(work, f"Added candidate {count + 1}. " + scored_status(current_turn(work))) + [""]
