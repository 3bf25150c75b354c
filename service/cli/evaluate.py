"""``tuneline chat``, ``tuneline eval`` and ``tuneline experiments``: use and compare fine-tunes."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from service.cli.client import clip, connect, echo_json, sse_events, table

METRICS = ("exact_match", "char_f1", "rouge_l", "bleu")
# Summary figures of one training method's evaluation (DESIGN §9), shown where a summary has them.
METHOD_METRICS = ("preference_accuracy", "preference_margin")


def _shown(summaries: list[dict[str, Any] | None]) -> tuple[str, ...]:
    """The generation metrics, then each method figure that one of ``summaries`` carries."""
    present = {name for s in summaries if s for name, value in s.items() if value is not None}
    return METRICS + tuple(name for name in METHOD_METRICS if name in present)


@click.command()
@click.argument("model")
@click.option("-m", "--message", help="Ask once and exit (otherwise: interactive, Ctrl-D ends).")
@click.option("--system", default=None, help="A system prompt.")
@click.option("--max-tokens", type=click.IntRange(1, 32768), default=512, show_default=True)
@click.option("--temperature", type=click.FloatRange(0.0, 2.0), default=0.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print each answer as the completion JSON.")
def chat(
    model: str, message: str | None, system: str | None, max_tokens: int, temperature: float, as_json: bool
) -> None:
    """Chat with one of your fine-tuned models (streamed; the conversation is kept)."""
    conn = connect()
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def ask(text: str) -> None:
        history.append({"role": "user", "content": text})
        body = {"model": model, "messages": history, "max_tokens": max_tokens, "temperature": temperature}
        if as_json:
            answer = conn.call("POST", "/v1/chat/completions", json=body)
            echo_json(answer)
            reply = answer["choices"][0]["message"]["content"] or ""
        else:
            reply = ""
            with conn.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                for _, data in sse_events(response.iter_lines()):
                    if data == "[DONE]":
                        break
                    choices = json.loads(data).get("choices") or [{}]
                    piece = (choices[0].get("delta") or {}).get("content")
                    if piece:
                        reply += piece
                        click.echo(piece, nl=False)
            click.echo()
        history.append({"role": "assistant", "content": reply})

    if message is not None:
        ask(message)
        return
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            click.echo("> ", nl=False, err=True)
        line = sys.stdin.readline()
        if not line:
            break
        if line.strip():
            ask(line.rstrip("\n"))


def _summary_table(
    metrics: dict[str, Any] | None, baseline: dict[str, Any] | None, baseline_model: str | None
) -> str:
    headers = ["metric", "fine-tuned"] + ([f"base ({baseline_model})"] if baseline else [])
    rows = [
        [name, (metrics or {}).get(name)] + ([baseline.get(name)] if baseline else [])
        for name in _shown([metrics, baseline])
    ]
    return table(headers, rows)


def _margin(row: dict[str, Any]) -> float | None:
    """log p(preferred) - log p(non-preferred) of a DPO example (None where it was not scored)."""
    preferred, other = row.get("preferred_logprob"), row.get("non_preferred_logprob")
    return None if preferred is None or other is None else round(preferred - other, 2)


@click.command("eval")
@click.argument("job_id")
@click.option(
    "--examples",
    "n_examples",
    type=click.IntRange(0, 100),
    default=10,
    show_default=True,
    help="Rows to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation JSON.")
def eval_(job_id: str, n_examples: int, as_json: bool) -> None:
    """Show a job's held-out evaluation: metrics (and the base model's), then answers by reference."""
    result = connect().call(
        "GET", f"/v1/fine_tuning/jobs/{job_id}/evaluation", params={"limit": max(n_examples, 1)}
    )
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"{result['job_id']}  model {result['model']}  "
        f"evaluation {result['status']}  ({result['examples']} examples)"
    )
    if result["metrics"]:
        click.echo(_summary_table(result["metrics"], result.get("baseline"), result.get("baseline_model")))
    rows = result["data"][:n_examples]
    if rows:
        scored = any("preferred_logprob" in r for r in rows)  # DPO: the pair's log-probability margin
        click.echo()
        click.echo(
            table(
                ["#", "prompt", "reference", "answer", "char_f1"] + (["margin"] if scored else []),
                [
                    [
                        r["index"],
                        clip(r["prompt"], 30),
                        clip(r["reference"], 30),
                        clip(r["answer"] or "", 30),
                        r["char_f1"],
                    ]
                    + ([_margin(r)] if scored else [])
                    for r in rows
                ],
            )
        )


def parse_candidate(spec: str, option: str = "--candidate") -> dict[str, Any]:
    """``PROVIDER:MODEL[:key=value,...]``; values are JSON where they parse (numbers, true)."""
    provider, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise click.BadParameter(f"{spec!r}: expected PROVIDER:MODEL[:key=value,...]", param_hint=option)
    model, hyper = rest, {}
    head, _, tail = rest.rpartition(":")
    if head and "=" in tail:
        model = head
        for pair in tail.split(","):
            key, eq, raw = pair.partition("=")
            if not eq or not key:
                raise click.BadParameter(f"{pair!r}: expected key=value", param_hint=option)
            try:
                hyper[key] = json.loads(raw)
            except ValueError:
                hyper[key] = raw
    out: dict[str, Any] = {"provider": provider, "model": model}
    if hyper:
        out["hyperparameters"] = hyper
    return out


def _experiment_table(exp: dict[str, Any]) -> str:
    shown = _shown([s for c in exp["candidates"] for s in (c.get("metrics"), c.get("baseline"))])
    # The base's headline figure: its preference accuracy for DPO candidates, else its char_f1.
    base_figure = "preference_accuracy" if "preference_accuracy" in shown else "char_f1"
    rows = []
    for c in exp["candidates"]:
        metrics, base = c.get("metrics") or {}, c.get("baseline") or {}
        best = "*" if exp.get("best_candidate") == c["index"] else ""
        rows.append(
            [
                f"{c['index']}{best}",
                c.get("provider"),
                clip(c.get("model") or "", 32),
                c["status"],
                *(metrics.get(m) for m in shown),
                base.get(base_figure),
                c.get("estimated_cost_usd"),
                c.get("trained_tokens"),
                c.get("duration_s"),
                c.get("job_id"),
            ]
        )
    headers = [
        "#",
        "provider",
        "model",
        "status",
        *shown,
        f"base {base_figure}",
        "cost_usd",
        "tokens",
        "seconds",
        "job",
    ]
    return table(headers, rows)


def _show(exp: dict[str, Any], n_examples: int) -> None:
    click.echo(f"{exp['id']}  {exp.get('name') or ''}  {exp['status']}")
    click.echo(_experiment_table(exp))
    examples = (exp.get("examples") or [])[:n_examples]
    for e in examples:
        click.echo()
        click.echo(f"[{e['id']}] {clip(e['prompt'], 100)}")
        click.echo(f"  reference: {clip(e['reference'], 100)}")
        for i, a in enumerate(e["answers"]):
            click.echo(f"  #{i}: {clip((a or {}).get('answer') or '-', 100)}")
        for b in e.get("baselines") or []:
            click.echo(f"  base: {clip(b.get('answer') or '-', 100)}")


@click.group()
def experiments() -> None:
    """Train several candidates on one dataset and compare them on held-out data."""


@experiments.command("create")
@click.option("--training-file", required=True, help="A processed file id.")
@click.option("--test-file", default=None, help="A held-out file id (or use --test-split).")
@click.option(
    "--test-split",
    type=click.FloatRange(0.0, 0.5, min_open=True),
    default=None,
    help="Hold out this fraction.",
)
@click.option("--seed", type=int, default=None, help="Split seed (shared by all candidates).")
@click.option("--name", default=None)
@click.option(
    "--candidate",
    "candidates",
    multiple=True,
    required=True,
    help="PROVIDER:MODEL[:key=value,...], repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the experiment JSON.")
def create(
    training_file: str,
    test_file: str | None,
    test_split: float | None,
    seed: int | None,
    name: str | None,
    candidates: tuple[str, ...],
    as_json: bool,
) -> None:
    """Start one fine-tuning job per candidate on identical data and split."""
    body: dict[str, Any] = {
        "training_file": training_file,
        "candidates": [parse_candidate(c) for c in candidates],
    }
    if test_file:
        body["test_file"] = test_file
    if test_split:
        body["prepare"] = {"split": {"test": test_split, **({"seed": seed} if seed is not None else {})}}
    if name:
        body["name"] = name
    exp = connect().call("POST", "/v1/experiments", json=body)
    if as_json:
        echo_json(exp)
    else:
        _show(exp, 0)


@experiments.command("get")
@click.argument("experiment_id")
@click.option("--examples", "n_examples", type=click.IntRange(0, 100), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the experiment JSON.")
def get(experiment_id: str, n_examples: int, as_json: bool) -> None:
    """The side-by-side table, then answers next to the reference per test example."""
    exp = connect().call("GET", f"/v1/experiments/{experiment_id}", params={"limit": max(n_examples, 1)})
    if as_json:
        echo_json(exp)
    else:
        _show(exp, n_examples)
