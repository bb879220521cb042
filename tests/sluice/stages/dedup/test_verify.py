"""Checks on large clusters: a planted bad cluster is refused and answered normally, a good one keeps its reuse."""

import polars as pl

from sluice.stages.dedup.verify import VerifyConfig, check_clusters, large_clusters, refuse


def clusters_table(size: int = 10) -> pl.DataFrame:
    """Two semantic clusters of `size` rows (g0 good, b0 bad) and one small cluster (s0), grader `number`."""
    rows = []
    for head, n in (("g", size), ("b", size), ("s", 3)):
        rows.append({"row_id": f"{head}0", "prompt": f"question {head}", "status": "pending", "dup_of": None,
                     "dup_kind": None, "dup_score": None})
        rows += [{"row_id": f"{head}{i}", "prompt": f"question {head} variant {i}", "status": "duplicate",
                  "dup_of": f"{head}0", "dup_kind": "semantic", "dup_score": 0.95} for i in range(1, n)]
    return pl.DataFrame(rows).with_columns(pl.lit("number").alias("grader"), pl.lit(None, pl.String)
                                           .alias("response_schema"))


def scripted(asked: list):
    """Own answers: every g row and the b canonical answer 42; the b members answer 17 (their own question)."""
    def answer(rows: pl.DataFrame):
        asked.extend(rows["row_id"].to_list())
        return {r: ("The answer is 17." if r.startswith("b") and r != "b0" else "#### 42", 0.002)
                for r in rows["row_id"].to_list()}
    return answer


def test_a_planted_bad_cluster_is_refused_and_its_members_go_back_to_pending():
    rows = clusters_table()
    asked: list = []
    checks = check_clusters(rows, scripted(asked), delta=0.01, cfg=VerifyConfig(min_cluster=8, sample=4))
    assert checks.reused == ["g0"] and list(checks.refused) == ["b0"]
    assert "4 of 4" in checks.refused["b0"]
    assert not any(r.startswith("s") for r in asked)  # the small cluster is not checked
    assert checks.checked_rows == 8 and abs(checks.cost_usd - 10 * 0.002) < 1e-12  # the 2 canonicals' probes too
    assert sum(v["ok"] is False for v in checks.verdicts) == 4 and len(checks.record()["verdicts"]) == 8
    out = refuse(rows, checks.refused)
    back = out.filter(pl.col("row_id").str.starts_with("b"))
    assert back["status"].to_list() == ["pending"] * 10 and back["dup_of"].null_count() == 10
    kept = out.filter(pl.col("row_id").str.starts_with("g") | pl.col("row_id").str.starts_with("s"))
    assert kept.equals(rows.filter(pl.col("row_id").str.starts_with("g") | pl.col("row_id").str.starts_with("s")))


def test_one_wrong_reuse_in_fewer_than_one_over_delta_checks_refuses():
    rows = clusters_table()

    def answer(sub: pl.DataFrame):
        picked = sorted(r for r in sub["row_id"].to_list() if r.startswith("g") and r != "g0")
        return {r: ("#### 41" if r == picked[0] else "#### 42", 0.0) for r in sub["row_id"].to_list()}

    checks = check_clusters(rows, answer, delta=0.05, cfg=VerifyConfig(min_cluster=8, sample=4))
    assert "g0" in checks.refused and "1 of 4" in checks.refused["g0"]


def test_free_text_needs_the_judge_function_and_is_refused_without_one():
    rows = clusters_table().with_columns(pl.lit(None, pl.String).alias("grader"))

    def answer(sub: pl.DataFrame):
        return {r: (f"Some prose about {r[0]}.", 0.001) for r in sub["row_id"].to_list()}

    unjudged = check_clusters(rows, answer, delta=0.01)
    assert set(unjudged.refused) == {"g0", "b0"} and "could be judged" in unjudged.refused["g0"]

    calls = []

    def judge(prompt, reused, own):
        calls.append(prompt)
        return (not prompt.startswith("question b"), 0.0005)

    judged = check_clusters(rows, answer, delta=0.01, judge=judge)
    assert judged.reused == ["g0"] and list(judged.refused) == ["b0"]
    assert len(calls) == 8 and abs(judged.cost_usd - (10 * 0.001 + 8 * 0.0005)) < 1e-12


def test_only_near_and_semantic_clusters_of_the_minimum_size_are_checked():
    rows = clusters_table(size=8).with_columns(
        pl.when(pl.col("row_id").str.starts_with("b") & (pl.col("row_id") != "b0")).then(pl.lit("exact"))
        .otherwise(pl.col("dup_kind")).alias("dup_kind"))
    assert list(large_clusters(rows, VerifyConfig(min_cluster=8))) == ["g0"]
    assert large_clusters(rows, VerifyConfig(min_cluster=9)) == {}
