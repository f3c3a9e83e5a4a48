"""Time per new token of Transformers' generate() on a PULSE export, at a short and a long context, side by side.

    python tools/hf_generate_bench.py                       # text-pulse and text-hybrid, contexts 256 and 8k
    python tools/hf_generate_bench.py --recipes text-pulse --contexts 256,8192 --new 64 --rounds 3

Each recipe's model (fresh weights: time does not depend on them) is exported with
`pulse export --format hf`'s code and loaded with AutoModelForCausalLM; for each context
length a random prompt is prefilled once, then `--new` tokens are generated greedily. The
per-token time is (time of generate with --new tokens − time with 1 token) / (--new − 1),
so the prefill cancels; rounds interleave the lengths and the median is kept. The ratio
long / short is the figure (target ≤ 1.2× for a model whose state does not grow).
Written: docs/bench/hf-generate/hf-generate.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def per_token(model, prompt: torch.Tensor, new: int) -> float:
    def run(n: int) -> float:
        start = time.perf_counter()
        model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - start

    return (run(new) - run(1)) / (new - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default="text-pulse,text-hybrid")
    parser.add_argument("--contexts", default="256,8192")
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/bench/hf-generate/hf-generate.json")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    import pulse
    from data_bench import machine
    from pulse.export.hf import export_hf

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(2)
    contexts = [int(c) for c in args.contexts.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes.split(","):
            torch.manual_seed(0)
            lm = pulse.PulseForCausalLM.from_recipe(ROOT / "recipes" / f"{name}.toml").eval()
            export_hf(lm, Path(tmp) / name)
            model = AutoModelForCausalLM.from_pretrained(Path(tmp) / name).eval()
            prompts = {c: torch.randint(0, 256, (1, c), generator=torch.Generator().manual_seed(c)) for c in contexts}
            times = {c: [] for c in contexts}
            with torch.no_grad():
                for _ in range(args.rounds):
                    for c in contexts:
                        times[c].append(per_token(model, prompts[c], args.new))
            ms = {c: 1e3 * statistics.median(v) for c, v in times.items()}
            rows.append({"recipe": name, "ms_per_token": ms, "ratio": ms[contexts[-1]] / ms[contexts[0]]})
            print(f"{name}: " + ", ".join(f"{c:,}: {m:.2f} ms/token" for c, m in ms.items())
                  + f" → {rows[-1]['ratio']:.2f}×", flush=True)
    doc = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "new_tokens": args.new, "rounds": args.rounds,
           "transformers": __import__("transformers").__version__, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
