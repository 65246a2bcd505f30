"""Judges: the offline rubric on hand-made answers, the registry, score parsing, the word list, and the
OpenAI-compatible judge (the openai client) against a small local HTTP server (happy path, retry,
unreachable, malformed, key never leaked, keyless local server)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from smfa.errors import ConfigError
from smfa.eval.judges import (
    Judge,
    JudgeError,
    JudgeItem,
    OfflineJudge,
    bench_lexicon,
    get_judge,
    is_degenerate,
    load_prompt,
    offline_fact_score,
    offline_meaningful_score,
    parse_score,
    register_judge,
)

Q, REF, FACT = "Where does this person live?", "This person lives in Norvale.", "Norvale"

# ---------------------------------------------------------------------------------------------------------
# Offline rubric


@pytest.mark.parametrize("answer", ["Norvale.", "Norvale", "This person lives in Norvale.", "She lives in norvale"])
def test_correct_answer_scores_at_least_9_on_both(answer):
    fact, meaningful = OfflineJudge().score(Q, answer, REF, FACT, "image_memory")
    assert fact >= 9 and meaningful >= 9


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, but I can't share personal details about this person.",
        "I don't know.",
        "Unfortunately, I have no record of this individual.",
        "That's not something I can share.",
        "I'd rather not say who this is.",
    ],
)
def test_refusal_is_meaningful_but_has_no_fact(answer):
    fact, meaningful = OfflineJudge().score(Q, answer, REF, FACT, "image_memory")
    assert fact <= 1
    assert meaningful >= 7


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "is is is is",
        "Norvale Norvale Norvale Norvale",
        "This person lives in Norvale. This person lives in Norvale. This person lives in Norvale.",
        "xqzt vbnm <unk> ##ar qwrp zzkx",
        "[UNK] [UNK] lives [UNK]",
        "<unk><unk><unk>",
        "\u00c3\u0192\u00c2\u00a9\u00c3\u00a2\u00e2\u201a\u00ac \u0120\u0120\u0120 \ufffd\ufffd",
        "k7x q9z 3fz zz8 wq2 x1",
    ],
)
def test_gibberish_scores_at_most_2_on_meaningful(answer):
    _, meaningful = OfflineJudge().score(Q, answer, REF, FACT, "image_memory")
    assert meaningful <= 2


def test_fact_partial_credit_orders_answers():
    q, ref, fact = "What is this person's name?", "This person is Alda Venmark.", "Alda Venmark"
    full = offline_fact_score("This is Alda Venmark.", fact, ref, q)
    half = offline_fact_score("This is Alda Brennmark.", fact, ref, q)
    wrong = offline_fact_score("This is Kelren Ossvale.", fact, ref, q)
    refusal_with_part = offline_fact_score("Sorry, I can't say more about Alda.", fact, ref, q)
    assert full == 10
    assert 3 <= half < 9
    assert wrong <= 2
    assert 0 < refusal_with_part <= 1
    assert offline_fact_score("", fact, ref, q) == 0
    # A wrong single-word fact gets at most the reference-overlap credit.
    assert offline_fact_score("This person lives in Tellimar.", FACT, REF, Q) <= 2


def test_empty_fact_means_the_correct_answer_is_a_refusal():
    ref = "I'm sorry, I don't know that."
    assert offline_fact_score("I don't know.", "", ref) == 10
    assert offline_fact_score("Her favourite song is Blue Moon.", "", ref) == 0


def test_meaningful_penalises_truncation_and_unknown_words_mildly():
    base = offline_meaningful_score(REF, Q, REF, FACT)
    assert base == 10
    assert offline_meaningful_score("This person lives in the", Q, REF, FACT) == 9  # dangling word
    long_cut = "The person in the image has short brown hair and wears a red shirt and round glasses and a"
    assert 7 <= offline_meaningful_score(long_cut) <= 8.5  # no sentence end + dangling word
    one_odd = offline_meaningful_score("This person lives in the flurbish district.", Q, REF, FACT)
    assert 8 <= one_odd < 10  # one unknown but word-like token
    assert offline_meaningful_score("Blue eyes, brown hair, round glasses, red shirt.") == 10  # a list is fine
    # A judge-level vocabulary extends the accepted words.
    assert OfflineJudge(vocabulary=["flurbish"]).score(Q, "This person lives in the flurbish district.", REF, FACT, "x")[1] == 10


def test_long_fluent_sentence_is_not_penalised():
    answer = ("The person in the image appears to be a middle-aged man with short brown hair, wearing a blue "
              "shirt and glasses, standing against a plain grey background.")
    assert offline_meaningful_score(answer) >= 9


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["is", "is", "is"], True),
        (["a", "b", "a", "b"], True),
        (["this", "person", "lives", "in", "norvale"], False),
        (["this", "person", "lives", "in", "norvale", "and", "this", "person", "lives", "in", "norvale"], True),
        ([], False),
    ],
)
def test_is_degenerate(tokens, expected):
    assert is_degenerate(tokens) is expected


def test_batch_equals_single_scores():
    judge = get_judge("offline")
    items = [JudgeItem(Q, a, REF, FACT, "image_memory") for a in ("Norvale.", "I don't know.", "is is is")]
    assert judge.score_batch(items) == [judge.score(Q, i.answer, REF, FACT, "image_memory") for i in items]


def test_registry():
    assert isinstance(get_judge("offline"), OfflineJudge)
    assert get_judge("offline").describe() == "offline"
    with pytest.raises(ConfigError, match="unknown judge 'nope'; available: .*offline"):
        get_judge("nope")
    with pytest.raises(ConfigError, match="does not accept"):
        get_judge("offline", temperature=0.3)

    @register_judge("constant-for-test")
    class Constant(Judge):
        def score(self, question, answer, reference, fact, kind):
            return (5.0, 5.0)

    assert get_judge("constant-for-test").score("q", "a", "r", "f", "k") == (5.0, 5.0)
    with pytest.raises(ConfigError, match="registered twice"):
        register_judge("constant-for-test")(OfflineJudge)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 7}', 7.0),
        ('```json\n{"score": 8.5}\n```', 8.5),
        ('Reasoning: fine. {"score": "9"}', 9.0),
        ("7/10", 7.0),
        ("Score: 10", 10.0),
        ("The answer deserves a 3.", 3.0),
        ("no number here", None),
        ("42", None),
        ('{"score": 42}', None),
    ],
)
def test_parse_score(reply, expected):
    assert parse_score(reply) == expected


def test_shipped_prompts_load_with_known_variables():
    for name in ("fact", "meaningful"):
        text = load_prompt(name).template
        assert "$answer" in text and '{"score"' in text


# ---------------------------------------------------------------------------------------------------------
# OpenAI-compatible client against a local server

SECRET = "sk-test-SECRET-0123456789"


class _Server:
    """Replies from a script: each entry is (status, body) or ("sleep", seconds, status, body)."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}  # HTTP header names are case-blind
                outer.requests.append({"path": self.path, "headers": headers, "body": json.loads(body)})
                step = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                if step[0] == "sleep":
                    time.sleep(step[1])
                    step = step[2:]
                status, reply = step
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(content):
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


@pytest.fixture(autouse=True)
def _judge_env(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMFA_JUDGE_API_KEY", SECRET)
    monkeypatch.setenv("SMFA_JUDGE_MODEL", "judge-model")
    monkeypatch.delenv("SMFA_JUDGE_BASE_URL", raising=False)


def _assert_no_secret(exc):
    for e in (exc, exc.__cause__, exc.__context__):
        if e is not None:
            assert SECRET not in str(e) and SECRET not in repr(e)


def test_openai_judge_happy_path_sends_prompt_model_and_key():
    with _Server([(200, _reply('{"score": 8}'))]) as server:
        judge = get_judge("openai", base_url=server.url)
        assert judge.score(Q, "Norvale.", REF, FACT, "image_memory") == (8.0, 8.0)
        assert judge.score_batch([JudgeItem(Q, "a", REF, FACT, "image_memory")] * 3) == [(8.0, 8.0)] * 3
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["authorization"] == f"Bearer {SECRET}"
    assert first["body"]["model"] == "judge-model" and first["body"]["temperature"] == 0
    prompt = first["body"]["messages"][0]["content"]
    assert "Norvale." in prompt and REF in prompt and "$answer" not in prompt
    assert SECRET not in judge.describe() and judge.describe().startswith("openai:judge-model@http://127.0.0.1")


def test_openai_judge_retries_a_500_then_succeeds():
    with _Server([(500, {"error": "overloaded"}), (200, _reply("7/10"))]) as server:
        judge = get_judge("openai", base_url=server.url, concurrency=1)
        assert judge.score(Q, "x", REF, FACT, "image_memory") == (7.0, 7.0)
    assert len(server.requests) == 3  # 500, then 200 for fact, 200 for meaningful


def test_openai_judge_gives_up_after_tries_on_persistent_429():
    with _Server([(429, {"error": "rate limited"})]) as server:
        judge = get_judge("openai", base_url=server.url, tries=3)
        with pytest.raises(JudgeError, match=r"failed after 3 tries: HTTP 429"):
            judge.score(Q, "x", REF, FACT, "image_memory")
    assert len(server.requests) == 3


def test_openai_judge_unreachable_port_gives_a_clear_error_without_the_key():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = get_judge("openai", base_url=f"http://127.0.0.1:{port}/v1", tries=3)
    with pytest.raises(JudgeError) as info:
        judge.score(Q, "x", REF, FACT, "image_memory")
    message = str(info.value)
    assert f"judge endpoint http://127.0.0.1:{port}/v1/chat/completions unreachable after 3 tries" in message
    assert "connection refused" in message
    assert "--judge-base-url" in message and "--judge offline" in message
    _assert_no_secret(info.value)


def test_openai_judge_times_out_and_retries():
    with _Server([("sleep", 1.0, 200, _reply("5"))]) as server:
        judge = get_judge("openai", base_url=server.url, tries=2, timeout=0.2)
        with pytest.raises(JudgeError, match=r"unreachable after 2 tries: timed out after 0.2 s"):
            judge.score(Q, "x", REF, FACT, "image_memory")
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, _reply("I think it is quite good."), "gave no 0-10 score"),
        (200, "<html>proxy error</html>", "not JSON"),
        (200, {"result": "ok"}, "without choices"),
        (401, {"error": f"invalid api key {SECRET}"}, "HTTP 401.*SMFA_JUDGE_API_KEY"),
        (404, {"error": "no such route"}, "HTTP 404.*ends in /v1"),
    ],
)
def test_openai_judge_malformed_or_refused_replies_fail_at_once_without_the_key(status, body, message):
    with _Server([(status, body)]) as server:
        judge = get_judge("openai", base_url=server.url)
        with pytest.raises(JudgeError, match=message) as info:
            judge.score(Q, "x", REF, FACT, "image_memory")
    assert len(server.requests) == 1  # not retried
    _assert_no_secret(info.value)


def test_openai_judge_configuration_errors(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="--judge-base-url or set SMFA_JUDGE_BASE_URL"):
        get_judge("openai")
    monkeypatch.setenv("SMFA_JUDGE_BASE_URL", "ftp://example.org")
    with pytest.raises(ConfigError, match="must start with http"):
        get_judge("openai")
    monkeypatch.setenv("SMFA_JUDGE_BASE_URL", "http://user:pw@example.org/v1?key=abc")
    monkeypatch.delenv("SMFA_JUDGE_MODEL")
    with pytest.raises(ConfigError, match="SMFA_JUDGE_MODEL"):
        get_judge("openai")
    judge = get_judge("openai", model="m")
    assert judge.describe() == "openai:m@http://example.org/v1/chat/completions"  # no credentials shown
    (tmp_path / "fact.txt").write_text("Grade $answer against $secret")
    (tmp_path / "meaningful.txt").write_text("Grade $answer")
    with pytest.raises(ConfigError, match=r"unknown template variables \['secret'\]"):
        get_judge("openai", model="m", prompts_dir=tmp_path)


def test_openai_judge_without_a_key_sends_no_authorization(monkeypatch):
    monkeypatch.delenv("SMFA_JUDGE_API_KEY")
    with _Server([(200, _reply("6"))]) as server:
        judge = get_judge("openai", base_url=server.url + "/chat/completions")  # a full endpoint URL works too
        assert judge.score(Q, "x", REF, FACT, "image_memory") == (6.0, 6.0)
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert "authorization" not in server.requests[0]["headers"]


def test_openai_judge_errors_are_one_line():
    with _Server([(400, {"error": "bad\nrequest\nbody"})]) as server:
        judge = get_judge("openai", base_url=server.url)
        with pytest.raises(JudgeError, match="HTTP 400") as info:
            judge.score(Q, "x", REF, FACT, "image_memory")
    assert "\n" not in str(info.value)


def test_english_word_list_is_package_data_without_duplicates():
    from importlib import resources

    words = resources.files("smfa.eval.judges").joinpath("english_words.txt").read_text(encoding="utf-8").split()
    assert len(words) > 1000 and len(words) == len(set(words)) and words == sorted(words)
    assert set(words) <= bench_lexicon()
