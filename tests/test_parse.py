"""Table-driven tests of edgejudge.parse: valid judge outputs and adversarial ones."""

from __future__ import annotations

import random

import pytest

from edgejudge.parse import METHODS, TAIL_CHARS, ParseResult, parse_jsonl, parse_output
from edgejudge.prompt import JUDGE_TEMPLATE

ECHO = JUDGE_TEMPLATE.format(
    instruction="What is in the image?",
    response="A cat on a sofa.",
    reference_answer="A grey cat sleeping on a red sofa.",
    criteria="Is the answer correct?",
    score1_description="Wrong.",
    score2_description="Mostly wrong.",
    score3_description="Partly right.",
    score4_description="Right with slips.",
    score5_description="Fully right, score 5.",
)
FORMAT_LINE = (
    "The output format should look as follows: Feedback: (write a feedback for criteria) "
    "[RESULT] (an integer number between 1 and 5)"
)
TRAINING = (
    "The response correctly identifies the cat but misses the sofa's colour, which the rubric asks for. "
    "So the overall score is 3.\n[RESULT] 3"
)
LONG_TAIL = "x" * (TAIL_CHARS + 50)

# (id, text, expected score, expected method)
VALID = [
    ("training-target", TRAINING, 3, "result_marker"),
    ("feedback-prefix", "Feedback: Good answer. [RESULT] 5", 5, "result_marker"),
    ("colon", "Fine. [RESULT]: 4", 4, "result_marker"),
    ("parenthesised", "Fine. [RESULT] (2)", 2, "result_marker"),
    ("fraction-after-marker", "Fine. [RESULT] 4/5", 4, "result_marker"),
    ("out-of-5-after-marker", "Fine. [RESULT] 3 out of 5", 3, "result_marker"),
    ("eos-token", "Fine. [RESULT] 4</s>", 4, "result_marker"),
    ("eos-after-newline", "Fine. [RESULT] 5\n</s>", 5, "result_marker"),
    ("trailing-punct-space", "Fine. [RESULT] 4.  \n\n", 4, "result_marker"),
    ("markdown-bold-marker", "**Feedback:** Nice.\n**[RESULT]** 4", 4, "result_marker"),
    ("markdown-bold-all", "Nice. **[RESULT] 2**", 2, "result_marker"),
    ("markdown-bold-digit", "Nice. [RESULT] **1**", 1, "result_marker"),
    ("lowercase", "ok [result] 1", 1, "result_marker"),
    ("spaces-in-brackets", "ok [ RESULT ] 5", 5, "result_marker"),
    ("number-word", "ok [RESULT] four", 4, "result_marker"),
    ("score-word-after-marker", "ok [RESULT] Score: 3", 3, "result_marker"),
    ("equals", "ok [RESULT]=5", 5, "result_marker"),
    ("dash-separator", "ok [RESULT] - 2", 2, "result_marker"),
    ("newline-before-digit", "ok [RESULT]\n4", 4, "result_marker"),
    ("closing-paren-only", "ok [RESULT] 3)", 3, "result_marker"),
    ("fullwidth-digit", "ok [RESULT] ４", 4, "result_marker"),
    ("chinese-marker", "反馈: 回答准确。 [结果] 4", 4, "result_marker_zh"),
    ("chinese-lenticular", "回答准确。【结果】5", 5, "result_marker_zh"),
    (
        "multiple-last-wins",
        "First guess [RESULT] 2. On reflection the answer is good. [RESULT] 4",
        4,
        "result_marker",
    ),
    (
        "echo-before-answer",
        ECHO + "\n" + FORMAT_LINE + "\nThe answer is good. [RESULT] 4",
        4,
        "result_marker",
    ),
    ("echo-after-answer", "Good. [RESULT] 4\n" + ECHO + "\n" + FORMAT_LINE, 4, "result_marker"),
    (
        "rubric-lines-before",
        "Score 1: Wrong.\nScore 5: Fully right.\nThe response is mostly wrong. [RESULT] 2",
        2,
        "result_marker",
    ),
    (
        "digits-in-feedback",
        "The image shows 3 cats and 5 dogs; the response says 7 animals. [RESULT] 2",
        2,
        "result_marker",
    ),
    (
        "quoted-injection",
        'The response contains "[RESULT] 5" to game the judge. [RESULT] 1',
        1,
        "result_marker",
    ),
    ("text-after-marker", "So the overall score is 4.\n[RESULT] 4\n\nThank you!", 4, "result_marker"),
    ("marker-beats-phrase", "Score: 4\n[RESULT] 2", 2, "result_marker"),
    ("score-colon", "The answer is accurate.\nScore: 4", 4, "score_phrase"),
    ("score-fraction", "The answer is accurate. Score: 5/5", 5, "score_phrase"),
    ("score-of", "I would give this response a score of 3.", 3, "score_phrase"),
    ("rating", "Accurate and complete. Rating: 3", 3, "score_phrase"),
    ("give-it", "Mostly right, I give it a 4.", 4, "score_phrase"),
    ("overall-score", "The answer misses the dog. So the overall score is 2.", 2, "overall_score"),
    ("final-score-bold", "Good. The final score is **4**.", 4, "overall_score"),
    ("marker-without-number-then-phrase", "So the overall score is 3.\n[RESULT]", 3, "overall_score"),
    ("bare-fraction", "Overall, 4/5.", 4, "fraction"),
    ("out-of-5", "Decent answer: 4 out of 5", 4, "fraction"),
    # forms peers accept (issue 8, item 18)
    ("paren-score-at-end", "The answer names the cat but not the sofa. (Score 4)", 4, "score_phrase"),
    ("bracket-score-at-end", "The answer names the cat but not the sofa. [Score 4]", 4, "score_phrase"),
    ("bracket-score-colon-period", "Right on every count. [Score: 5].", 5, "score_phrase"),
    ("paren-score-then-eos", "Mostly wrong. (score 2)</s>", 2, "score_phrase"),
    ("paren-score-fraction", "Partly right. (Score 3/5)", 3, "score_phrase"),
    ("result-marker-then-result-word", "Fine. [Result] Result: 3", 3, "result_marker"),
    ("result-marker-newline-result", "Fine.\n[RESULT]\nResult: 2", 2, "result_marker"),
    ("result-marker-bold-result-word", "Fine. **[RESULT]** **Result:** 4", 4, "result_marker"),
]

# (id, text, substring expected in the reason)
REJECTED = [
    ("empty", "", "empty"),
    ("whitespace", "   \n\t ", "empty"),
    ("eos-only", "</s>", "empty"),
    ("out-of-range-7", "Great. [RESULT] 7", "7 is outside"),
    ("zero", "Bad. [RESULT] 0", "0 is outside"),
    ("ten", "Great. [RESULT] 10", "10 is outside"),
    ("negative", "Bad. [RESULT] -3", "outside"),
    ("half", "Okay. [RESULT] 4.5", "not a whole number"),
    ("decimal-comma", "Okay. [RESULT] 4,5", "not a whole number"),
    ("six-over-five", "Great. [RESULT] 6/5", "outside"),
    ("ten-point-scale", "Great. [RESULT] 8 out of 10", "scale of 10"),
    ("last-marker-invalid", "Fine. [RESULT] 3 then [RESULT] 7", "7 is outside"),
    ("marker-alone", "[RESULT]", "no [RESULT] marker"),
    (
        "prompt-placeholder",
        "Feedback: (write a feedback for criteria) [RESULT] (an integer number between 1 and 5)",
        "no [RESULT] marker",
    ),
    ("range-after-marker", "The answer [RESULT] 1-5", "no [RESULT] marker"),
    ("full-prompt-echo", ECHO, "no [RESULT] marker"),
    ("rubric-line-only", "Score 5: The response is perfect.", "no [RESULT] marker"),
    ("reference-phrase", "A reference answer that gets a score of 5", "no [RESULT] marker"),
    ("plain-digits", "There are 5 people and 2 dogs in the picture.", "no [RESULT] marker"),
    ("fraction-of-objects", "The response names 2/5 of the objects correctly.", "no [RESULT] marker"),
    ("date", "Taken on 1/5/2023 in the park.", "no [RESULT] marker"),
    ("phrase-far-from-end", "Score: 4. " + LONG_TAIL, "characters before the end"),
    ("phrase-out-of-range", "Excellent work overall. Score: 7", "7 is outside"),
    ("paren-score-header", "###Reference Answer (Score 5):", "no [RESULT] marker"),
    ("bracket-score-mid-text", "[Score 4] is what a lax judge says; this is worse.", "no [RESULT] marker"),
    ("paren-score-out-of-range", "Superb. (Score 9)", "9 is outside"),
    ("paren-score-ten-scale", "Superb. (Score 9/10)", "scale of 10"),
    ("result-word-out-of-range", "Great. [RESULT] Result: 6", "6 is outside"),
]


@pytest.mark.parametrize(("text", "score", "method"), [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_outputs(text: str, score: int, method: str) -> None:
    result = parse_output(text)
    assert (result.score, result.method, result.reason) == (score, method, None)
    assert result.raw == text
    assert result.ok


@pytest.mark.parametrize(("text", "reason"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_rejected_outputs(text: str, reason: str) -> None:
    result = parse_output(text)
    assert result.score is None
    assert result.method == "none"
    assert result.reason is not None and reason in result.reason
    assert result.raw == text
    assert not result.ok


def test_table_is_large_enough() -> None:
    assert len(VALID) + len(REJECTED) >= 40
    assert {m for _, _, _, m in VALID} | {"none"} == set(METHODS)


@pytest.mark.parametrize(
    ("text", "feedback"),
    [
        (TRAINING, TRAINING.split("\n[RESULT]")[0]),
        ("Feedback: Good answer. [RESULT] 5", "Good answer."),
        ("**Feedback:** Nice.\n**[RESULT]** 4", "Nice."),
        ("反馈: 回答准确。 [结果] 4", "回答准确。"),
        ("  Feedback:   Spaces around.  \n[RESULT] 3 ", "Spaces around."),
        ("The answer is accurate.\nScore: 4", "The answer is accurate."),
        (
            "The answer misses the dog. So the overall score is 2.",
            "The answer misses the dog. So the overall score is 2.",
        ),
        ("Great. [RESULT] 7", "Great."),
        ("Feedback: no score here", "no score here"),
    ],
)
def test_feedback_is_text_before_the_marker(text: str, feedback: str) -> None:
    assert parse_output(text).feedback == feedback


def test_never_raises_on_odd_input() -> None:
    for text in (
        None,
        "[RESULT] " + "9" * 5000,
        "[" * 10000,
        "[RESULT]" * 2000,
        "\x00\x01[RESULT] 3",
        "🙂" * 50,
    ):
        result = parse_output(text)  # type: ignore[arg-type]
        assert isinstance(result, ParseResult)
    assert parse_output("\x00\x01[RESULT] 3").score == 3
    assert parse_output(None).reason == "empty output"  # type: ignore[arg-type]


def test_result_is_frozen() -> None:
    result = parse_output("[RESULT] 3")
    with pytest.raises(AttributeError):
        result.score = 4  # type: ignore[misc]


def test_invariants_on_generated_noise() -> None:
    alphabet = (
        "[RESULT]|[结果]| |\n|**|_|Score|:|score of|overall|is|4|5|0|7|/|out of|(|)|-|.|1.5|four|</s>|the"
    )
    tokens = alphabet.split("|") + ["Feedback:", "    "]
    rng = random.Random(0)
    for _ in range(500):
        text = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 120)))
        result = parse_output(text)
        assert result.score in (None, 1, 2, 3, 4, 5)
        assert (result.score is None) == (result.method == "none") == (result.reason is not None)
        assert result.raw == text


def test_long_whitespace_runs_keep_feedback_intact() -> None:
    text = "Good" + " " * 5000 + "answer.\n" + "*" * 3000 + "[RESULT]" + " " * 3000 + "4"
    result = parse_output(text)
    assert result.score == 4
    assert result.feedback == "Good" + " " * 5000 + "answer."


# Every fragment the parser looks for (markers, phrase words, EOS tokens, markdown, brackets, digits): a text
# made of one of them repeated is the worst case for a loop that strips one suffix at a time or a pattern
# that backtracks (issue 8, item 11: 1.6 MB of " </s>" took 8 s).
ADVERSARIAL_FRAGMENTS = (
    " </s>", "</s>", "<|endoftext|>", "<|im_end|>", "[RESULT]", "[RESULT] ", "[ RESULT ]", "[结果]",
    "【结果】", "Feedback:", " * ", "> ", "*", "_", "`", "#", "\n", " ", "[", "(", "(Score ", "[Score 4] ",
    "Score: ", "score of ", "overall score is ", "give it a ", "4/5 ", "1/5/", "4 out of ", "1-", "4.",
    "9" * 30, "Result: ",
)  # fmt: skip


def _parse_seconds(text: str) -> float:
    import time

    best = float("inf")
    for _ in range(3):  # the best of three: a busy CI machine slows single runs, never speeds them up
        start = time.perf_counter()
        parse_output(text)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("fragment", ADVERSARIAL_FRAGMENTS, ids=repr)
def test_parse_time_grows_linearly(fragment: str) -> None:
    small = fragment * (100_000 // len(fragment) + 1)
    large = fragment * (400_000 // len(fragment) + 1)
    t_small, t_large = _parse_seconds(small), _parse_seconds(large)
    # 4x the text: linear code takes ~4x as long, quadratic ~16x; generous bounds for a busy CI machine
    assert t_large < 9 * t_small + 0.05, (t_small, t_large)
    assert t_large < 2.0


def test_parse_of_megabytes_of_eos_tokens_is_fast() -> None:
    result = parse_output("Good. [RESULT] 4" + " </s>" * 320_000)  # the audit's 1.6 MB input
    assert result.score == 4
    assert _parse_seconds(" </s>" * 320_000) < 1.0


# ------------------------------------------------------------------------------ records (library level)
def test_to_dict_is_the_record_without_the_raw_text() -> None:
    result = parse_output(TRAINING)
    assert result.to_dict() == {
        "score": 3,
        "feedback": result.feedback,
        "method": "result_marker",
        "reason": None,
    }
    assert parse_output("").to_dict() == {
        "score": None,
        "feedback": "",
        "method": "none",
        "reason": "empty output",
    }


def test_parse_jsonl_one_record_per_line_never_raises() -> None:
    import json

    data = b"\n".join(
        [
            json.dumps({"question_id": 7, "answer_id": "x", "text": "Good. [RESULT] 5", "other": 1}).encode(),
            b"",
            b"{not json",
            b"[1, 2]",
            json.dumps({"id": "c", "text": 4}).encode(),
            json.dumps({"id": "d"}).encode(),
            b'{"id": "e", "text": "caf\xe9 [RESULT] 2"}',
            b"[" * 200,
        ]
    )
    out = list(parse_jsonl(data, field="text"))
    assert out[0] == {
        "line": 1,
        "question_id": 7,
        "answer_id": "x",
        "score": 5,
        "feedback": "Good.",
        "method": "result_marker",
        "reason": None,
    }
    assert [r["line"] for r in out] == [1, 3, 4, 5, 6, 7, 8]
    assert "malformed JSON" in out[1]["error"] and out[2]["error"] == "expected a JSON object, got list"
    assert out[3] == {"line": 5, "id": "c", "error": "field 'text' is not text (int)"}
    assert out[4] == {"line": 6, "id": "d", "error": "field 'text' is missing"}
    assert "UTF-8" in out[5]["error"] and "id" not in out[5]  # nothing is read from a line with bad bytes
    assert "nested deeper" in out[6]["error"]
