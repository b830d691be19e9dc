"""SyntaxGym 2020: targeted syntactic evaluation from region surprisals (Brain-Score language ``syntaxgym-*``).

31 test suites (799 items; ``shared/data/syntaxgym2020``, Hu et al. 2020). Each item has conditions, each a sentence
cut into regions. The model reads every (item, condition) as one context whose parts are the non-empty regions,
and returns each region's surprisal (bits, summed over its tokens; an empty region has surprisal 0 and is not
sent). A suite's predictions are inequalities over region surprisals, e.g.
``((6;%plaus%) + (7;%plaus%)) < ((6;%implaus%) + (7;%implaus%))``; an item passes when all of the suite's
predictions hold (Hu et al. 2020), and the suite's score is the fraction of items that pass. No human data, no
ceiling: an engineering benchmark (its raw score is what the leaderboard shows). ``syntaxgym2020`` is the mean of
the 31 suite accuracies.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Sequence

import numpy as np
import xarray as xr

from .language import LanguageBenchmark, TextStimulusSet, values_by_stimulus
from .metrics.bootstrap import DEFAULT_N_BOOT, DEFAULT_SEED, bootstrap_record, multinomial_counts
from .score import Score

__all__ = ["SUITES", "SyntaxGym2020", "SyntaxGymSuite", "evaluate_formula"]

SUITES = (
    "center_embed", "center_embed_mod", "cleft", "cleft_modifier", "fgd_hierarchy", "fgd_object", "fgd_pp",
    "fgd_subject", "mvrr", "mvrr_mod", "npi_orc_any", "npi_orc_ever", "npi_src_any", "npi_src_ever", "npz_ambig",
    "npz_ambig_mod", "npz_obj", "npz_obj_mod", "number_orc", "number_prep", "number_src", "reflexive_orc_fem",
    "reflexive_orc_masc", "reflexive_prep_fem", "reflexive_prep_masc", "reflexive_src_fem", "reflexive_src_masc",
    "subordination", "subordination_orc-orc", "subordination_pp-pp", "subordination_src-src",
)  # fmt: skip

_TERM = re.compile(r"\(\s*(\d+)\s*;\s*%([^%]+)%\s*\)")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub}
_COMPARE = {ast.Lt: operator.lt, ast.Gt: operator.gt, ast.Eq: operator.eq, ast.LtE: operator.le, ast.GtE: operator.ge}


def evaluate_formula(formula: str, surprisal: dict[tuple[int, str], float]) -> bool:
    """Whether a SyntaxGym prediction holds.

    Parameters
    ----------
    formula : str
        Terms ``(region;%condition%)``, numbers, ``+ - < > =``, ``&`` (and), ``|`` (or) and parentheses.
    surprisal : dict
        ``(region_number, condition_name) -> surprisal``.

    Raises
    ------
    ValueError
        Anything else in the formula, or a term without a surprisal.
    """
    names: dict[str, float] = {}

    def term(match: re.Match[str]) -> str:
        key = (int(match.group(1)), match.group(2))
        if key not in surprisal:
            raise ValueError(f"formula {formula!r} refers to region {key[0]} of condition {key[1]!r}, which has no surprisal")
        name = f"t{len(names)}"
        names[name] = surprisal[key]
        return f" {name} "

    text = _TERM.sub(term, formula)
    text = re.sub(r"(?<![<>=!])=(?!=)", "==", text).replace("&", " and ").replace("|", " or ")
    tree = ast.parse(text.strip(), mode="eval")

    def value(node: ast.AST):  # a tiny evaluator: no names but the terms, no calls, no attributes
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.BoolOp):
            results = [bool(value(v)) for v in node.values]
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.Compare):
            left = value(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = value(right_node)
                if type(op) not in _COMPARE or not _COMPARE[type(op)](left, right):
                    if type(op) not in _COMPARE:
                        raise ValueError(f"unsupported comparison in {formula!r}")
                    return False
                left = right
            return True
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        raise ValueError(f"unsupported element {ast.dump(node)[:80]} in formula {formula!r}")

    return bool(value(tree))


class _SyntaxGym(LanguageBenchmark):
    version = 1
    region = "engineering"
    kind = "behaviour"
    behaviour = "surprisal"
    citation = (
        "Hu J, Gauthier J, Qian P, Wilcox E, Levy R (2020). A systematic assessment of syntactic generalization in "
        "neural language models. ACL."
    )
    suites: Sequence[str] = SUITES
    max_items: int | None = None
    #: Bootstrap over items (:mod:`.metrics.bootstrap`): replicates and the generator's seed.
    n_boot = DEFAULT_N_BOOT
    seed = DEFAULT_SEED

    def _data_files(self) -> list[str]:
        return [f"syntaxgym2020/suites/{suite}.json" for suite in self.suites]

    def _suite(self, suite: str) -> dict:
        data = json.loads((self.data_dir / "syntaxgym2020" / "suites" / f"{suite}.json").read_text())
        if self.max_items is not None:
            data["items"] = data["items"][: self.max_items]
        return data

    def _load_stimulus_set(self) -> TextStimulusSet:
        parts = []
        for suite in self.suites:
            for item in self._suite(suite)["items"]:
                for condition in item["conditions"]:
                    context = f"{suite}/{item['item_number']}/{condition['condition_name']}"
                    for region in condition["regions"]:
                        if region["content"].strip():
                            parts.append((f"{context}/{region['region_number']}", region["content"].strip(), context))
        return TextStimulusSet(self.identifier, parts)

    def suite_accuracies(self, assembly: xr.DataArray) -> dict[str, float]:
        """Fraction of items passing, per suite."""
        return {suite: float(np.mean(passed)) for suite, passed in self.item_passes(assembly).items()}

    def item_passes(self, assembly: xr.DataArray) -> dict[str, np.ndarray]:
        """Per suite, whether each item's predictions all hold (booleans in item order)."""
        ids = self.stimulus_set.stimulus_ids
        values = values_by_stimulus(assembly, ids)
        if values.shape[1] != 1:
            raise ValueError(f"expected one value (surprisal) per region, got {values.shape[1]}")
        by_id = dict(zip(ids, values[:, 0]))
        accuracies = {}
        for suite in self.suites:
            data = self._suite(suite)
            formulas = [p["formula"] for p in data["predictions"]]
            passed = []
            for item in data["items"]:
                surprisal = {}
                for condition in item["conditions"]:
                    context = f"{suite}/{item['item_number']}/{condition['condition_name']}"
                    for region in condition["regions"]:
                        key = (int(region["region_number"]), condition["condition_name"])
                        surprisal[key] = float(by_id.get(f"{context}/{region['region_number']}", 0.0))
                passed.append(all(evaluate_formula(f, surprisal) for f in formulas))
            accuracies[suite] = np.asarray(passed, dtype=bool)
        return accuracies

    def score(self, assembly: xr.DataArray) -> Score:
        """``raw`` = mean over suites of the fraction of items passing; ``attrs["bootstrap"]``: items resampled
        within each suite (suites fixed)."""
        passes = self.item_passes(assembly)
        accuracies = {suite: float(np.mean(passed)) for suite, passed in passes.items()}
        values = list(accuracies.values())
        raw = float(np.mean(values))
        error = float(np.std(values) / math.sqrt(len(values))) if len(values) > 1 else math.nan
        attrs: dict[str, object] = {
            "metric": "syntaxgym_accuracy",
            "suites": accuracies,
            **self._provenance(),
        }
        samples = None
        if self.n_boot:
            rng = np.random.default_rng(self.seed)
            samples = np.mean(
                [multinomial_counts(rng, len(p), self.n_boot) @ p.astype(float) / len(p) for p in passes.values()], axis=0
            )
            attrs["bootstrap"] = bootstrap_record(
                samples, raw, seed=self.seed, resampled=["items"],
                method="percentile bootstrap over items within each suite (suites fixed)",
            )
        return Score(raw=raw, error=error, values=values, attrs=attrs, bootstrap_samples=samples)


class SyntaxGymSuite(_SyntaxGym):
    """One suite: ``syntaxgym-<suite>``; raw = fraction of items whose predictions all hold."""

    def __init__(self, suite: str, *, data_dir=None, cache_dir=None, max_items: int | None = None) -> None:
        if suite not in SUITES:
            raise ValueError(f"unknown SyntaxGym suite {suite!r}; known: {', '.join(SUITES)}")
        super().__init__(data_dir=data_dir, cache_dir=cache_dir)
        self.suites = (suite,)
        self.max_items = max_items
        self.identifier = f"syntaxgym-{suite}" + ("" if max_items is None else f"[items<={max_items}]")
        self.description = f"SyntaxGym 2020 suite {suite}: fraction of items whose surprisal predictions hold."


class SyntaxGym2020(_SyntaxGym):
    """All 31 suites at once: raw = mean of the suite accuracies (``values`` lists them)."""

    identifier = "syntaxgym2020"
    description = "SyntaxGym 2020 (31 suites, 799 items): mean over suites of the fraction of items whose predictions hold."

    def __init__(self, *, data_dir=None, cache_dir=None, suites: Sequence[str] | None = None, max_items: int | None = None) -> None:
        super().__init__(data_dir=data_dir, cache_dir=cache_dir)
        if suites is not None:
            unknown = set(suites) - set(SUITES)
            if unknown:
                raise ValueError(f"unknown SyntaxGym suites {sorted(unknown)}")
            self.suites = tuple(suites)
        self.max_items = max_items
        if suites is not None or max_items is not None:
            self.identifier = f"syntaxgym2020[{','.join(self.suites)};items<={max_items}]"
