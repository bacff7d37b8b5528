"""In-process transformers backend: batched generation with a reproducible draw per request.

Batching: prompts are sorted by length, left-padded and generated `batch_size` at a time.
Reproducibility: each request carries its own seed; a logits processor samples each row with
its own `torch.Generator`, so a draw does not depend on which other prompts share its batch.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from judgeflow.errors import ConfigError
from judgeflow.models.base import Generation, GenRequest

log = logging.getLogger(__name__)

YES_VARIANTS = ("YES", " YES", "Yes", " Yes", "yes", " yes")
NO_VARIANTS = ("NO", " NO", "No", " No", "no", " no")


def nucleus(probs: torch.Tensor, top_p: float, head: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Top-p, compacted: per row, (probabilities, token ids) of its most probable tokens, the
    probabilities outside the row's nucleus (the tokens whose mass before them reaches top_p) set to 0.
    The nucleus is looked for among each row's `head` most probable tokens (torch.topk); only a row
    whose nucleus is wider is sorted whole. Sorting the whole 49k vocabulary of every row, and drawing
    from all of it, took half the sampling time."""
    top, idx = probs.topk(min(head, probs.shape[-1]), dim=-1)
    wide = (top.sum(dim=-1) < top_p).tolist()  # rows whose nucleus may reach beyond the head
    out = []
    for i, w in enumerate(wide):
        p, ids = probs[i].sort(descending=True) if w else (top[i], idx[i])
        out.append((p * (p.cumsum(dim=-1) - p < top_p), ids))
    return out


class PerRowSampler:
    """Logits processor: sample row i with generator i (temperature, top-p), or greedy.

    It returns scores that are -inf everywhere but the chosen token, so `generate` runs in
    greedy mode and keeps its own KV cache, EOS and padding handling.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float, yes_ids=None, no_ids=None):
        self.temperature = temperature
        self.top_p = top_p
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s) % (2**63)) for s in seeds]
        self.yes_ids, self.no_ids = yes_ids, no_ids
        self.steps: list[tuple[list[float], list[float]]] = []  # per step: (P(YES), P(NO)) per row

    def __call__(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        if self.yes_ids is not None:
            p = torch.softmax(scores, dim=-1)
            self.steps.append((p[:, self.yes_ids].sum(-1).tolist(), p[:, self.no_ids].sum(-1).tolist()))
        if self.temperature <= 0:
            choice = scores.argmax(dim=-1)
        else:
            probs = torch.softmax(scores / self.temperature, dim=-1).cpu()
            rows = nucleus(probs, self.top_p) if self.top_p < 1.0 else [(p, None) for p in probs]
            choice = torch.stack([torch.multinomial(p, 1, generator=g)[0] if ids is None
                                  else ids[torch.multinomial(p, 1, generator=g)[0]]
                                  for (p, ids), g in zip(rows, self.generators)]).to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, choice.unsqueeze(-1), 0.0)
        return out


class HFModel:
    supports_prefix = True  # can continue a partial assistant turn

    def __init__(self, name: str, path: str, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8, threads: int | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(path, "config.json").exists():
            raise ConfigError(
                f"models.{name}.path: no model at '{path}' (expected a transformers directory with "
                "config.json; run the prepare_model rule or fix the path)"
            )
        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                       "float16": torch.float16}[dtype]
        self.name, self.path, self.device, self.batch_size = name, path, device, batch_size
        t0 = time.time()
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # transformers wraps `to` in functools.wraps(torch.nn.Module.to): its stub then wants `self` first
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        self.model = model.to(device).eval()  # type: ignore[arg-type]
        log.info("loaded %s from %s on %s in %.1fs", name, path, device, time.time() - t0)
        self.eos_ids = self._eos_ids()
        self.calls = 0
        self.completion_tokens = 0
        self.forward_passes = 0  # one-token requests: distinct prompts actually run
        self.yes_ids = self._first_token_ids(YES_VARIANTS)
        self.no_ids = self._first_token_ids(NO_VARIANTS)

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def _first_token_ids(self, words) -> list[int]:
        """Tokens that begin one of `words` (" YES" may be " Y" + "ES")."""
        return sorted({self.tokenizer.encode(w, add_special_tokens=False)[0] for w in words})

    def _prompt_text(self, req: GenRequest) -> str:
        text = self.tokenizer.apply_chat_template(req.message_dicts(), tokenize=False,
                                                  add_generation_prompt=True)
        assert isinstance(text, str)  # tokenize=False: the rendered text
        return text + req.prefix

    def _decode(self, toks: list[int]) -> str:
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence of ids: one text
        return text

    def _batches(self, requests: list[GenRequest]):
        """Yield (indices, texts) batches of similar length, longest first."""
        texts = [self._prompt_text(r) for r in requests]
        lengths = [len(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield idx, [texts[i] for i in idx]

    def _encode(self, texts: list[str]):
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.inference_mode()
    def generate(self, requests: list[GenRequest], desc: str = "generate") -> list[Generation]:
        from transformers import GenerationConfig, LogitsProcessorList

        out: list[Generation | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.sampling.max_new_tokens, r.sampling.temperature, r.sampling.top_p), []).append(i)
        bar = tqdm(total=len(requests), desc=f"{self.name}: {desc}", mininterval=5, file=_progress_stream())
        for (max_new, temperature, top_p), members in groups.items():
            sub = [requests[i] for i in members]
            if max_new == 1:  # one token (a judge that answers first): one forward pass per distinct prompt
                for i, g in zip(members, self._one_token(sub, temperature, top_p)):
                    out[i] = g
                bar.update(len(members))
                continue
            for idx, texts in self._batches(sub):
                enc = self._encode(texts)
                want_scores = any(sub[i].score_after for i in idx)
                sampler = PerRowSampler([sub[i].seed for i in idx], temperature, top_p,
                                        *((self.yes_ids, self.no_ids) if want_scores else (None, None)))
                gen_cfg = GenerationConfig(max_new_tokens=max_new, do_sample=False,
                                           eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id)
                seqs = self.model.generate(**enc, generation_config=gen_cfg,
                                           logits_processor=LogitsProcessorList([sampler]))
                new = seqs[:, enc["input_ids"].shape[1]:].tolist()
                prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
                for row, i in enumerate(idx):
                    toks, finish = new[row], "length"
                    for j, t in enumerate(toks):
                        if t in self.eos_ids:
                            toks, finish = toks[: j + 1], "stop"
                            break
                    text = self._decode(toks)
                    p_yes = None
                    if sub[i].score_after and tuple(sub[i].choices) == ("YES", "NO"):
                        p_yes = self._p_yes_at(sub[i], toks, sampler.steps, row)
                    out[members[i]] = Generation(text=text, prompt_tokens=int(prompt_lens[row]),
                                                 completion_tokens=len(toks), finish_reason=finish, p_yes=p_yes)
                    self.completion_tokens += len(toks)
                self.calls += len(idx)
                bar.update(len(idx))
        bar.close()
        return out  # type: ignore[return-value]

    def _one_token(self, requests: list[GenRequest], temperature: float, top_p: float) -> list[Generation]:
        """Requests of one new token: the next-token logits of each distinct prompt, from one forward
        pass (several judges that differ only in their seed share it), then each request's own draw
        with its own generator -- the same draw and P(YES) as `generate` with max_new_tokens=1."""
        texts = [self._prompt_text(r) for r in requests]
        distinct = list(dict.fromkeys(texts))
        # longest first, so a batch pads to prompts of about its own length
        n_tokens = {t: len(self.tokenizer.encode(t, add_special_tokens=False)) for t in distinct}
        distinct.sort(key=lambda t: -n_tokens[t])
        logits: dict[str, torch.Tensor] = {}
        lengths: dict[str, int] = {}
        for start in range(0, len(distinct), self.batch_size):
            part = distinct[start:start + self.batch_size]
            enc = self._encode(part)
            mask = enc["attention_mask"]
            position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate() does (left padding)
            # logits of the last position only: the full (batch, length, vocab) tensor is ~1 GB at batch 64
            last = self.model(**enc, position_ids=position_ids, logits_to_keep=1).logits[:, -1, :]
            for t, row, n in zip(part, last, mask.sum(dim=1).tolist()):
                logits[t], lengths[t] = row, int(n)
        scores = torch.stack([logits[t] for t in texts])
        want = any(r.score_after for r in requests)
        sampler = PerRowSampler([r.seed for r in requests], temperature, top_p,
                                *((self.yes_ids, self.no_ids) if want else (None, None)))
        chosen = sampler(None, scores).argmax(dim=-1).tolist()
        out = []
        for row, (r, t, tok) in enumerate(zip(requests, texts, chosen)):
            toks = [tok]
            finish = "stop" if tok in self.eos_ids else "length"
            p_yes = (self._p_yes_at(r, toks, sampler.steps, row)
                     if r.score_after and tuple(r.choices) == ("YES", "NO") else None)
            out.append(Generation(text=self._decode(toks),
                                  prompt_tokens=lengths[t], completion_tokens=1, finish_reason=finish, p_yes=p_yes))
        self.calls += len(requests)
        self.completion_tokens += len(requests)
        self.forward_passes += len(distinct)
        return out

    def _p_yes_at(self, req: GenRequest, toks: list[int], steps, row: int) -> float | None:
        """P(YES) at the step right after the first line-start `score_after`, if the text has one.

        The keyword may carry markdown ("**Verdict:**") and any case, as the verdict parser allows.
        None when the keyword ends inside a token (no clean next-token reading): the caller then
        continues from a prefix that ends exactly at the keyword.
        """
        word = re.escape(req.score_after.rstrip().rstrip(":"))
        at_end = re.compile(rf"(?im)^[\s*_`>#-]*{word}[\s*_`]*:[*_` ]*\Z")
        anywhere = re.compile(rf"(?im)^[\s*_`>#-]*{word}[\s*_`]*:")
        full = req.prefix
        for step in range(len(toks) + 1):
            if at_end.search(full):
                if step >= len(steps):
                    return None
                y, n = steps[step][0][row], steps[step][1][row]
                return y / (y + n) if y + n > 0 else 0.5
            if anywhere.search(full) or step == len(toks):
                return None
            full = req.prefix + self._decode(toks[: step + 1])
        return None

    def stats(self) -> dict:
        return {"backend": "hf", "model": self.name, "calls": self.calls,
                "completion_tokens": self.completion_tokens, "one_token_forward_passes": self.forward_passes}


def _progress_stream():
    """tqdm writes to stderr, which Snakemake rules redirect into their log file."""
    import sys

    return sys.stderr
