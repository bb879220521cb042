"""The heuristic gatekeeper: cheap text signals (vectorised regexes in polars, microseconds a row) and the
complexity score in [0, 1] they add up to, an estimate of how likely the cheap tiers are to fall short.

    - intent: code, math, reasoning, analysis, writing, extraction, classification, chit-chat, qa
    - length in words
    - explicit demands for rigour ("step by step", "prove", "show the working", "trade-offs")
"""

from __future__ import annotations

import polars as pl

# intent -> (pattern, base complexity). First match in this order wins.
INTENTS: list[tuple[str, str, float]] = [
    ("code", r"\b(python|javascript|typescript|rust|golang|java|c\+\+|sql|bash|regex|function|script|code|"
             r"implement|refactor|algorithm|debounce|api endpoint|class )\b", 0.70),
    ("math", r"\b(prove|proof|derive|equation|solve for|probability|compound annual|integral|"
             r"how long does it take|percentage change)\b", 0.70),
    ("reasoning", r"\b(step by step|explain the logic|can we conclude|show (your|the) (reasoning|working|"
                  r"calculation)|riddle|puzzle)\b", 0.60),
    ("analysis", r"\b(design|trade-?offs?|compare|critically|evaluate|analy[sz]e|ethical|architecture|"
                 r"migrat\w*|failure modes|theorem)\b", 0.60),
    ("extraction", r"^\s*(extract|list all|find all|pull out)\b", 0.05),
    ("classification", r"^\s*(classify|label|categori[sz]e|is the following|respond with yes or no|"
                       r"is \d+ a prime)\b", 0.05),
    ("explanation", r"\b(explain|why does|why do|how does|how do|what are the (main )?(causes|differences|pros))\b",
     0.35),
    ("chit-chat", r"^\s*(hi|hello|hey|thanks|thank you|say hello|tell me a (short )?joke)\b", 0.0),
    ("writing", r"\b(write|draft|rewrite|summari[sz]e|describe|suggest|give me|poem|haiku|tweet|bio|"
                r"itinerary|recipe|reply)\b", 0.30),
    ("qa", r"", 0.20),
]
RIGOUR = r"\b(step by step|show (your|the|each)|explain (your|each)|with examples|in detail|detailed|carefully|" \
         r"prove|correctness|edge cases)\b"


def gatekeeper_features(prompts: pl.Series) -> pl.DataFrame:
    """Intent, length and rigour signals for each prompt, and the complexity score they add up to."""
    text = prompts.fill_null("").str.to_lowercase()
    df = pl.DataFrame({"_t": text})
    intent = pl.lit("qa")
    base = pl.lit(0.20)
    for name, pattern, weight in reversed(INTENTS[:-1]):
        hit = pl.col("_t").str.contains(pattern)
        intent = pl.when(hit).then(pl.lit(name)).otherwise(intent)
        base = pl.when(hit).then(pl.lit(weight)).otherwise(base)
    words = pl.col("_t").str.count_matches(r"\S+")
    numbers = pl.col("_t").str.count_matches(r"\d+(?:[.,]\d+)?")
    rigour = pl.col("_t").str.contains(RIGOUR)
    score = (
        base
        + pl.min_horizontal(words / 400.0, pl.lit(0.20))  # long prompts carry more context to get right
        + pl.when(numbers >= 3).then(0.10).otherwise(0.0)  # several quantities usually means arithmetic
        + pl.when(rigour).then(0.15).otherwise(0.0)
    ).clip(0.0, 1.0)
    return df.select(
        intent.alias("intent"),
        words.alias("words"),
        numbers.alias("numbers"),
        rigour.alias("rigour"),
        score.alias("route_score"),
    )
