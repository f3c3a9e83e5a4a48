"""The data pipeline measured: throughput against the tokenizer alone, peak memory on a big corpus, data time per step.

    python tools/data_bench.py                    # all three: writes docs/bench/data-pipeline/data.json, prints a table
    python tools/data_bench.py --big-mb 1024      # the size of the generated corpus for the memory figure

1. Throughput. The same documents (the Python standard library's sources, ~30 MB of text)
   go through `tokenizers`' own batch encode (`encode_batch_fast` over the documents held in
   memory: the tokenizer alone) and through `pulse data prepare`'s pipeline (read, check UTF-8,
   encode, pack with eos, write the memmap, hash), in one process, interleaved, best of
   --rounds. The ratio pipeline / tokenizer is the figure (target ≥ 0.8×). The byte tokenizer
   is a view of the bytes (numpy's frombuffer, the "tokenizer alone" here), so its ratio only
   says the pipeline's own cost (reading, checking UTF-8, writing, hashing) is all there is.
2. Peak memory. A corpus of --big-mb MB of JSON Lines is generated from those sources
   (each document repeated with its number, so documents differ), then prepared in a fresh
   process with the 8k BPE; its peak resident set (VmHWM: torch and PULSE imported, ~230 MB of it) is the
   figure (target ≤ 500 MB).
3. Data time per step. For batch 16 × 1024 tokens of text-hybrid.toml's model: the time to
   draw one training batch from the prepared memmap against one forward + backward + AdamW
   step, medians of --steps (target ≤ 1 %).

The 8k BPE is trained here on the training documents (`pulse tokenizer train`'s code).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    from pulse.bench.machine import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def stdlib_docs() -> list[bytes]:
    from pulse.data.readers import corpus_files, documents
    from pulse.specs.tasks import TextSpec

    spec = TextSpec()
    out = []
    for f in corpus_files(spec):
        for d in documents(f, spec):
            try:
                d.decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.append(d)
    return out


def throughput(tok, docs: list[bytes], work: Path, rounds: int) -> dict:
    """MB/s of the tokenizer alone and of the whole prepare pipeline, on the same documents."""
    from pulse.data.corpus import open_corpus
    from pulse.specs.tasks import TextSpec

    mb = sum(len(d) for d in docs) / 1e6
    texts = [d.decode("utf-8") for d in docs]
    alone, pipeline = [], []
    for r in range(rounds):
        start = time.perf_counter()
        if tok.name == "bytes":
            [np.frombuffer(d, dtype=np.uint8) for d in docs]
        else:
            tok.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        alone.append(time.perf_counter() - start)
        spec = TextSpec(seq_len=256, cache_dir=str(work / f"cache-{tok.name}-{r}"))
        start = time.perf_counter()
        open_corpus(spec, tok)
        pipeline.append(time.perf_counter() - start)
    a, p = min(alone), min(pipeline)
    return {"tokenizer": tok.digest()[:24], "mb": mb, "tokenizer_alone_mb_s": mb / a, "pipeline_mb_s": mb / p,
            "ratio": a / p, "rounds": rounds}


BIG_CHILD = """
import json, resource, sys, time
from pulse.data.corpus import open_corpus
from pulse.specs.tasks import TextSpec
from pulse.data.tokenizer import HFTokenizer
spec = TextSpec(path=sys.argv[1], format="jsonl", seq_len=1024, cache_dir=sys.argv[3])
start = time.perf_counter()
corpus = open_corpus(spec, HFTokenizer.load(sys.argv[2]))
# VmHWM is this process's own peak (ru_maxrss can carry the forking parent's size across exec)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
peak = int(status["VmHWM"].split()[0]) / 1024 if "VmHWM" in status else \
resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": int(len(corpus.train) + len(corpus.val)),
                  "peak_rss_mb": peak}))
"""


def big_corpus(docs: list[bytes], path: Path, size_mb: int) -> float:
    """JSON Lines of at least size_mb MB: the documents over and over, each copy numbered (so none repeats)."""
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_mb * 1e6:
            for d in docs:
                line = json.dumps({"text": f"# copy {copy}\n" + d.decode("utf-8")}) + "\n"
                f.write(line)
                written += len(line.encode("utf-8"))
            copy += 1
    return written / 1e6


def peak_memory(tok_path: Path, docs: list[bytes], work: Path, size_mb: int) -> dict:
    corpus = work / "big.jsonl"
    mb = big_corpus(docs, corpus, size_mb)
    done = subprocess.run([sys.executable, "-c", BIG_CHILD, str(corpus), str(tok_path), str(work / "big-cache")],
                          capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    corpus.unlink()
    return {"corpus_mb": mb, **out, "mb_s": mb / out["seconds"]}


def data_time(steps: int, work: Path) -> dict:
    """Median time to draw a 16 × 1024 batch against a training step of text-hybrid's model at that size."""
    import torch

    import pulse
    from pulse.data.tokenizer import tokenizer_of
    from pulse.tasks import build_task
    from pulse.train.optim import make_optimizer

    recipe = pulse.load_recipe(ROOT / "recipes/text-hybrid.toml",
                               ["task.seq_len=1024", f"task.cache_dir={json.dumps(str(work / 'cache-step'))}"])
    task = build_task(recipe.task, tokenizer=tokenizer_of(recipe))
    model = pulse.build_model(recipe)
    task.check_model(model)
    task.prepare()
    opt = make_optimizer(model, recipe.train)
    draw, step = [], []
    for s in range(steps + 2):
        start = time.perf_counter()
        batch = task.train_batch(s, batch_size=16, seed=0)
        draw.append(time.perf_counter() - start)
        start = time.perf_counter()
        task.forward(model, None, batch)["loss_sum"].div(16 * 1024).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step.append(time.perf_counter() - start)
    d, t = float(np.median(draw[2:])), float(np.median(step[2:]))
    return {"batch": "16 x 1024", "draw_ms": d * 1e3, "step_ms": t * 1e3, "share": d / t, "steps": steps,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the generated corpus (memory figure)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the throughput comparison")
    parser.add_argument("--steps", type=int, default=8, help="training steps timed for the data-time figure")
    parser.add_argument("--vocab", type=int, default=8192, help="ids of the BPE")
    parser.add_argument("--parts", default="throughput,memory,step", help="which figures to measure (the others "
                        "are kept from --out when it exists)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/bench/data-pipeline/data.json")
    args = parser.parse_args()

    from pulse.data.bpe import train_bpe, write_tokenizer
    from pulse.data.readers import stdlib_root
    from pulse.data.tokenizer import ByteTokenizer, HFTokenizer

    docs = stdlib_docs()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok_path = work / "bpe.json"
        start = time.perf_counter()
        write_tokenizer(train_bpe([str(stdlib_root())], vocab_size=args.vocab), tok_path)
        trained = time.perf_counter() - start
        bpe = HFTokenizer.load(tok_path)
        parts = set(args.parts.split(","))
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result.update(machine=machine(), date=time.strftime("%Y-%m-%d"), bpe_train_s=trained)
        if "throughput" in parts:
            result["throughput"] = {"bytes": throughput(ByteTokenizer(specials=True), docs, work, args.rounds),
                                    f"bpe-{args.vocab}": throughput(bpe, docs, work, args.rounds)}
        if "memory" in parts:
            result["peak_memory"] = peak_memory(tok_path, docs, work, args.big_mb)
        if "step" in parts:
            result["data_time"] = data_time(args.steps, work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {result['machine']}")
    for name, t in result["throughput"].items():
        print(f"{name}: tokenizer alone {t['tokenizer_alone_mb_s']:.1f} MB/s, pipeline {t['pipeline_mb_s']:.1f} MB/s, "
              f"ratio {t['ratio']:.2f}x ({t['mb']:.1f} MB, best of {t['rounds']})")
    m = result["peak_memory"]
    print(f"peak memory preparing {m['corpus_mb']:.0f} MB with the BPE: {m['peak_rss_mb']:.0f} MB "
          f"({m['seconds']:.0f} s, {m['mb_s']:.1f} MB/s, {m['tokens']:,} tokens)")
    d = result["data_time"]
    print(f"data time per step ({d['batch']}): {d['draw_ms']:.3f} ms of {d['step_ms']:.0f} ms "
          f"= {100 * d['share']:.3f} %")
    print(f"wrote {args.out} (rusage max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB here)")


if __name__ == "__main__":
    main()
