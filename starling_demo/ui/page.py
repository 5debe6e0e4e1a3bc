"""The Gradio Blocks app: the sections of `layout` placed on one page, and the events that connect them to the engine."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from types import MethodType, SimpleNamespace

import gradio as gr

from ..engine import Engine
from ..limits import SESSION_SECONDS
from . import layout
from .analysis import bias_panel, export_judged, export_nectar, export_pairs, insight_json, panels, trace_panel
from .blind import judge_panel, judging_json
from .blind import shown as shown_turn
from .cards import MAX_CARDS
from .choices import clear, clear_all, judge, undo, use_candidate
from .compare import compare_panel, compare_panels
from .evaluation import evaluate_file
from .evaluation import finished as evaluation_finished
from .evaluation import starting as evaluation_starting
from .live import placeholder
from .models import load_model, max_tokens_range
from .probing import attribute_candidate, probe_candidates, probe_panels
from .ranking import ranking_html
from .server import lean_sessions, server_kwargs
from .sharing import limit_jobs_per_client
from .tools import add_tools, only_tools_for_mcp
from .turns import add_candidate, chat, regenerate, request_stop, rescore
from .view import PAGE_FRAME, actions, current_turn, new_session, page_frames

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CSS_PATH, JS_PATH = ASSETS / "style.css", ASSETS / "page.js"


# The page's Send, in two steps that the page runs in order: the message box's text is kept and the box emptied,
# then the text goes as the turn's second input (after the session).
KEEP_MESSAGE = """() => {
  window.starlingAsked = true;
  document.body.classList.add("turn-running");
  const box = document.querySelector("#msg textarea");
  window.starlingMessage = box.value;
  box.value = "";
  box.dispatchEvent(new Event("input", {bubbles: true}));
  return [];
}"""
# Whether the page has asked for a turn that has not ended, for Stop (see `turns.request_stop`); and, on the page,
# whether the analysis panels wait for a new turn (the stylesheet covers them until they show it).
ASKED = """() => { window.starlingAsked = true; document.body.classList.add("turn-running"); }"""
ENDED = "() => { window.starlingAsked = false; }"
PANELS_SHOWN = """() => { document.body.classList.remove("turn-running"); }"""
TAKE_MESSAGE = """(...inputs) => [inputs[0], window.starlingMessage ?? "", ...inputs.slice(2)]"""


def starting_js() -> str:
    """What the page shows the moment a turn is asked for, in the page alone (a round trip to the server would delay
    the turn): busy buttons, no ranking, the new turn's N cards waiting, and nothing to give back to the message box.
    The analysis panels are covered meanwhile (`turn-running`, set by the same click)."""
    shown = {n: actions(None, busy=True) + [ranking_html({"candidates": [], "settings": {"n": n}}), "",
                                            placeholder(n)] for n in range(1, MAX_CARDS + 1)}
    return f"(n) => ({json.dumps(shown)})[Math.min({MAX_CARDS}, Math.max(1, Math.round(n) || 1))]"


def launch_kwargs() -> dict:
    """Theme, CSS and the page's script, which Gradio 6 takes in `launch()`, and the limits on uploads and
    requests."""
    return {"theme": gr.themes.Soft(primary_hue="indigo"), "css": CSS_PATH.read_text(encoding="utf-8"),
            "js": JS_PATH.read_text(encoding="utf-8"), **server_kwargs()}


def build_demo(engine: Engine, banner: str | None = None, turns_at_once: int = 1,
               client_header: str | None = None) -> gr.Blocks:
    """The whole app for one engine, its queue set up; every visitor gets their own conversation state.

    `turns_at_once` visitors' turns run at the same time: 1 when the models run in this process (one device),
    more when a server batches them; parts that run here still take the engine's device lock. `client_header`:
    the header in which a trusted proxy reports the client's address (`server.client_of`), None to use the peer's.
    """
    # Every 15 minutes, uploads and sent files older than an hour are deleted from Gradio's cache.
    with gr.Blocks(title="Starling demo", analytics_enabled=False, delete_cache=(900, 3600)) as demo:
        session = gr.State(new_session(), time_to_live=SESSION_SECONDS)
        settings = layout.settings_sidebar(engine)
        if banner:
            gr.Markdown(banner, elem_id="banner")
        gr.Markdown(layout.INTRO, elem_id="intro")
        with gr.Row(equal_height=False, elem_id="main"):
            with gr.Column(scale=4, min_width=330, elem_id="chat-column"):
                chat_ui = layout.chat_section()
            with gr.Column(scale=6, min_width=330, elem_id="decision"):
                decision = layout.candidates_section()
        panel, evaluation = layout.analysis_section(layout.model_choices(engine, "rm"))
        summary = gr.JSON(label="Turn", visible=False)  # for API callers
        pick = layout.as_sent(gr.Number(visible=False, precision=0, label="Candidate number"))  # for API callers
        pick_button = gr.Button(visible=False)
        facts = gr.JSON(label="Insight", visible=False)  # for API callers
        facts_button = gr.Button(visible=False)
        # For API callers: the page's candidate and ranking choices check their values against choices that only
        # the page's own events fill in, so the API takes them as text.
        api_number = gr.Textbox(visible=False, label="Candidate number (1-based), or all")
        ranking_text = gr.Textbox(visible=False, label="Your ranking: candidate numbers, best first")
        api = SimpleNamespace(**{name: gr.Button(visible=False)
                                  for name in ("chat", "regenerate", "judge", "probe", "attribute", "judging")})
        probe_figures = gr.JSON(label="Probes", visible=False)
        attribution_figures = gr.JSON(label="Attribution", visible=False)
        judging_figures = gr.JSON(label="Judging", visible=False)

        s = settings
        card_texts = [card.text for card in decision.cards]
        turn_settings = [s.lm, s.rm, s.n, s.temperature, s.top_p, s.max_new_tokens, s.seed, s.mode, s.system,
                         s.readout, s.rm2, s.rm_format]
        # In the order of `turns.OUTPUTS`; new outputs go at the end, so API callers' positions stay valid.
        turn_outputs = [session, chat_ui.chatbot, decision.status, summary, chat_ui.message,
                        *[c for card in decision.cards for c in (card.text, card.badge)], decision.ranking,
                        *[card.view for card in decision.cards]]
        action_outputs = [chat_ui.send, chat_ui.regenerate, *[card.use for card in decision.cards]]
        p = panel.probes
        panel_outputs = [panel.compare_a, panel.compare_b, panel.compare_view, panel.trace_pick, panel.trace_view,
                         panel.trace_plot, panel.wins, panel.luce, panel.bias_text, panel.bias_plot, panel.compare_text,
                         panel.compare_table, panel.lm_input, panel.rm_input]
        tally_outputs = [decision.judge_order, panel.tally_text, panel.tally_table, p.pick, p.view, p.summary,
                         panel.attribution]
        scoring = [s.rm, s.readout, s.rm2]

        def bind(handler):
            """`handler` with the engine as its first argument, bound like a method: unlike a partial, Gradio
            still reads its type hints (gr.Request) and sees that it is a generator."""
            return MethodType(handler, engine)

        def in_group(group: str, handler, inputs: list) -> dict:
            """Event arguments: `handler` runs in concurrency group `group` ("gpu": turns and scoring,
            `turns_at_once` at a time; "probe": probes and attribution, and "eval": batch evaluations, one at a time
            each, which share the device with turns batch by batch, so a turn never waits for a whole probe or
            file); see `limit_jobs_per_client` for how many of a group's jobs one client may have."""
            return dict(fn=bind(handler), inputs=inputs, concurrency_id=group,
                        concurrency_limit=turns_at_once if group == "gpu" else 1)

        def analysis(session: dict, number: str | None, alpha: float) -> list:
            """Why the candidates scored as they did: the compare view, trace, win probabilities, length bias, the
            second RM and the model inputs."""
            return compare_panels(session) + panels(engine, session, number, alpha)

        def tallies(session: dict, probe_pick: str | None) -> list:
            """The blind-judging tally and the probes: a step of their own, so that the page draws the panels in
            two tasks rather than one long one."""
            return judge_panel(session) + probe_panels(session, probe_pick)

        def ready(session: dict) -> list:
            """The buttons and the ranking of the turn the session ends with."""
            return actions(session) + [ranking_html(shown_turn(current_turn(session)))]

        def then_panels(event, new_turn: bool = False, buttons: bool = True):
            """After the turn changed: the buttons at once (not queued: the status line already says the turn is
            done; the page's own turns set them in their last frame), then every analysis panel (a new turn shows its
            best candidate's trace). It also runs after a refused or failed event."""
            picks = [gr.State(None)] * 2 if new_turn else [panel.trace_pick, panel.probes.pick]
            if buttons:
                event = event.then(ready, [session], action_outputs + [decision.ranking], queue=False,
                                   api_visibility="private", show_progress="hidden")
            return event.then(analysis, [session, picks[0], panel.alpha], panel_outputs,
                              api_visibility="undocumented", show_progress="hidden").then(
                tallies, [session, picks[1]], tally_outputs, api_visibility="undocumented", show_progress="hidden")

        # While a new turn streams, the buttons say it runs and no ranking is shown. Registered before the turn events:
        # Gradio's page drops its property updates otherwise.
        given_back = gr.Textbox(visible=False)  # a refused turn's message, for the box (`page_frames`)
        # The page runs the events of one click in the order they are registered, each to its end (a turn's
        # stream included): the message is taken from the box first, at once (see TAKE_MESSAGE).
        gr.on([chat_ui.send.click, chat_ui.message.submit], None, None, None, js=KEEP_MESSAGE, queue=False,
              api_visibility="private", show_progress="hidden")
        chat_ui.regenerate.click(None, None, None, js=ASKED, queue=False, api_visibility="private",
                                 show_progress="hidden")
        gr.on([chat_ui.send.click, chat_ui.message.submit, chat_ui.regenerate.click], None, [s.n],
              action_outputs + [decision.ranking, given_back, decision.live], js=starting_js(), queue=False,
              api_visibility="private", show_progress="hidden")
        blind = decision.blind
        chat_inputs = [session, chat_ui.message, *turn_settings, *card_texts, blind]
        regenerate_inputs = [session, *turn_settings, *card_texts, blind]
        # Scripts' /chat and /regenerate stream every turn output; the page's own Send and Regenerate send a frame
        # when the status changes, and the live cards pull the replies meanwhile (`page_frames`). The page's Send
        # reads the message box in the page and empties it, rather than taking it as an input: a box that is an
        # input or output of a running event takes no update until the event ends, so the page would put back what
        # it had. So what the visitor types meanwhile stays; a refused turn's
        # message comes back unless something new was typed.
        page_turn = dict(outputs=[turn_outputs[i] for i in PAGE_FRAME] + action_outputs + [given_back, decision.live],
                         show_progress="hidden", api_visibility="private")
        sent = gr.Textbox(visible=False)  # carries the message the page read from the box
        sending = gr.on([chat_ui.send.click, chat_ui.message.submit], js=TAKE_MESSAGE, api_name="page_chat",
                        **page_turn, **in_group("gpu", page_frames(chat), [session, sent, *chat_inputs[2:]]))
        given_back.change(None, [given_back, chat_ui.message], [chat_ui.message], js="(back, typed) => typed || back",
                          queue=False, api_visibility="private", show_progress="hidden")
        regenerating = chat_ui.regenerate.click(api_name="page_regenerate", **page_turn,
                                                **in_group("gpu", page_frames(regenerate), regenerate_inputs))
        for event in (sending, regenerating):
            # An error that no frame reported (a bug) still leaves the page ready for the next turn.
            event.failure(lambda session: ready(session) + [""], [session],
                          action_outputs + [decision.ranking, decision.live], queue=False, api_visibility="private",
                          show_progress="hidden")
            then_panels(event.then(None, None, None, js=ENDED, queue=False, api_visibility="private",
                                   show_progress="hidden"), new_turn=True, buttons=False).then(
                None, None, None, js=PANELS_SHOWN, queue=False, api_visibility="private", show_progress="hidden")
        api.chat.click(outputs=turn_outputs, api_name="chat", **in_group("gpu", chat, chat_inputs))
        api.regenerate.click(outputs=turn_outputs, api_name="regenerate",
                             **in_group("gpu", regenerate, regenerate_inputs))
        # Not queued: Stop must reach the server at once, not wait behind other visitors' jobs. It says whether the
        # page has asked for a turn that has not ended: one still on its way to the queue is stopped too.
        page_asked = gr.Checkbox(visible=False)
        chat_ui.stop.click(request_stop, [page_asked], None, js="() => [window.starlingAsked === true]",
                           api_visibility="private", queue=False)
        then_panels(decision.score.click(outputs=turn_outputs, api_name="score", **in_group(
            "gpu", rescore, [session, *scoring, *card_texts, s.rm_format])))
        then_panels(decision.add.click(outputs=[*turn_outputs, decision.own], api_name="add_candidate",
                                       **in_group("gpu", add_candidate,
                                                       [session, decision.own, *scoring, *card_texts, s.rm_format])))
        then_panels(pick_button.click(use_candidate, [session, pick, *card_texts], turn_outputs,
                                      api_name="use_candidate"))
        for number, card in enumerate(decision.cards, 1):
            then_panels(card.use.click(use_candidate, [session, gr.State(number), *card_texts], turn_outputs,
                                       api_visibility="undocumented"))
        for ranking, trigger, visibility in ((ranking_text, api.judge, "public"),
                                             (decision.judge_order, decision.reveal, "undocumented")):
            then_panels(trigger.click(judge, [session, ranking, *card_texts], turn_outputs, api_visibility=visibility,
                                      api_name="judge" if visibility == "public" else None))
        api.judging.click(judging_json, [session], [judging_figures], api_name="judging")
        panel.judged_button.click(export_judged, [session], [panel.judged_file], api_name="export_judged")
        probe_inputs = [p.edits, p.prefix, p.suffix, p.find, p.replace, s.rm, s.readout, s.rm_format]
        for pick, trigger, visibility in ((api_number, api.probe, "public"), (p.pick, p.run, "undocumented")):
            trigger.click(outputs=[session, p.view, p.summary, probe_figures], api_visibility=visibility,
                          api_name="probe" if visibility == "public" else None,
                          **in_group("probe", probe_candidates, [session, pick, *probe_inputs]))
        for pick, trigger, visibility in ((api_number, api.attribute, "public"),
                                          (panel.trace_pick, panel.attribute, "undocumented")):
            trigger.click(outputs=[session, panel.attribution, attribution_figures], api_visibility=visibility,
                          api_name="attribute" if visibility == "public" else None,
                          **in_group("probe", attribute_candidate, [session, pick, s.rm, s.readout, s.rm_format]))
        then_panels(chat_ui.undo.click(undo, [session], turn_outputs, api_name="undo"), new_turn=True)
        then_panels(chat_ui.clear.click(clear, [session], turn_outputs, api_name="clear"), new_turn=True)
        then_panels(chat_ui.clear_all.click(clear_all, [session], turn_outputs, api_name="clear_all"), new_turn=True)
        then_panels(chat_ui.chatbot.clear(clear, [session], turn_outputs, api_visibility="private"), new_turn=True)
        panel.trace_pick.change(bind(trace_panel), [session, panel.trace_pick], [panel.trace_view, panel.trace_plot],
                                api_visibility="undocumented")
        for picker in (panel.compare_a, panel.compare_b):
            picker.input(compare_panel, [session, panel.compare_a, panel.compare_b], [panel.compare_view],
                         api_visibility="private", show_progress="hidden")
        panel.alpha.change(bias_panel, [session, panel.alpha], [panel.bias_text, panel.bias_plot],
                           api_visibility="undocumented")
        # Loading runs beside turns (a loaded model is kept until the new one is in), one load at a time.
        for kind, dropdown in (("lm", s.lm), ("rm", s.rm), ("rm", s.rm2)):
            dropdown.change(partial(load_model, engine, kind), [dropdown], [decision.status],
                            api_visibility="undocumented", concurrency_id="load", concurrency_limit=1)
        s.lm.change(bind(max_tokens_range), [s.lm, s.max_new_tokens], [s.max_new_tokens], api_visibility="private",
                    show_progress="hidden")
        facts_button.click(bind(insight_json), [session, panel.alpha], [facts], api_name="insight")
        panel.pairs_button.click(export_pairs, [session], [panel.export], api_name="export_pairs")
        panel.nectar_button.click(export_nectar, [session], [panel.export], api_name="export_nectar")
        # RewardBench reads the last token; the read-out follows the format (and can still be changed).
        s.rm_format.change(lambda f: "last-token" if f == "rewardbench" else "card", [s.rm_format], [s.readout],
                           api_visibility="private", show_progress="hidden")
        evaluated = [evaluation.report, evaluation.errors, evaluation.status, evaluation.accuracy, evaluation.margins,
                     evaluation.rows]
        evaluating = evaluation.button.click(
            # The page empties the last report and turns Evaluate off (Cancel on) before it queues the evaluation.
            evaluation_starting, [s.rm], [*evaluated, evaluation.button, evaluation.cancel], queue=False,
            api_visibility="private", show_progress="hidden").then(
            outputs=evaluated, api_name="evaluate",
            **in_group("eval", evaluate_file, [evaluation.file, s.rm, s.readout, s.rm_format, evaluation.compare]))
        # Cancel stops it after its current batch; after it ends, however it ends, `finished` turns the buttons back
        # and, if it was cancelled, says how many rows had been scored.
        evaluating.then(evaluation_finished, [evaluation.status],
                        [evaluation.status, evaluation.button, evaluation.cancel], queue=False,
                        api_visibility="private", show_progress="hidden")
        evaluation.cancel.click(None, cancels=[evaluating], api_visibility="private")
        add_tools(in_group)
    demo.queue(max_size=max(32, 4 * turns_at_once), default_concurrency_limit=4)
    limit_jobs_per_client(demo, client_header, engine.device_lock)
    lean_sessions()
    only_tools_for_mcp(demo)
    return demo
