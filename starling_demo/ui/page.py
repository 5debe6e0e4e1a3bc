"""The Gradio Blocks app: chat with Starling-LM and watch a Starling reward model rank N candidate replies."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from types import MethodType

import gradio as gr
import pandas as pd

from ..engine import Engine
from ..limits import max_new_tokens_for
from ..presets import LM_PRESETS, RM_PRESETS
from ..templates import RM_FORMATS
from .turns import (add_candidate, chat, clear, new_session, regenerate, request_stop, rescore, undo,
                        use_candidate)
from .evaluation import evaluate_file
from .analysis import (COMPARE_HEADERS, bias_panel, export_nectar, export_pairs, insight_json,
                         panels, trace_panel)
from .models import load_model, max_tokens_range
from .render import MAX_CARDS, RANKING_HEADERS, REPORT_HEADERS
from .server import limit_jobs_per_visitor, server_kwargs

CSS_PATH = Path(__file__).resolve().parents[2] / "assets" / "style.css"
INTRO = ("## Starling: chat, and watch the reward model rank the replies\n"
         "Each turn, **Starling-LM** writes N candidate replies side by side; a **Starling reward model** scores "
         "them and the best one continues the conversation (best-of-N), unless you pick another.")
TRACE_NOTE = ("Each token is coloured by **the value the head would give if the reply ended at this token** "
              "(green above zero, red below; hover for the number). The reward itself is read after the reply's "
              "end marker (`</s>` or `<|im_end|>`), so it can differ from the last token's value.")
EVAL_NOTE = ("Upload a JSONL file: one row per line, `{\"messages\": [...], \"candidates\": [best, ..., worst]}` "
             "or `{\"messages\": [...], \"chosen\": ..., \"rejected\": ...}`, with an optional `\"subset\"`. "
             "Accuracy is the share of pairs ranked right; the baseline prefers the longer reply.")


def launch_kwargs() -> dict:
    """Theme and CSS, which Gradio 6 takes in `launch()`, and the limits on uploads and requests."""
    return {"theme": gr.themes.Soft(primary_hue="indigo"), "css": CSS_PATH.read_text(encoding="utf-8"),
            **server_kwargs()}


def model_choices(engine: Engine, kind: str) -> list[str]:
    """What visitors may choose: the server's allowed models, else every preset plus the launched one."""
    if engine.allowed is not None:
        return list(engine.allowed[kind])
    presets, current = (LM_PRESETS, engine.lm_name) if kind == "lm" else (RM_PRESETS, engine.rm_name)
    return list(presets) + ([current] if current not in presets else [])


def model_dropdown(engine: Engine, kind: str, label: str) -> gr.Dropdown:
    choices = model_choices(engine, kind)
    info = ("Shared: switching loads it for every visitor of this server." if len(choices) > 1
            else "Set by the server.")
    return gr.Dropdown(choices, value=engine.lm_name if kind == "lm" else engine.rm_name, label=label, info=info,
                       interactive=len(choices) > 1, elem_id=kind)


def candidate_card(i: int) -> tuple:
    """One candidate: an editable reply, its rank and reward, and a button to continue with it."""
    with gr.Column(visible=False, elem_classes="card", min_width=240) as card:
        text = gr.Textbox("", label=f"Candidate {i}", lines=4, max_lines=12, interactive=True, elem_id=f"card-{i}")
        badge = gr.Markdown(label=f"Candidate {i} rank", elem_id=f"badge-{i}", elem_classes="badge")
        use = gr.Button("Use this reply", size="sm", elem_id=f"use-{i}")
    return card, text, badge, use


def build_demo(engine: Engine, banner: str | None = None) -> gr.Blocks:
    """The whole app for one engine, its queue set up; every visitor gets their own conversation state."""
    # Every 15 minutes, uploads and sent files older than an hour are deleted from Gradio's cache.
    with gr.Blocks(title="Starling demo", analytics_enabled=False, delete_cache=(900, 3600)) as demo:
        session = gr.State(new_session())
        if banner:
            gr.Markdown(banner, elem_id="banner")
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Chat"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(label="Conversation", height=320, sanitize_html=True, elem_id="chat",
                                             buttons=["copy", "copy_all"])
                        with gr.Row(equal_height=True):
                            message = gr.Textbox(label="Message", show_label=False, placeholder="Message Starling… (Enter sends)",
                                                 lines=1, max_lines=8, scale=6, elem_id="msg")
                            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                        with gr.Row():
                            regenerate_button = gr.Button("↻ Regenerate", size="sm", elem_id="regenerate")
                            stop = gr.Button("■ Stop", size="sm", variant="stop", elem_id="stop")
                            undo_button = gr.Button("↶ Undo turn", size="sm", elem_id="undo")
                            clear_button = gr.Button("Clear", size="sm", elem_id="clear")
                        status = gr.Markdown("Send a message to generate candidates.", label="Status", elem_id="status")
                        cards = []
                        for row in range(MAX_CARDS // 2):
                            with gr.Row(equal_height=True):
                                cards += [candidate_card(2 * row + 1), candidate_card(2 * row + 2)]
                        with gr.Row(equal_height=True):
                            own = gr.Textbox(label="Your own candidate", placeholder="Write a reply to rank it",
                                             lines=2, scale=4, elem_id="own")
                            with gr.Column(scale=1, min_width=140):
                                add = gr.Button("Add & score", elem_id="add")
                                rescore_button = gr.Button("Score all cards", variant="secondary", elem_id="score")
                    with gr.Column(scale=2):
                        ranking = gr.Dataframe(headers=RANKING_HEADERS, label="Ranking (best first)",
                                               interactive=False, elem_id="ranking")
                        bars = gr.BarPlot(x="candidate", y="reward", color="pick", sort="-y", height=260,
                                          color_map={"best": "#4f46e5", "other": "#a5b4fc"}, label="Reward",
                                          elem_id="bars")
                        with gr.Accordion("Settings", open=False, elem_id="settings"):
                            lm = model_dropdown(engine, "lm", "Language model")
                            rm = model_dropdown(engine, "rm", "Reward model")
                            n = gr.Slider(1, MAX_CARDS, value=4, step=1, label="Candidates per turn (N)",
                                          elem_id="n")
                            temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature (0 = greedy)")
                            top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="top_p")
                            longest = max_new_tokens_for(engine.context())
                            max_new_tokens = gr.Slider(1, longest, value=min(64 if engine.lm_name == "tiny" else 512,
                                                                             longest),
                                                       step=1, label="Max new tokens", elem_id="max-tokens")
                            seed = gr.Textbox("", label="Seed (blank = random; the seed used is shown in the "
                                              "status line)", elem_id="seed")
                            mode = gr.Radio(["GPT4 Correct", "Code"], value="GPT4 Correct", label="Template mode")
                            system = gr.Textbox("", label="System prompt (optional)", lines=2, elem_id="system",
                                                info="Sent to the LM and to RM-34B; RM-7B-alpha sees it only in "
                                                     "RewardBench's text.")
                            readout = gr.Radio(["card", "last-token"], value="card", label="Reward read-out",
                                               elem_id="readout", info="card: as the RM-7B card computes it; "
                                                                        "RM-34B always reads the last token")
                            rm_format = gr.Radio(list(RM_FORMATS), value="rlhf", label="Reward-model input text",
                                                 elem_id="rm-format",
                                                 info="rlhf: as each RM scored in Starling's RLHF; rewardbench: "
                                                      "RewardBench's text (RM-7B: the Llama-2-chat template), to "
                                                      "reproduce its numbers")
                            rm2 = gr.Dropdown(["none", *model_choices(engine, "rm")], value="none",
                                              label="Second reward model (compare rankings)", elem_id="rm2")
                with gr.Tabs():
                    with gr.Tab("Reward trace", elem_id="tab-trace"):
                        gr.Markdown(TRACE_NOTE)
                        trace_pick = gr.Radio([], label="Candidate", elem_id="trace-pick")
                        trace_view = gr.HTML(elem_id="trace")
                        trace_plot = gr.LinePlot(x="token", y="value", height=220, label="Value along the reply",
                                                 x_axis_format="d")
                    with gr.Tab("Win probabilities", elem_id="tab-wins"):
                        gr.Markdown("P(i beats j) = sigmoid(r_i − r_j), the Bradley-Terry preference the RM implies.")
                        wins = gr.HTML(elem_id="wins")
                        luce = gr.Markdown(elem_id="luce")
                    with gr.Tab("Length bias", elem_id="tab-bias"):
                        alpha = gr.Slider(0, 5, value=0.5, step=0.1, label="α: reward given up per 100 tokens "
                                          "(length-penalised reward r − α·len/100)")
                        bias_text = gr.Markdown(elem_id="bias")
                        bias_plot = gr.ScatterPlot(x="tokens", y="reward", color="candidate", height=300, x_axis_format="d",
                                                   label="Reward vs reply length")
                    with gr.Tab("Compare RMs", elem_id="tab-compare"):
                        compare_text = gr.Markdown(elem_id="compare")
                        compare_table = gr.Dataframe(headers=COMPARE_HEADERS, interactive=False)
                    with gr.Tab("Export", elem_id="tab-export"):
                        gr.Markdown("JSONL of this session's turns: preference pairs (best vs each other "
                                    "candidate) or Nectar-style K-wise rankings, one record per turn.")
                        with gr.Row():
                            pairs_button = gr.Button("Export chosen/rejected pairs", elem_id="export-pairs")
                            nectar_button = gr.Button("Export Nectar K-wise", elem_id="export-nectar")
                        export = gr.File(label="Download", elem_id="export-file")
                    with gr.Tab("Model inputs", elem_id="tab-inputs"):
                        gr.Markdown("The exact text sent to the language model and to the reward model.")
                        lm_input = gr.Textbox(label="LM prompt", lines=4, max_lines=20, elem_id="lm-input",
                                              buttons=["copy"])
                        rm_input = gr.Textbox(label="RM input per candidate", lines=6, max_lines=30,
                                              elem_id="rm-input", buttons=["copy"])
                summary = gr.JSON(label="Turn", visible=False)
                pick = gr.Number(visible=False, precision=0, label="Candidate number")  # for API callers
                pick_button = gr.Button(visible=False)
                facts = gr.JSON(label="Insight", visible=False)  # for API callers
                facts_button = gr.Button(visible=False)
            with gr.Tab("Batch evaluation", elem_id="tab-eval"):
                gr.Markdown(EVAL_NOTE)
                eval_file = gr.File(label="Evaluation JSONL", file_types=[".jsonl", ".json", ".txt"],
                                    elem_id="eval-file")
                eval_button = gr.Button("Evaluate with the chosen reward model", variant="primary",
                                        elem_id="evaluate")
                eval_status = gr.Markdown(elem_id="eval-status")
                report = gr.Dataframe(headers=REPORT_HEADERS, label="Report", interactive=False, elem_id="report")
                eval_errors = gr.Textbox(label="Malformed rows", lines=3, interactive=False, elem_id="eval-errors")

        card_texts = [text for _, text, _, _ in cards]
        card_outputs = [c for card, text, badge, _ in cards for c in (card, text, badge)]
        settings = [lm, rm, n, temperature, top_p, max_new_tokens, seed, mode, system, readout, rm2, rm_format]
        turn_outputs = [session, chatbot, status, summary, message, *card_outputs]
        panel_outputs = [ranking, bars, trace_pick, trace_view, trace_plot, wins, luce, bias_text, bias_plot,
                         compare_text, compare_table, lm_input, rm_input]

        def bind(handler):
            """`handler` with the engine as its first argument, bound like a method: unlike a partial, Gradio
            still reads its type hints (gr.Request) and sees that it is a generator."""
            return MethodType(handler, engine)

        def one_at_a_time(group: str, handler, inputs: list) -> dict:
            """Event arguments: `handler` runs alone in concurrency group `group` ("gpu": turns and scoring;
            "eval": batch evaluations, which share the device with turns chunk by chunk); see
            `limit_jobs_per_visitor` for how many of a group's jobs one visitor may have."""
            return dict(fn=bind(handler), inputs=inputs, concurrency_id=group, concurrency_limit=1)

        def then_panels(event, new_turn: bool = False):
            """Refresh every insight panel after the turn changed; a new turn shows its best candidate's trace."""
            pick = gr.State(None) if new_turn else trace_pick
            return event.then(panels, [session, pick, alpha], panel_outputs, api_visibility="undocumented",
                              show_progress="hidden")

        sending = gr.on([send.click, message.submit], outputs=turn_outputs, api_name="chat", show_progress="minimal",
                        **one_at_a_time("gpu", chat, [session, message, *settings]))
        regenerating = regenerate_button.click(outputs=turn_outputs, api_name="regenerate", show_progress="minimal",
                                               **one_at_a_time("gpu", regenerate, [session, *settings]))
        for event in (sending, regenerating):
            then_panels(event, new_turn=True)
        # While a new turn streams, the ranking beside it must not show the previous turn's.
        gr.on([send.click, message.submit, regenerate_button.click],
              lambda: [pd.DataFrame(columns=RANKING_HEADERS), None], None, [ranking, bars], queue=False,
              api_visibility="private", show_progress="hidden")
        stop.click(request_stop, None, None, api_visibility="private")  # the turn then ends and is scored
        then_panels(rescore_button.click(outputs=turn_outputs, api_name="score", **one_at_a_time(
            "gpu", rescore, [session, rm, readout, rm2, *card_texts, rm_format])))
        then_panels(add.click(outputs=[*turn_outputs, own], api_name="add_candidate", **one_at_a_time(
            "gpu", add_candidate, [session, own, rm, readout, rm2, *card_texts, rm_format])))
        then_panels(pick_button.click(use_candidate, [session, pick], turn_outputs, api_name="use_candidate"))
        for number, (_, _, _, use) in enumerate(cards, 1):
            then_panels(use.click(use_candidate, [session, gr.State(number)], turn_outputs,
                                  api_visibility="undocumented"))
        then_panels(undo_button.click(undo, [session], turn_outputs, api_name="undo"), new_turn=True)
        then_panels(clear_button.click(clear, [session], turn_outputs, api_name="clear"), new_turn=True)
        then_panels(chatbot.clear(clear, [session], turn_outputs, api_visibility="private"), new_turn=True)
        trace_pick.change(trace_panel, [session, trace_pick], [trace_view, trace_plot], api_visibility="undocumented")
        alpha.change(bias_panel, [session, alpha], [bias_text, bias_plot], api_visibility="undocumented")
        # Loading runs beside turns (a loaded model is kept until the new one is in), one load at a time.
        for kind, dropdown in (("lm", lm), ("rm", rm), ("rm", rm2)):
            dropdown.change(partial(load_model, engine, kind), [dropdown], [status], api_visibility="undocumented",
                            concurrency_id="load", concurrency_limit=1)
        lm.change(bind(max_tokens_range), [lm, max_new_tokens], [max_new_tokens], api_visibility="private",
                  show_progress="hidden")
        facts_button.click(insight_json, [session, alpha], [facts], api_name="insight")
        pairs_button.click(export_pairs, [session], [export], api_name="export_pairs")
        nectar_button.click(export_nectar, [session], [export], api_name="export_nectar")
        # RewardBench reads the last token; the read-out follows the format (and can still be changed).
        rm_format.change(lambda f: "last-token" if f == "rewardbench" else "card", [rm_format], [readout],
                         api_visibility="private", show_progress="hidden")
        eval_button.click(outputs=[report, eval_errors, eval_status], api_name="evaluate",
                          **one_at_a_time("eval", evaluate_file, [eval_file, rm, readout, rm_format]))
    demo.queue(max_size=32, default_concurrency_limit=4)
    limit_jobs_per_visitor(demo)
    return demo
