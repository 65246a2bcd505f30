"""The ``openai`` judge.

``openai`` (any OpenAI-compatible chat-completions endpoint)
=============================================================

Sends the prompts shipped in ``smfa/eval/prompts/`` (``fact.txt``, ``meaningful.txt``; override with
``prompts_dir``) to ``<base_url>/chat/completions`` at temperature 0 and parses a 0-10 score from the reply
(``{"score": 7}``, ``7/10`` or a bare number). The endpoint comes from ``base_url`` (``--judge-base-url``) or
``SMFA_JUDGE_BASE_URL``; the model from ``model`` or ``SMFA_JUDGE_MODEL``; the API key only from the
environment (``SMFA_JUDGE_API_KEY``, else ``OPENAI_API_KEY``; none for local servers). The key is sent as a
bearer token and never written anywhere: not to :meth:`Judge.describe`, manifests, logs or error messages
(which are redacted). Requests go through the ``openai`` client, which retries 408, 409, 429, 5xx, timeouts and
connection errors with exponential backoff (0.5 s doubling, at most 8 s; a ``Retry-After`` header wins) for
``tries`` attempts in all; other HTTP errors and replies without a score fail at once, in one line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import string
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from smfa.errors import ConfigError
from smfa.eval.judges.base import Judge, JudgeError, JudgeItem, Scores, register_judge

ENV_BASE_URL = "SMFA_JUDGE_BASE_URL"
ENV_MODEL = "SMFA_JUDGE_MODEL"
ENV_API_KEYS = ("SMFA_JUDGE_API_KEY", "OPENAI_API_KEY")
PROMPT_FIELDS = ("question", "answer", "reference", "fact", "kind")
_SCORE_NUMBER = re.compile(r"(?<![\d.])(10(?:\.0+)?|\d(?:\.\d+)?)(?:\s*/\s*10)?(?!\d|\.\d)")
_RETRIED_STATUS = (408, 409, 429)  # and every 5xx: what the openai client retries


def _api_key() -> str | None:
    for name in ENV_API_KEYS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def display_url(url: str) -> str:
    """``url`` without user:password and query string (where credentials hide)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def load_prompt(name: str, prompts_dir: str | Path | None = None) -> string.Template:
    """A judge prompt (``fact`` or ``meaningful``) from ``prompts_dir`` or the package's ``prompts/``."""
    if prompts_dir is not None:
        path = Path(prompts_dir) / f"{name}.txt"
        if not path.is_file():
            raise ConfigError(f"judge prompt {path} does not exist; the prompts directory needs fact.txt and meaningful.txt")
        text = path.read_text(encoding="utf-8")
    else:
        text = resources.files("smfa.eval").joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")
    template = string.Template(text)
    used = {m.group("named") or m.group("braced") for m in template.pattern.finditer(text)} - {None}
    unknown = used - set(PROMPT_FIELDS)
    if unknown:
        raise ConfigError(
            f"judge prompt {name}.txt uses unknown template variables {sorted(unknown)}; allowed: "
            + ", ".join(f"${f}" for f in PROMPT_FIELDS)
        )
    return template


def parse_score(text: str) -> float | None:
    """A 0-10 score from a judge reply: JSON ``{"score": 7}`` (also inside a code fence or prose), else
    the first number 0-10 (``"7/10"``, ``"Score: 7.5"``); ``None`` if there is none."""
    for match in re.finditer(r"\{[^{}]*\}", text):
        try:
            obj = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        value = obj.get("score") if isinstance(obj, dict) else None
        if isinstance(value, str):
            value = value.strip()
            value = float(value) if re.fullmatch(r"\d+(?:\.\d+)?", value) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 10:
            return float(value)
    match = _SCORE_NUMBER.search(text)
    return float(match.group(1)) if match else None


def _connection_reason(exc: BaseException, timeout: float) -> str:
    """Why a connection failed, from the innermost cause the client chained."""
    causes = []
    while exc is not None and len(causes) < 10:
        causes.append(exc)
        exc = exc.__cause__ or exc.__context__
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, (TimeoutError, socket.timeout)):
            return f"timed out after {timeout:g} s"
    return str(causes[-1]) or type(causes[-1]).__name__


@register_judge("openai")
class OpenAIJudge(Judge):
    """LLM judge over an OpenAI-compatible ``/chat/completions`` endpoint (module docstring).

    Args:
        base_url: e.g. ``http://localhost:8000/v1`` (default: ``$SMFA_JUDGE_BASE_URL``).
        model: the judge model name (default: ``$SMFA_JUDGE_MODEL``).
        timeout: seconds per request (default 60).
        tries: attempts per request in all, for 408/409/429/5xx/timeouts/connection errors (default 3).
        max_tokens: reply length limit (default 64; raise it for reasoning models).
        concurrency: parallel requests in :meth:`score_batch` (default 4).
        prompts_dir: a directory with ``fact.txt`` and ``meaningful.txt`` to use instead of the shipped ones.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        timeout: float = 60.0,
        tries: int = 3,
        max_tokens: int = 64,
        concurrency: int = 4,
        prompts_dir: str | Path | None = None,
    ) -> None:
        import openai

        base_url = (base_url or os.environ.get(ENV_BASE_URL, "")).strip()
        if not base_url:
            raise ConfigError(f"the openai judge needs an endpoint: pass --judge-base-url or set {ENV_BASE_URL}")
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"judge base URL {display_url(base_url)!r} must start with http:// or https://")
        self.model = (model or os.environ.get(ENV_MODEL, "")).strip()
        if not self.model:
            raise ConfigError(f"the openai judge needs a model name: set {ENV_MODEL} (e.g. qwen-plus)")
        if tries < 1 or timeout <= 0 or max_tokens < 1 or concurrency < 1:
            raise ConfigError("judge options out of range: tries, max_tokens and concurrency must be ≥ 1, timeout > 0")
        root = parts.path.rstrip("/").removesuffix("/chat/completions")
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, root + "/chat/completions", parts.query, ""))
        self.timeout, self.tries = float(timeout), int(tries)
        self.max_tokens, self.concurrency = int(max_tokens), int(concurrency)
        self.prompts = {name: load_prompt(name, prompts_dir) for name in ("fact", "meaningful")}
        key = _api_key()
        # The client insists on a key; a keyless local server gets no Authorization header at all.
        self._headers: dict[str, Any] = {} if key else {"Authorization": openai.Omit()}
        self._client = openai.OpenAI(
            base_url=urllib.parse.urlunsplit((parts.scheme, parts.netloc, root, "", "")),
            api_key=key or "unused",
            default_query=dict(urllib.parse.parse_qsl(parts.query)) or None,
            timeout=self.timeout,
            max_retries=self.tries - 1,
        )

    def describe(self) -> str:
        return f"openai:{self.model}@{display_url(self.url)}"

    def _fail(self, message: str) -> JudgeError:
        key = _api_key()
        if key:
            message = message.replace(key, "***")
        return JudgeError(message.replace(self.url, display_url(self.url)))

    def _complete(self, prompt: str) -> dict[str, Any]:
        """The endpoint's JSON reply to one prompt; a one-line :class:`JudgeError` when there is none."""
        import openai

        where = f"judge endpoint {display_url(self.url)}"
        hint = "check --judge-base-url or use --judge offline"
        failure = ""
        try:
            response = self._client.chat.completions.with_raw_response.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0,
                max_tokens=self.max_tokens, extra_headers=self._headers,
            )
        except openai.APIStatusError as exc:
            status = f"HTTP {exc.status_code} {exc.response.reason_phrase}"
            if exc.status_code in _RETRIED_STATUS or exc.status_code >= 500:
                failure = f"{where} failed after {self.tries} tries: {status}; {hint}"
            else:
                detail = exc.response.text[:300].strip()
                advice = {
                    401: f"check the API key in {ENV_API_KEYS[0]}",
                    403: f"check the API key in {ENV_API_KEYS[0]} and its permissions",
                    404: "check --judge-base-url (it usually ends in /v1) and the model name",
                }.get(exc.status_code, hint)
                failure = f"{where} answered {status}: {detail[:200]!r}; {advice}"
        except openai.APIConnectionError as exc:
            failure = f"{where} unreachable after {self.tries} tries: {_connection_reason(exc, self.timeout)}; {hint}"
        if failure:
            raise self._fail(failure)  # outside the except: the client's error, which may quote the key, is not chained
        raw = response.http_response.content
        try:
            reply = json.loads(raw.decode("utf-8", errors="replace"))
        except json.JSONDecodeError as exc:
            shown = raw[:200].decode("utf-8", errors="replace")
            raise self._fail(f"{where} replied with something that is not JSON: {shown!r}; {hint}") from exc
        if not isinstance(reply, dict):
            raise self._fail(f"{where} replied with JSON that is not an object; {hint}")
        return reply

    def _ask(self, prompt: str) -> float:
        reply = self._complete(prompt)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise self._fail(
                f"judge endpoint {display_url(self.url)} replied without choices[0].message.content: "
                f"{json.dumps(reply)[:200]}; is it an OpenAI-compatible chat-completions endpoint?"
            ) from exc
        score = parse_score(content if isinstance(content, str) else "")
        if score is None:
            raise self._fail(
                f"judge model {self.model} at {display_url(self.url)} gave no 0-10 score: {str(content)[:200]!r}; "
                "use a stronger judge model, raise max_tokens, or adjust the prompts"
            )
        return score

    def score(self, question: str, answer: str, reference: str, fact: str, kind: str) -> Scores:
        values = {"question": question, "answer": answer, "reference": reference, "fact": fact, "kind": kind}
        return (
            self._ask(self.prompts["fact"].safe_substitute(values)),
            self._ask(self.prompts["meaningful"].safe_substitute(values)),
        )

    def score_batch(self, items: Sequence[JudgeItem]) -> list[Scores]:
        if self.concurrency == 1 or len(items) <= 1:
            return super().score_batch(items)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda i: self.score(i.question, i.answer, i.reference, i.fact, i.kind), items))
