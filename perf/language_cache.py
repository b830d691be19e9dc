"""One pass over a whole context versus recomputing the growing context for every part (Brain-Score's
HuggingfaceSubject when recording), for one Natural Stories story read by SmolLM2 in process.

    python perf/language_cache.py [--story 10] [--recompute-parts N]

Reports tokens processed and wall time of both ways, and checks that they agree (surprisal to 1e-3 bits, last-token
representations to 1e-3). With --recompute-parts N the recompute way runs on the first N parts only and its time
for the whole story is extrapolated from its measured cost per token (it is linear in tokens processed), which is
stated in the output. Results go to perf/results/language_cache.json.
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
    parser.add_argument("--recompute-parts", type=int, default=None)
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

    n = len(parts) if args.recompute_parts is None else min(args.recompute_parts, len(parts))
    prefix_tokens = np.cumsum([1 + lengths[0]] + lengths[1:])  # tokens in the context ending at each part
    t0 = time.perf_counter()
    worst = [0.0, 0.0]
    for k in range(1, n + 1):
        again = lm.digest(parts[:k], [layer], ["surprisal"])
        worst[0] = max(worst[0], abs(float(again["surprisal"][-1, 0] - once["surprisal"][k - 1, 0])))
        worst[1] = max(worst[1], float(np.abs(again[layer][-1] - once[layer][k - 1]).max()))
    measured_s = time.perf_counter() - t0
    measured_tokens = int(prefix_tokens[:n].sum())
    recompute_tokens = int(prefix_tokens.sum())
    recompute_s = measured_s if n == len(parts) else measured_s * recompute_tokens / measured_tokens
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
