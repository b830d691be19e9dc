"""One pass over a whole context versus recomputing the growing context for every part (Brain-Score's
HuggingfaceSubject when recording), for one Natural Stories story read by SmolLM2 in process.

    python perf/language_cache.py [--story 10] [--recompute-parts N]

Reports tokens processed and wall time of both ways, and checks that they agree (surprisal to 1e-3 bits, last-token
representations to 1e-3). With --sample N the recompute way is timed on N evenly spaced prefixes only (short to
long) and its time for all prefixes is interpolated linearly in prefix length from those timings; the output says
so. Results go to perf/results/language_cache.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "model_templates" / "hf-causal-lm"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--story", type=int, default=10, help="story 10 is the shortest (939 words)")
    parser.add_argument("--sample", type=int, default=None, help="time only this many evenly spaced prefixes")
    args = parser.parse_args()

    import model as hf  # the template's model.py

    from cortexbox.benchmarks.futrell2018 import Futrell2018Pearsonr
    from cortexbox.sdk import Stimulus

    bench = Futrell2018Pearsonr(stories=[args.story])
    parts = [Stimulus(sid, text=text, context_id=context) for sid, text, context in bench.stimulus_set.iter_text()]
    lm = hf.CausalLM()
    lm.load()
    layer = "hidden_states.20"
    lengths = [len(lm._part_ids(p.text, first=i == 0)) for i, p in enumerate(parts)]
    total = 1 + sum(lengths)

    t0 = time.perf_counter()
    once = lm.digest(parts, [layer], ["surprisal"])
    one_pass_s = time.perf_counter() - t0

    prefix_tokens = np.cumsum([1 + lengths[0]] + lengths[1:])  # tokens in the context ending at each part
    ks = list(range(1, len(parts) + 1))
    if args.sample:
        ks = sorted(set(np.linspace(1, len(parts), args.sample).round().astype(int).tolist()))
    worst = [0.0, 0.0]
    timings = []
    for k in ks:
        t0 = time.perf_counter()
        again = lm.digest(parts[:k], [layer], ["surprisal"])
        timings.append(time.perf_counter() - t0)
        worst[0] = max(worst[0], abs(float(again["surprisal"][-1, 0] - once["surprisal"][k - 1, 0])))
        worst[1] = max(worst[1], float(np.abs(again[layer][-1] - once[layer][k - 1]).max()))
    measured_s = float(sum(timings))
    n = len(ks)
    measured_tokens = int(sum(prefix_tokens[k - 1] for k in ks))
    recompute_tokens = int(prefix_tokens.sum())
    if n == len(parts):
        recompute_s = measured_s
    else:  # every prefix's time, interpolated in its length from the timed ones
        recompute_s = float(np.interp(prefix_tokens, [prefix_tokens[k - 1] for k in ks], timings).sum())
    result = {
        "story": args.story,
        "parts": len(parts),
        "one_pass": {"tokens": total, "wall_s": round(one_pass_s, 2)},
        "recompute": {
            "tokens": recompute_tokens,
            "wall_s": round(recompute_s, 1),
            "measured_parts": n,
            "measured_tokens": measured_tokens,
            "measured_wall_s": round(measured_s, 1),
            "extrapolated": n != len(parts),
        },
        "speedup": round(recompute_s / one_pass_s, 1),
        "max_abs_diff": {"surprisal_bits": worst[0], layer: worst[1]},
        "threads": __import__("torch").get_num_threads(),
    }
    assert worst[0] < 1e-3 and worst[1] < 1e-3, worst
    (REPO / "perf" / "results").mkdir(exist_ok=True)
    (REPO / "perf" / "results" / "language_cache.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
