"""Content guards: cheap checks that veto a near or semantic match whose answer would differ.

Similarity scores (MinHash Jaccard, embedding cosine) are blind to the few tokens that change an answer. Measured
with all-MiniLM-L6-v2 (../shared/GUIDE.md): a question and its negation score 0.83-0.99 cosine, PAWS word-swap
pairs score above 0.92, and most QQP pairs with >= 80% word overlap labelled "not duplicate" differ by one swapped
entity, number or polarity word. So a candidate pair is only accepted when all of these agree:

    numbers     the multiset of numbers (digits and number words) is equal ("2+2" vs "2+3", "in 2019" vs "2020")
    polarity    the same negation words, and no word faces its opposite ("can" vs "can't", "enable" vs "disable")
    entities    no capitalised word, acronym or number-bearing token appears on one side only ("in Texas" vs
                "in Ohio"): a swapped name is a different question
    order       the content words both sides share appear in the same order ("flights from Paris to Rome" vs
                "flights from Rome to Paris"; PAWS-style swaps keep every word and change the meaning)
    template    (short prompts) both fill one template (a shared prefix/suffix of >= 6 content words) with
                different text (>= 2 content words each): the filled-in parts must share at least half their
                content words
    qualifier   (short prompts) one side is the other plus a content word ("remove blackheads" vs "remove
                blackheads and whiteheads", "credit cards" vs "credit cards for startups"), or the two differ in
                exactly one content word that is not a typo of the other ("songs when anxious" vs "... angry",
                "coaching in India" vs "... in Nagpur"). On the QQP tuning pairs these were most of the false hits
                left after the checks above; rephrasings that change several words stay allowed.

All checks work on word tokens of the original text; they are deliberately strict (a paraphrase that reorders its
words is lost), because a false hit returns a wrong answer while a miss only costs one inference.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1e6",
    "billion": "1e9", "first": "1st", "second": "2nd", "third": "3rd", "half": "0.5", "double": "x2", "twice": "x2",
}

# Negation, and words whose opposite (the other member of its pair) is a different question.
NEGATIONS = {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot", "cant",
             "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont", "wouldnt", "shouldnt",
             "couldnt", "hasnt", "havent", "hadnt", "aint", "nowhere", "against", "un", "non", "anti"}
POLARITY_PAIRS = [
    ("enable", "disable"), ("enabled", "disabled"), ("on", "off"), ("positive", "negative"), ("pros", "cons"),
    ("advantages", "disadvantages"), ("advantage", "disadvantage"), ("increase", "decrease"), ("up", "down"),
    ("more", "less"), ("most", "least"), ("best", "worst"), ("good", "bad"), ("better", "worse"),
    ("before", "after"), ("buy", "sell"), ("buying", "selling"), ("win", "lose"), ("gain", "lose"),
    ("legal", "illegal"), ("true", "false"), ("right", "wrong"), ("start", "stop"), ("open", "close"),
    ("add", "remove"), ("import", "export"), ("min", "max"), ("minimum", "maximum"), ("high", "low"),
    ("higher", "lower"), ("above", "below"), ("rich", "poor"), ("love", "hate"), ("like", "dislike"),
    ("always", "never"), ("all", "none"), ("male", "female"), ("men", "women"), ("man", "woman"),
    ("boy", "girl"), ("cheap", "expensive"), ("fast", "slow"), ("easy", "hard"), ("safe", "unsafe"),
    ("possible", "impossible"), ("same", "different"), ("from", "to"), ("encrypt", "decrypt"),
    ("upload", "download"), ("ascending", "descending"), ("inside", "outside"), ("agree", "disagree"),
]
OPPOSITE = {a: b for a, b in POLARITY_PAIRS if (a, b) != ("from", "to")}
OPPOSITE.update({b: a for a, b in OPPOSITE.items()})
POLARITY = NEGATIONS | set(OPPOSITE)

STOPWORDS = {
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "doing", "i",
    "me", "my", "you", "your", "we", "our", "he", "she", "it", "its", "they", "them", "their", "his", "her",
    "this", "that", "these", "those", "what", "which", "who", "whom", "whose", "how", "why", "when", "where",
    "of", "in", "on", "at", "by", "for", "with", "about", "as", "into", "to", "from", "and", "or", "but", "if",
    "so", "than", "then", "can", "could", "should", "would", "will", "shall", "may", "might", "must", "have",
    "has", "had", "there", "here", "some", "any", "much", "many", "very", "just", "also", "get", "one", "s",
    "please", "tell", "give", "explain", "way", "ways", "best", "good", "really", "thing", "things",
    # contractions, apostrophe removed: "what's" is "what is"
    "whats", "hows", "whos", "wheres", "whens", "whys", "thats", "theres", "im", "ive", "id", "youre", "youve",
    "theyre", "hes", "shes", "lets", "itll", "youll",
}


ORDER_CHECK_MAX_WORDS = 64  # the word-order check is for short prompts; long near duplicates keep order by shingling
_STRIP = "\"'`“”‘’()[]{}<>.,;:!?*_-–—/\\|#~^=+&%$@"
_SENTENCE_START = re.compile(r"(\A\s*|[.?!:\n]\s*)([A-Z])")
_NUMBER_TOKEN = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class TextFacts:
    """A text as the guards see it, prepared once per row: a multiset of its whitespace tokens (sentence-initial
    capitals lowered, so only capitals inside a sentence mark names) and, for short texts, its content words."""

    tokens: Counter
    content: tuple[str, ...] | None  # non-stopword words in order; None for long texts
    sequence: tuple[str, ...] = ()  # every word, lowered, in order


def _word(token: str) -> str:
    return token.strip(_STRIP).replace("’", "").replace("'", "")


def text_facts(text: str) -> TextFacts:
    text = unicodedata.normalize("NFKC", text or "").strip()
    text = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).lower(), text)
    tokens = text.split()
    content = None
    if len(tokens) <= ORDER_CHECK_MAX_WORDS:
        content = tuple(info[0] for info in map(_token_info, tokens) if info is not None and info[0] not in STOPWORDS)
    sequence = tuple(info[0] for info in map(_token_info, tokens) if info is not None)
    return TextFacts(Counter(tokens), content, sequence)


class RecentFacts:
    """`facts(i)`: the guard facts of row i's text (`text(i)`), kept for the `size` most recently used rows only.
    A row's facts (a Counter of its tokens) cost a few kB: at 1M rows, keeping every candidate row's took over a
    GB; the stages ask for the rows of one duplicate after another, so a row is mostly needed again soon after,
    and a miss only recomputes."""

    def __init__(self, text: Callable[[int], str], size: int = 1 << 15):
        self.text = text
        self.size = size
        self._kept: OrderedDict[int, TextFacts] = OrderedDict()

    def __call__(self, i: int) -> TextFacts:
        found = self._kept.get(i)
        if found is None:
            found = self._kept[i] = text_facts(self.text(i))
            if len(self._kept) > self.size:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(i)
        return found

    def clear(self) -> None:
        self._kept.clear()


def forget_tokens() -> None:
    """Empty the per-token caches (`_token_info`, `_stem`: 162k tokens held 175 MB after the near stage at 1M rows,
    issue 19); a stage clears them when it is done, the next fills them with the tokens it meets."""
    _token_info.cache_clear()
    _stem.cache_clear()


@lru_cache(maxsize=1 << 18)
def _token_info(token: str) -> tuple[str, tuple[str, ...], bool, bool] | None:
    """(lowered word, its numbers, polarity word?, marked?) of one whitespace token; None for punctuation only.
    Cached: prompts share most of their tokens, and the guards see each one many times."""
    word = _word(token)
    if not word:
        return None
    low = word.lower()
    numbers = [n.replace(",", "") for n in _NUMBER_TOKEN.findall(word)]
    if low in NUMBER_WORDS:
        numbers.append(NUMBER_WORDS[low])
    has_digit = any(c.isdigit() for c in word)
    has_alpha = any(c.isalpha() for c in word)
    marked = (has_digit and has_alpha) or (word[0].isupper() and low not in STOPWORDS)
    return low, tuple(numbers), low in POLARITY, marked


def _side(tokens: Counter) -> tuple[list[str], set[str], set[str], set[str]]:
    """numbers, negations/polarity words, marked words (names, acronyms, codes), all words (lower) of a diff."""
    numbers: list[str] = []
    polarity: set[str] = set()
    marked: set[str] = set()
    lower: set[str] = set()
    for token, count in tokens.items():
        info = _token_info(token)
        if info is None:
            continue
        low, nums, is_polarity, is_marked = info
        lower.add(low)
        if nums:
            numbers += list(nums) * count
        if is_polarity:
            polarity.add(low)
        if is_marked:
            marked.add(low)
    return sorted(numbers), polarity, marked, lower


FILLER = {"please", "thanks", "thank", "kindly", "hi", "hello", "hey", "quick", "question", "pls", "plz", "ok",
          "okay", "exactly", "actually", "briefly", "simply", "basically"}


@lru_cache(maxsize=1 << 18)
def _stem(word: str) -> str:
    """Crude plural/tense folding, enough that "annoys"/"annoy" or "stereotypes"/"stereotype" are not new words."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _is_typo(a: str, b: str) -> bool:
    """Edit distance <= 1, counting a swap of two neighbouring letters as one edit ("uesr" / "user": optimal string
    alignment distance), and not a negating prefix ("refrigerated"). Two edits are another word more often than a
    typo ("function" / "functional", "mechanism" / "mechanize")."""
    if abs(len(a) - len(b)) > 2:
        return False
    for prefix in ("un", "in", "non", "dis", "im", "ir", "il"):
        if a == prefix + b or b == prefix + a:
            return False
    limit = 1
    before, prev = [], list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cost = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, before[j - 2] + 1)
            cur.append(cost)
        before, prev = prev, cur
    return prev[-1] <= limit


def _transposed(a: str, b: str) -> bool:
    """b is a with two neighbouring letters swapped, in a word of 5+ letters ("Saraswati" / "Sarasawti"): a typo of
    a name, not another name ("Iran" / "Iraq" changes a letter, "Austria" / "Australia" adds two)."""
    if len(a) != len(b) or len(a) < 5:
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def _names_differ(only_a: set[str], only_b: set[str]) -> bool:
    """A marked word (name, acronym, code) on one side only, unless the one on each side is a typo of the other."""
    if len(only_a) == 1 and len(only_b) == 1 and _transposed(next(iter(only_a)), next(iter(only_b))):
        return False
    return bool(only_a or only_b)


def _qualifier_differs(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    sa = {_stem(w) for w in a} - FILLER
    sb = {_stem(w) for w in b} - FILLER
    only_a, only_b = sa - sb, sb - sa
    if not only_a and not only_b:
        return False
    if not only_a or not only_b:
        return True  # one side only adds words: a narrower or broader question
    if len(only_a) == 1 and len(only_b) == 1:
        return not _is_typo(next(iter(only_a)), next(iter(only_b)))
    return False


def _shared_order_agrees(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """The words both sides share come in the same order: every occurrence, when both sides use each shared word
    as often ("people kill people" / "people people kill"), else each word's first occurrence."""
    shared = set(a) & set(b)
    every_a, every_b = [w for w in a if w in shared], [w for w in b if w in shared]
    if Counter(every_a) == Counter(every_b):
        return every_a == every_b
    seq_a = [w for w in dict.fromkeys(a) if w in shared]
    seq_b = [w for w in dict.fromkeys(b) if w in shared]
    return seq_a == seq_b


def _reordered(a: TextFacts, b: TextFacts) -> bool:
    """The same words in another order, at any length (a PAWS-style swap keeps every word)."""
    return a.sequence != b.sequence and Counter(a.sequence) == Counter(b.sequence)


TEMPLATE_MIN_SHARED = 6  # content words of shared prefix + suffix that make a template
TEMPLATE_MIN_FILL = 2  # content words each filled-in part needs for the template check to apply


def _template_differs(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Both prompts are one template ("Extract the sentiment ... of this review: <text>") filled with different
    text. The template dominates MinHash and mean-pooled embeddings alike (two unrelated reviews under a 15-word
    instruction score 0.92-0.95 cosine), so the filled-in parts are compared on their own: a template of at least
    TEMPLATE_MIN_SHARED content words around parts of at least TEMPLATE_MIN_FILL content words that share under
    half of them is a different request."""
    n = min(len(a), len(b))
    pre = 0
    while pre < n and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < n - pre and a[-1 - suf] == b[-1 - suf]:
        suf += 1
    if pre + suf < TEMPLATE_MIN_SHARED:
        return False
    rest_a, rest_b = set(a[pre:len(a) - suf]), set(b[pre:len(b) - suf])
    if min(len(rest_a), len(rest_b)) < TEMPLATE_MIN_FILL:
        return False  # a word or two edited inside one text, not a template filled twice: the other checks decide
    return len(rest_a & rest_b) / len(rest_a | rest_b) < 0.5


def _checks(a: TextFacts, b: TextFacts):
    """(reason, objects) for every guard, lazily and in order of cost."""
    num_a, pol_a, marked_a, low_a = _side(a.tokens - b.tokens)
    num_b, pol_b, marked_b, low_b = _side(b.tokens - a.tokens)
    yield "numbers differ", num_a != num_b
    yield "negation differs", (pol_a & NEGATIONS) != (pol_b & NEGATIONS)
    # a polarity word on one side only is fine ("fast" vs "quickly"); its opposite on the other side is not
    yield "polarity differs", (any(OPPOSITE[w] in pol_b and w not in pol_b for w in pol_a - NEGATIONS)
                               or any(OPPOSITE[w] in pol_a and w not in pol_a for w in pol_b - NEGATIONS))
    # a name on one side only ("Texas" vs "Ohio"); the same word in another case on the other side is not a name
    yield "named entity differs", _names_differ(marked_a - low_b, marked_b - low_a)
    short = a.content is not None and b.content is not None
    yield "a shared template around different content", short and _template_differs(a.content, b.content)
    yield "word order differs", (_reordered(a, b) if not short
                                 else not _shared_order_agrees(a.content, b.content))
    yield "a qualifier is added or swapped", short and _qualifier_differs(a.content, b.content)


GUARDS = ("numbers differ", "negation differs", "polarity differs", "named entity differs",
          "a shared template around different content", "word order differs", "a qualifier is added or swapped")


def veto_reason(a: TextFacts, b: TextFacts) -> str | None:
    """Why the two texts must not share an answer, or None when no guard objects.

    Only the tokens on one side only are inspected (shared tokens cannot differ in numbers, polarity or names),
    so the cost is that of the difference, not of the texts."""
    return next((reason for reason, objects in _checks(a, b) if objects), None)


def guard_flags(a: TextFacts, b: TextFacts) -> dict[str, bool]:
    """Every guard's verdict on the pair (not only the first objection)."""
    return dict(_checks(a, b))


def same_answer_allowed(a: str, b: str) -> bool:
    return veto_reason(text_facts(a), text_facts(b)) is None
