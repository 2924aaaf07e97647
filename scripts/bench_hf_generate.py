"""The Hugging Face side of the generation benchmark (crates/decode/benches/generation.rs).

Same model folder, same prompts (crates/decode/benches/prompts.txt), same four cases, same table:

  (a) batch 1: the first prompt, one sample
  (b) 25 samples of the first prompt (num_return_sequences=25)
  (c) the 64 prompts, one left-padded batch
  (d) forward throughput: 32 x 64 tokens, every position's logits (+ log-softmax and gather, as
      perplexity scoring does; and bare logits)

float32, torch.set_num_threads(2) by default, 20 new tokens (min_new_tokens=20 as well), top-p 0.9,
temperature 1, no top-k. One warm-up, then the median of --reps runs.

    .detox/venv/bin/python scripts/bench_hf_generate.py [--threads N] [--reps N] [--tsv PATH]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "crates" / "decode" / "benches" / "prompts.txt"
NEW_TOKENS = 20
FORWARD_ROWS = 32
FORWARD_LEN = 64


def read_prompts() -> list[str]:
    lines = [l.strip() for l in PROMPTS.read_text(encoding="utf-8").splitlines()]
    prompts = [l for l in lines if l and not l.startswith("#")]
    if len(prompts) != 64:
        raise SystemExit(f"{PROMPTS}: expected 64 prompts, found {len(prompts)}")
    return prompts


def forward_ids(vocab: int) -> torch.Tensor:
    """The same deterministic ids as forward_ids() in generation.rs."""
    rows = [
        [(1000 + (r * FORWARD_LEN + c) * 7919) % vocab for c in range(FORWARD_LEN)]
        for r in range(FORWARD_ROWS)
    ]
    return torch.tensor(rows, dtype=torch.long)


def timed(reps: int, fn) -> tuple[float, float, float]:
    fn()
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), min(seconds), max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("DETOX_BENCH_THREADS", 2)))
    parser.add_argument("--reps", type=int, default=int(os.environ.get("DETOX_BENCH_REPS", 5)))
    parser.add_argument("--model", default=str(ROOT / ".detox" / "models" / "smollm2-135m-instruct"))
    parser.add_argument("--tsv", help="also write case<TAB>tok/s<TAB>seconds lines here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    pad_id = model.generation_config.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = pad_id

    prompts = read_prompts()
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]

    print("## Generation benchmark (Hugging Face transformers)\n")
    print(
        f"- machine: {os.cpu_count()} logical cores; intra-op threads {torch.get_num_threads()} "
        f"(interop {torch.get_num_interop_threads()}); torch {torch.__version__}, transformers "
        f"{transformers.__version__}, Python {platform.python_version()}; MKL "
        f"{torch.backends.mkl.is_available()}, OpenMP {torch.backends.openmp.is_available()}, "
        f"oneDNN {torch.backends.mkldnn.is_available()}"
    )
    print(
        f"- model: {args.model} (float32); {NEW_TOKENS} new tokens (min_new_tokens too), top-p 0.9, "
        "temperature 1, no top-k"
    )
    print(
        f"- prompts: crates/decode/benches/prompts.txt; first prompt {lengths[0]} tokens, 64 prompts "
        f"{min(lengths)}–{max(lengths)} tokens; median of {args.reps} runs after 1 warm-up\n"
    )

    def generation(texts: list[str], samples: int) -> tuple[int, tuple[float, float, float]]:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        produced = 0

        def run() -> None:
            nonlocal produced
            with torch.inference_mode():
                out = model.generate(
                    **batch,
                    do_sample=True,
                    top_p=0.9,
                    top_k=0,
                    temperature=1.0,
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    num_return_sequences=samples,
                    pad_token_id=pad_id,
                )
            produced = (out.shape[1] - batch.input_ids.shape[1]) * out.shape[0]

        seconds = timed(args.reps, run)
        expected = len(texts) * samples * NEW_TOKENS
        if produced != expected:
            raise SystemExit(f"expected {expected} new tokens, got {produced}")
        return produced, seconds

    rows = []
    tokens, seconds = generation(prompts[:1], 1)
    rows.append(("(a) batch 1, one prompt", "batch1", 1, tokens, seconds))
    tokens, seconds = generation(prompts[:1], 25)
    rows.append(("(b) 25 samples of one prompt", "batch25", 25, tokens, seconds))
    tokens, seconds = generation(prompts, 1)
    rows.append(("(c) 64 different prompts", "batch64", 64, tokens, seconds))

    ids = forward_ids(model.config.vocab_size)
    mask = torch.ones_like(ids)

    def forward_nll() -> None:
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits
            log_probs = logits[:, :-1].float().log_softmax(-1)
            token_lp = log_probs.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            token_lp.tolist()

    def forward_bare() -> None:
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits
            assert logits.shape[1] == FORWARD_LEN

    positions = FORWARD_ROWS * FORWARD_LEN
    rows.append(("(d) forward, log-softmax + gather", "forward_nll", FORWARD_ROWS, positions, timed(args.reps, forward_nll)))
    rows.append(("(d′) forward, bare logits", "forward_bare", FORWARD_ROWS, positions, timed(args.reps, forward_bare)))

    print("| case | rows | tokens | seconds (median) | min–max | tok/s |")
    print("|---|---:|---:|---:|---:|---:|")
    tsv = []
    for case, key, n, tokens, (median, lo, hi) in rows:
        rate = tokens / median
        tsv.append(f"{key}\t{rate:.2f}\t{median:.4f}\n")
        print(f"| {case} | {n} | {tokens} | {median:.3f} | {lo:.3f}–{hi:.3f} | {rate:.1f} |")
    print("\n(tokens = new tokens for (a)–(c), prefill included in the time; scored positions 32 × 64 for (d))")
    if args.tsv:
        pathlib.Path(args.tsv).write_text("".join(tsv), encoding="utf-8")


if __name__ == "__main__":
    main()
