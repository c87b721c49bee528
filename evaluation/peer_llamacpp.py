"""The peer a user would pick instead of diffill: llama.cpp on the same GGUF, asked for the same fills.

Owns the llama.cpp side of the side-by-side benchmark (issue 13, item 7):
  * the one GGUF file llama.cpp needs: the default model's six wheel parts joined once into
    `<cache>/llamacpp/<sha256>.gguf`, written under a temporary name, its sha256 checked
    against the pin before the rename (`joined_gguf`); benchmark code only, the product
    reads the parts where they are;
  * the prompt: the Qwen2.5-Coder FIM frame `<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>`
    (`fim_prompt`), its marker strings from `infill_formats.FIM_TOKENS` and its token order
    from `infill_formats.causal_context`; llama.cpp's own tokenizer encodes the prefix and
    the suffix, and `textcut.cut_segments` then `layout.fit_context` cut them to the same
    window as diffill's engine (2,048 context tokens, markers and hole on top). Special-token
    text inside the code stays text (llama.cpp's `special=False`), as diffill's tokenizer
    keeps it (`encode_special_tokens`); the benchmark checks that both tokenizers give the
    same prompt ids;
  * the decoding: greedy (argmax of the last row's logits, diffill's banned ids at -inf so
    neither side can emit a FIM marker or the mask placeholder), ending at diffill's end
    tokens, at the budget, or as soon as `sampler.stop_point` says the planner's stop rule is
    met (`take_until_stop`): tokens are evaluated one at a time and the next is asked for only
    when the fill goes on, so llama.cpp is charged for no token diffill would not generate.
  * the prompt cache: ON by default. A user's llama.cpp keeps it (llama.vim asks
    llama-server with cache_prompt), and diffill reuses its own context cache by longest
    common prefix too; each fill reports how many prompt tokens it reused and evaluated.

Must not know diffill's engine, model or tensors (it shares only the prompt text rules,
the token strings and the stop rule with it), nor the benchmarks that call it
(evaluation.decoding's "llama.cpp" mode, evaluation.bench_llamacpp): they import it, so it
imports neither. llama-cpp-python is a benchmark-only extra (`pip install -e .[llamacpp]`);
only the class needs it.

Contract (what evaluation.decoding's interleaved mode calls):

    peer = LlamaCppPeer(default_gguf_file(), threads=2)
    text, stats = peer.fill(segs[0], segs[1], spec.budget, max_lines=spec.max_lines,
                            dedent_below=spec.dedent_below, min_depth=spec.min_depth)

`segs` from `lsp_server.pipeline.segments_at`, `spec` from `evaluation.decoding.stop_spec`;
`text` is the raw fill (pass it through `finalize`), `stats` a `PeerStats`.
`single_line=True` is the same as `max_lines=1`.

    python -m evaluation.bench_llamacpp --n 8 --threads 2        # the peer alone
    python -m evaluation.decoding --n 8 --modes ar,llama.cpp     # interleaved with diffill
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from diffusion_core.errors import CoreError
from diffusion_core.tokens.infill_formats import CAUSAL_MASK_TOKEN, CAUSAL_MAX_CONTEXT, FIM_TOKENS, FORMATS
from diffusion_core.generation.sampler import stop_point

GGUF_DIR_NAME = "llamacpp"  # under the diffill user cache (model_cache.cache_root)
JOIN_CHUNK = 16 * 1024 * 1024
# Tokens that end a fill: diffill's causal format's end tokens (the GGUF's eos is added at load).
END_TOKENS = FORMATS["causal"].stop_tokens
# Tokens diffill's sampler never commits into a causal hole (infill_formats.banned_ids).
BANNED_TOKENS = (FIM_TOKENS["pre"], FIM_TOKENS["suf"], FIM_TOKENS["mid"], CAUSAL_MASK_TOKEN)
FIM_MARKS = 3  # <|fim_prefix|>, <|fim_suffix|>, <|fim_middle|>: room they take in the window
# llama.cpp's context: diffill's full window (CAUSAL_MAX_CONTEXT tokens of text), the markers
# and the largest hole (protocol.MAX_HOLE_TOKENS) fit in it, so neither side cuts more.
N_CTX = 4096


# -- the GGUF file -------------------------------------------------------------------------------

def joined_gguf(parts: list[Path], expected_sha256: str, dest_dir: Path, progress=None) -> Path:
    """`dest_dir/<sha256>.gguf`: the parts joined in order, written once and checked.

    A file already there is kept when its sha256 (cached by size and mtime in the user
    cache's hashes.json) is the pin; otherwise it is written again. The copy is hashed as it
    is written and renamed into place only when it matches, so a reader never sees a torn
    or wrong file.
    """
    from diffusion_core.loading.model_cache import remember_hash, sha256_of

    parts = [Path(p) for p in parts]
    dest = Path(dest_dir) / f"{expected_sha256}.gguf"
    total = sum(p.stat().st_size for p in parts)
    if dest.is_file() and dest.stat().st_size == total and sha256_of([dest]) == expected_sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    h, done = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(JOIN_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total, "joining the GGUF parts")
        if h.hexdigest() != expected_sha256:
            raise CoreError(f"{parts[0].parent}: the {len(parts)} parts join to sha256 {h.hexdigest()}, "
                            f"not the pinned {expected_sha256}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remember_hash([dest], expected_sha256)
    return dest


def default_gguf_file(progress=None) -> Path:
    """The default model as one GGUF file in the user cache (joined on first use)."""
    from diffusion_core.loading.base_model import BASE_SHA256, locate
    from diffusion_core.loading.model_cache import cache_root

    return joined_gguf(locate(), BASE_SHA256, cache_root() / GGUF_DIR_NAME, progress)


# -- prompt and stop rule (pure) -----------------------------------------------------------------

def fim_prompt(prefix: str, suffix: str) -> str:
    """The FIM prompt as text (what `prompt_ids` encodes, markers as special tokens)."""
    return f"{FIM_TOKENS['pre']}{prefix}{FIM_TOKENS['suf']}{suffix}{FIM_TOKENS['mid']}"


def prompt_ids(prefix_ids: list[int], suffix_ids: list[int], marks: dict[str, int],
               max_context: int = CAUSAL_MAX_CONTEXT) -> list[int]:
    """The FIM prompt's ids: prefix and suffix cut to max_context tokens as diffill cuts them
    (`layout.fit_context`), framed in the engine's FIM order (`infill_formats.causal_context`).

    marks: FIM_TOKENS role ("pre", "suf", "mid") -> id in this vocabulary.
    """
    from diffusion_core.tokens.infill_formats import causal_context
    from diffusion_core.tokens.layout import fit_context
    from diffusion_core.tokens.tokenizer import SpecialIds

    (prefix_ids, suffix_ids), _ = fit_context([list(prefix_ids), list(suffix_ids)], max_context)
    sp = SpecialIds(mask=-1, eos=-1, pre=marks["pre"], suf=marks["suf"], mid=marks["mid"])
    return causal_context(prefix_ids, suffix_ids, sp)


@dataclass(frozen=True)
class StopRule:
    """A hole's stop rule, as `engine.HoleSpec` carries it (budget aside)."""

    max_lines: int = 0
    dedent_below: int = -1
    min_depth: int = 1

    def active(self) -> bool:
        return self.max_lines > 0 or self.dedent_below >= 0 or self.min_depth <= 0


def take_until_stop(stream: Iterator[int], decode: Callable[[list[int]], str], end_ids: set[int],
                    budget: int, rule: StopRule) -> tuple[list[int], int | None, str]:
    """Tokens from `stream` until the fill ends: (ids, text cut or None, why it ended).

    The same rule as diffill's causal decoding (causal.CausalJob.apply): an end token is
    not kept; after each kept token the decoded text is checked against the stop rule; the
    budget caps the kept tokens. No token is asked for after the fill has ended (a lazy
    stream evaluates a token only when asked for the next one).
    why: "end" (an end token), "stop" (the stop rule), "budget", or "stream" (it ran out).
    """
    ids: list[int] = []
    if budget <= 0:
        return ids, None, "budget"
    for t in stream:
        if t in end_ids:
            return ids, None, "end"
        ids.append(t)
        cut = stop_point(decode(ids), rule.max_lines, rule.dedent_below, rule.min_depth) if rule.active() else None
        if cut is not None:
            return ids, cut, "stop"
        if len(ids) >= budget:
            return ids, None, "budget"
    return ids, None, "stream"


def fill_text(ids: list[int], cut: int | None, decode: Callable[[list[int]], str]) -> str:
    """The fill's text: the decoded ids, cut where the stop rule ended it (as causal.result)."""
    text = decode(ids)
    return text[:cut] if cut is not None else text


# -- llama.cpp -----------------------------------------------------------------------------------

@dataclass
class PeerStats:
    ms: float = 0.0  # the whole fill: tokenize, prompt eval, decode, text
    tokenize_ms: float = 0.0
    prompt_ms: float = 0.0  # evaluating the prompt tokens not reused from the cache
    prompt_tokens: int = 0  # the prompt's length
    prompt_eval_tokens: int = 0  # of which evaluated now
    reused_tokens: int = 0  # of which kept from the previous fill's KV cache
    first_token_ms: float = 0.0  # from the start to the first token chosen
    decode_ms: float = 0.0  # evaluating the generated tokens after the first
    tokens: int = 0  # tokens kept in the fill
    forwards: int = 0  # llama_decode calls (the prompt eval counts one, whatever its batches)
    ended: str = ""  # take_until_stop's why


class LlamaCppPeer:
    """One llama.cpp context on a GGUF file, filling holes in FIM form, greedily.

    threads: ggml's worker threads wait for each other at spinning barriers many times a
    token, so with every core busy elsewhere a descheduled worker stalls the rest. On the
    2-core dev machine with a training run beside it (nice 10), 2 threads cost 8,353 ms a
    decoded token against 143 ms with 1 thread (prompt eval: 25.8 s vs 1.6 s for 28 tokens).
    On a quiet machine use one thread per core; under load, 1.
    """

    def __init__(self, gguf_path: str | Path, threads: int = 2, n_ctx: int = N_CTX,
                 prompt_cache: bool = True):
        import numpy as np
        from llama_cpp import Llama

        self._np = np
        self.llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         verbose=False)
        self.n_ctx, self.threads, self.prompt_cache = n_ctx, threads, prompt_cache
        self.marks = {role: self._token_id(FIM_TOKENS[role]) for role in ("pre", "suf", "mid")}
        missing = [FIM_TOKENS[r] for r, i in self.marks.items() if i is None]
        if missing:
            raise CoreError(f"{gguf_path}: no FIM token {', '.join(missing)} in its vocabulary")
        self.end_ids = {i for i in map(self._token_id, END_TOKENS) if i is not None} | {self.llm.token_eos()}
        self.banned = sorted(i for i in map(self._token_id, BANNED_TOKENS) if i is not None)

    def _token_id(self, name: str) -> int | None:
        ids = self.llm.tokenize(name.encode(), add_bos=False, special=True)
        return ids[0] if len(ids) == 1 else None

    def decode(self, ids: list[int]) -> str:
        # special=True: a special token that is not an end token shows as its text, as in
        # diffill's decode (skip_special_tokens=False).
        return self.llm.detokenize(ids, special=True).decode("utf-8", errors="replace")

    def _encode(self, text: str) -> list[int]:
        # special=False: marker text inside the code stays text, as diffill's tokenizer keeps it.
        return self.llm.tokenize(text.encode("utf-8", "surrogatepass"), add_bos=False, special=False) if text else []

    def fill(self, prefix: str, suffix: str, budget_tokens: int, single_line: bool = False, *,
             max_lines: int = 0, dedent_below: int = -1, min_depth: int = 1) -> tuple[str, PeerStats]:
        """The hole between prefix and suffix filled greedily: (raw text, stats)."""
        st = PeerStats()
        t0 = time.perf_counter()
        prompt = self.prompt(prefix, suffix, budget_tokens)
        st.tokenize_ms = (time.perf_counter() - t0) * 1e3
        rule = StopRule(1 if single_line else max_lines, dedent_below, min_depth)
        ids, cut, st.ended = take_until_stop(self._greedy(prompt, t0, st), self.decode, self.end_ids,
                                             budget_tokens, rule)
        text = fill_text(ids, cut, self.decode)
        st.tokens, st.ms = len(ids), (time.perf_counter() - t0) * 1e3
        return text, st

    def prompt(self, prefix: str, suffix: str, budget_tokens: int) -> list[int]:
        """The prompt ids of a hole: diffill's engine window (CAUSAL_MAX_CONTEXT tokens of
        prefix and suffix, the markers and the hole on top), never past this context's n_ctx."""
        from diffusion_core.tokens.textcut import cut_segments

        prefix, suffix = cut_segments([prefix, suffix], CAUSAL_MAX_CONTEXT)
        room = min(CAUSAL_MAX_CONTEXT, self.n_ctx - budget_tokens - FIM_MARKS)
        return prompt_ids(self._encode(prefix), self._encode(suffix), self.marks, max(room, 0))

    def _greedy(self, prompt: list[int], t0: float, st: PeerStats) -> Iterator[int]:
        """Argmax tokens after `prompt`, each evaluated only when the next one is asked for."""
        np, llm = self._np, self.llm
        keep = 0
        if self.prompt_cache:
            cached = llm.input_ids[: llm.n_tokens].tolist()
            while keep < min(len(cached), len(prompt)) and cached[keep] == prompt[keep]:
                keep += 1
            keep = min(keep, len(prompt) - 1)  # the last prompt token is evaluated for fresh logits
        llm.n_tokens = keep  # Llama.eval drops the KV cache from n_tokens on
        st.prompt_tokens, st.reused_tokens, st.prompt_eval_tokens = len(prompt), keep, len(prompt) - keep
        t = time.perf_counter()
        llm.eval(prompt[keep:])
        st.prompt_ms, st.forwards = (time.perf_counter() - t) * 1e3, 1
        vocab = llm.n_vocab()
        from llama_cpp import llama_get_logits_ith

        first = True
        while True:
            # logits of the last evaluated position, [V]; banned ids can never be the argmax
            row = np.ctypeslib.as_array(llama_get_logits_ith(llm.ctx, -1), shape=(vocab,)).copy()
            row[self.banned] = -np.inf
            token = int(row.argmax())
            if first:
                st.first_token_ms, first = (time.perf_counter() - t0) * 1e3, False
            yield token
            t = time.perf_counter()
            llm.eval([token])
            st.decode_ms += (time.perf_counter() - t) * 1e3
            st.forwards += 1

    def info(self) -> dict:
        return {"n_ctx": self.n_ctx, "threads": self.threads, "prompt_cache": self.prompt_cache,
                "end_ids": sorted(self.end_ids), "banned_ids": self.banned}

