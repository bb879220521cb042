"""Reference grading through a whole flow run, every tier an API on the loopback OpenAI-compatible server (no vLLM).

The loopback server answers "answer to: <the first 8 words of the prompt>", so a row's answer is known before the
run: prompts are written so that some answers match their reference and some do not, under each grader. The
expected verdicts below are written by hand; the run's accuracy (in `runs`, in `quality_per_run` and in the flow's
summary) must equal the one recomputed here from `results` and those verdicts, overall and per tier."""

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.batch_run import sluice_run

ROWS = [
    # id, prompt, reference, grader (None: the run's --grader, here `number`), expected verdict
    ("n1", "What is 40 plus 2? 42", "42", None, True),          # answer's last number is 42
    ("n2", "what is 40 plus 2?   42", "41", None, False),       # exact duplicate of n1: its answer, its own ref
    ("n3", "Compute 6 times 7 and report $42.00", "$42", None, True),
    ("m1", "Reply with the number 7 please", "7 apples", None, True),  # `number` (run default); auto: exact, wrong
    ("c1", "Which letter is right? Option (B) clearly.", "B", "choice", True),
    ("c2", "Choose a letter now: I pick (D) here", "A", "auto", False),  # auto -> choice: got D
    ("e1", "Name the capital of France", "Answer to: name the capital of France.", "exact", True),
    ("e2", "Name the largest city of Italy", "Rome", "exact", False),
    ("k1", "Describe Paris in the spring season", "paris", "contains", True),
    ("k2", "Describe Lisbon in the autumn season", "Madrid", "contains", False),
    ("j1", "Give the city as JSON please", '{"city": "Paris"}', "auto", False),  # free text: malformed JSON
    ("x1", "Tell me a short story about a cat", None, None, None),      # no reference: not graded
    ("q1", None, "42", None, None),                                       # quarantined (null prompt)
    ("g1", "Explain photosynthesis simply", "sunlight", "fuzzy", None),  # unknown grader: quarantined
    ("u1", "How many legs does a spider have", "eight", "number", None),  # reference holds no number
]
EXPECTED = {r[0]: r[4] for r in ROWS}
NEVER_SENT = ["Madrid", "sunlight", "Rome", "eight", "apples"]  # words only the references hold


@pytest.fixture
def graded_run(tmp_path, openai_server, api_catalogue):
    data = tmp_path / "quiz.parquet"
    pq.write_table(pa.table({"id": [r[0] for r in ROWS], "prompt": [r[1] for r in ROWS],
                             "reference": [r[2] for r in ROWS], "grader": [r[3] for r in ROWS]}), data)
    summary = sluice_run(str(data), warehouse=str(tmp_path / "wh.duckdb"),
                         catalogue=str(api_catalogue(openai_server.base_url)), data_dir=str(tmp_path / "data"),
                         grader="number")
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    yield summary, list(openai_server.received), con
    con.close()


def test_runs_accuracy_equals_a_recomputation_from_results_and_the_references_which_are_never_sent(graded_run):
    summary, received, con = graded_run
    landed = {r[0]: r[1:] for r in con.execute(
        "SELECT row_id, status, tier, reference, grader, correct, grade_reason FROM results").fetchall()}
    assert set(landed) == set(EXPECTED)
    # each row's verdict is the hand-written one, its reference the one in the file
    assert {rid: r[4] for rid, r in landed.items()} == EXPECTED
    assert {rid: r[2] for rid, r in landed.items()} == {r[0]: r[2] for r in ROWS}
    assert landed["n2"][0] == "duplicate" and landed["n2"][5] == "expected 41, got 42"
    assert landed["q1"][0] == landed["g1"][0] == "quarantined"
    assert landed["m1"][3] == "number" and landed["c2"][3] == "choice" and landed["j1"][3] == "json"
    assert landed["j1"][5] == "the answer is not valid JSON"
    assert landed["u1"][5] == "reference 'eight' holds no number"

    # independent recomputation: plain Python over the landed tiers and the hand-written verdicts
    graded = {rid: v for rid, v in EXPECTED.items() if v is not None}
    accuracy = sum(graded.values()) / len(graded)
    assert (len(graded), accuracy) == (11, 6 / 11)
    per_tier: dict[str, list[bool]] = {}
    for rid, verdict in graded.items():
        per_tier.setdefault(landed[rid][1] or "(not sent)", []).append(verdict)
    expected_tiers = {t: (len(v), sum(v), sum(v) / len(v)) for t, v in per_tier.items()}

    acc, n, by_tier = con.execute("SELECT accuracy, graded_rows, accuracy_per_tier FROM runs").fetchone()
    assert (acc, n) == (pytest.approx(accuracy), 11)
    assert {t: (v["graded"], v["correct"], pytest.approx(v["accuracy"])) for t, v in json.loads(by_tier).items()} \
        == expected_tiers
    view = {r[0]: r[1:] for r in con.execute(
        "SELECT tier, graded, correct, accuracy FROM quality_per_run").fetchall()}
    assert view.pop("(all)") == (11, 6, pytest.approx(accuracy))
    assert {t: v for t, v in view.items() if v[0]} == {t: (g, c, pytest.approx(a))
                                                       for t, (g, c, a) in expected_tiers.items()}
    # the flow's summary says the same
    assert (summary["graded"], summary["correct"], summary["accuracy"]) == (11, 6, pytest.approx(accuracy))

    # references and graders never reach a model
    assert received
    bodies = json.dumps([r.body for r in received])
    assert not [w for w in NEVER_SENT if w in bodies]


def test_an_unknown_run_grader_is_refused_before_the_run(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import flows.batch_run
    from sluice.cli import app

    data = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["hi"], "reference": ["x"]}), data)
    seen = {}

    def fake_run(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stopped before running")

    monkeypatch.setattr(flows.batch_run, "sluice_run", fake_run)
    result = CliRunner().invoke(app, ["run", str(data), "--grader", "fuzzy"])
    assert result.exit_code == 2 and "grader 'fuzzy' is not one of" in result.output and not seen
    result = CliRunner().invoke(app, ["run", str(data), "--grader", "Contains"])
    assert result.exit_code == 2 and seen["grader"] == "Contains"  # passed on to the flow (RequestDefaults)
