"""The 16 entry-level categories of Geirhos et al. (2019, 2021) and how ImageNet logits become a 16-way choice.

Which ImageNet classes make up each category
--------------------------------------------
Geirhos et al. define the mapping in ``code/helper/human_categories.py`` of ``rgeirhos/texture-vs-shape`` (the same
index lists are Brain-Score's ``LabelToImagenetIndices`` and ``bethgelab/model-vs-human``'s). Their rule, applied to
WordNet 3.0 and the ILSVRC-2012 class list (``wordnet_functions.get_ilsvrc2012_training_WNID``):

1. For each of the 1000 ILSVRC-2012 classes take its first name (``"tabby, tabby cat"`` -> ``tabby``; spaces become
   ``_``) and that name's first noun sense in WordNet (``wn.synsets(name)[0]``; the first offset listed for the lemma
   in ``index.noun``). Note: the name's first sense, not the class's own synset: ``"plane, carpenter's plane"``
   resolves to ``airplane.n.01``.
2. The class belongs to a category when the category word's first noun sense (``airplane`` -> ``airplane.n.01``) is
   that synset or one of its hypernyms (transitive closure over ``@`` hypernym and ``@i`` instance-hypernym pointers).
3. The authors then removed some classes by hand; :data:`MANUAL_EXCLUSIONS` lists every class that steps 1-2 admit
   and their table does not (9 classes, e.g. the carpenter's plane from ``airplane`` and ``minivan`` from ``car``,
   which stays in ``truck``). Steps 1-2 admit no class outside their lists that is not excluded here, and miss none.

:func:`derive_category_indices` implements steps 1-3 on the WordNet 3.0 database files (Debian's ``wordnet-base``
package installs them in ``/usr/share/wordnet``; no nltk needed). The result, with the 1000 ILSVRC-2012 WNIDs and
names it was derived from, is committed as data, ``imagenet16_table.json`` beside this module (shipped as package
data; :data:`CATEGORY_INDICES`, :data:`ILSVRC2012_WNIDS`, :data:`ILSVRC2012_NAMES` and :data:`ROOT_SYNSETS` are read
from it), written by::

    apt-get install wordnet-base
    pip download --no-deps timm==1.0.31 && unzip timm-1.0.31-*.whl 'timm/data/_info/imagenet_synset*'
    python -m cortexbox.benchmarks.imagenet16 \\
        --wordnet /usr/share/wordnet \\
        --synsets timm/data/_info/imagenet_synsets.txt \\
        --names timm/data/_info/imagenet_synset_to_lemma.txt \\
        --write benchmarks/imagenet16_table.json

(timm's files hold the standard class list: 1000 WNIDs in sorted order, which is the ILSVRC-2012 index order, and the
``synset_words.txt`` names.) ``--check`` re-derives the table from WordNet and the committed class list and fails on
any difference; ``tests/benchmarks/test_benchmarks_geirhos2019.py`` runs it where WordNet is installed, and checks
that ``--write`` reproduces the committed file byte for byte.

The file's keys: ``classes``, the 1000 ILSVRC-2012 classes in index order as ``[wnid, names]``; ``root_synsets``,
each category word's first WordNet 3.0 noun sense; ``category_indices``, the classes of each category (0-based
indices into ``classes``: the WordNet rule minus :data:`MANUAL_EXCLUSIONS`).

From logits to a choice
-----------------------
:func:`category_probabilities`: softmax over the 1000 ImageNet logits, then per category the *mean* probability of
its member classes (Brain-Score's ``LabelBehavior`` with ``aggregation='mean'``, which follows model-vs-human's
``ImageNetProbabilitiesTo16ClassesMapping``; the authors recommend averaging). :func:`logits_to_choices`: the
category with the highest mean, ties to the first in :data:`CATEGORIES` order (alphabetical, as Brain-Score's
``sorted`` choice labels and ``np.argmax``). A 1001-wide output (TF-slim/TF Lite MobileNets, index 0 =
"background") has its first column dropped; dropping it before or after the softmax selects the same category,
because the softmax denominator is shared by every class.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "CATEGORIES",
    "CATEGORY_INDICES",
    "ILSVRC2012_NAMES",
    "ILSVRC2012_WNIDS",
    "MANUAL_EXCLUSIONS",
    "ROOT_SYNSETS",
    "category_probabilities",
    "derive_category_indices",
    "imagenet_logits",
    "logits_to_choices",
]

#: The 16 categories, sorted (Brain-Score's choice-label order).
CATEGORIES: tuple[str, ...] = (
    "airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat",
    "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck",
)  # fmt: skip

#: Classes (ILSVRC-2012 index, WNID, name) that WordNet's rule admits and Geirhos et al. removed by hand.
MANUAL_EXCLUSIONS: dict[str, tuple[tuple[int, str, str], ...]] = {
    "airplane": ((726, "n03954731", "plane, carpenter's plane, woodworking plane"),),
    "car": (
        (407, "n02701002", "ambulance"),
        (609, "n03594945", "jeep, landrover"),
        (627, "n03670208", "limousine, limo"),
        (656, "n03770679", "minivan"),
        (661, "n03777568", "Model T"),
    ),
    "knife": ((623, "n03658185", "letter opener, paper knife, paperknife"),),
    "oven": ((544, "n03259280", "Dutch oven"),),
}


#: The committed table (see the module docstring), package data beside this module.
TABLE_FILE = "imagenet16_table.json"


def _load_table() -> dict:
    table = json.loads(resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8"))
    if list(table["category_indices"]) != list(CATEGORIES) or len(table["classes"]) != 1000:
        raise ValueError(f"{TABLE_FILE}: expected the 16 categories and 1000 classes")
    return table


_TABLE = _load_table()
#: The 1000 ILSVRC-2012 WNIDs in index order (sorted), from ``imagenet16_table.json``.
ILSVRC2012_WNIDS: tuple[str, ...] = tuple(wnid for wnid, _ in _TABLE["classes"])
#: Their names (``synset_words.txt``: ``"tabby, tabby cat"``), in the same order.
ILSVRC2012_NAMES: tuple[str, ...] = tuple(names for _, names in _TABLE["classes"])
#: Category -> the WNID of the category word's first WordNet 3.0 noun sense (``airplane`` -> ``n02691156``).
ROOT_SYNSETS: Mapping[str, str] = dict(_TABLE["root_synsets"])
#: Category -> sorted ILSVRC-2012 class indices (0-based, 1000-class order), from ``imagenet16_table.json``.
CATEGORY_INDICES: Mapping[str, tuple[int, ...]] = {c: tuple(v) for c, v in _TABLE["category_indices"].items()}
del _TABLE


def imagenet_logits(logits: np.ndarray) -> np.ndarray:
    """Return the 1000 ImageNet columns of a ``(n_stimuli, 1000)`` or ``(n_stimuli, 1001)`` logit array.

    Raises
    ------
    ValueError
        Not 2-D, or another number of columns.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (n_stimuli, 1000 or 1001), got shape {logits.shape}")
    if logits.shape[1] == 1001:
        return logits[:, 1:]  # TF-slim MobileNets: index 0 is "background"
    if logits.shape[1] != 1000:
        raise ValueError(
            f"logits must have 1000 ImageNet columns (or 1001 with a leading background class), got {logits.shape[1]}"
        )
    return logits


def category_probabilities(logits: np.ndarray) -> np.ndarray:
    """``(n_stimuli, 16)`` mean softmax probability of each category's member classes, columns as :data:`CATEGORIES`."""
    values = imagenet_logits(logits).astype(np.float64)
    values = values - values.max(axis=1, keepdims=True)
    probabilities = np.exp(values)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return np.stack([probabilities[:, CATEGORY_INDICES[c]].mean(axis=1) for c in CATEGORIES], axis=1)


def logits_to_choices(logits: np.ndarray) -> np.ndarray:
    """The 16-way choice per stimulus (object array of category names); see the module docstring."""
    return np.asarray(CATEGORIES, dtype=object)[category_probabilities(logits).argmax(axis=1)]


# --- derivation from WordNet 3.0 ------------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _read_noun_index(wordnet_dir: Path) -> dict[str, list[str]]:
    """lemma -> noun synset offsets in sense order (``index.noun``)."""
    senses: dict[str, list[str]] = {}
    with open(wordnet_dir / "index.noun", encoding="latin-1") as handle:
        for line in handle:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split()
            n_senses, n_pointer_kinds = int(fields[2]), int(fields[3])
            offsets = fields[4 + n_pointer_kinds + 2 :]
            if len(offsets) != n_senses:
                raise ValueError(f"index.noun: cannot parse the line for {fields[0]!r}")
            senses[fields[0]] = offsets
    return senses


@lru_cache(maxsize=2)
def _read_noun_hypernyms(wordnet_dir: Path) -> dict[str, list[str]]:
    """noun synset offset -> offsets of its noun hypernyms and instance hypernyms (``data.noun``)."""
    hypernyms: dict[str, list[str]] = {}
    with open(wordnet_dir / "data.noun", encoding="latin-1") as handle:
        for line in handle:
            if line.startswith("  "):
                continue
            fields = line.split("|", 1)[0].split()
            n_words = int(fields[3], 16)
            position = 4 + 2 * n_words
            n_pointers = int(fields[position])
            parents = []
            for k in range(n_pointers):
                symbol, target, pos = fields[position + 1 + 4 * k : position + 4 + 4 * k]
                if symbol in ("@", "@i") and pos == "n":
                    parents.append(target)
            hypernyms[fields[0]] = parents
    return hypernyms


def _closure(offset: str, hypernyms: Mapping[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    stack = [offset]
    while stack:
        for parent in hypernyms[stack.pop()]:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _first_name(name: str) -> str:
    return name.split(",")[0].strip().replace(" ", "_").lower()


def derive_category_indices(
    wordnet_dir: str | Path,
    class_names: Sequence[str],
    exclusions: Mapping[str, Sequence[tuple[int, str, str]]] = MANUAL_EXCLUSIONS,
) -> dict[str, tuple[int, ...]]:
    """Steps 1-3 of the module docstring on the WordNet 3.0 files in ``wordnet_dir``.

    Parameters
    ----------
    wordnet_dir : path
        Folder with WordNet 3.0's ``index.noun`` and ``data.noun``.
    class_names : sequence of 1000 str
        ILSVRC-2012 class names in index order (``"tabby, tabby cat"``).
    exclusions : mapping
        Category -> ``(index, wnid, name)`` of classes to remove after the WordNet rule.

    Raises
    ------
    ValueError
        A class name or category is not a WordNet noun, or an exclusion is not admitted by the rule.
    """
    wordnet_dir = Path(wordnet_dir)
    senses = _read_noun_index(wordnet_dir)
    hypernyms = _read_noun_hypernyms(wordnet_dir)
    firsts = []
    for index, name in enumerate(class_names):
        lemma = _first_name(name)
        if lemma not in senses:
            raise ValueError(f"class {index} ({name!r}): {lemma!r} is not a WordNet noun")
        offset = senses[lemma][0]
        firsts.append((offset, _closure(offset, hypernyms)))
    result: dict[str, tuple[int, ...]] = {}
    for category in CATEGORIES:
        root = senses[category][0]
        admitted = {i for i, (offset, ancestors) in enumerate(firsts) if offset == root or root in ancestors}
        excluded = {index for index, _, _ in exclusions.get(category, ())}
        if not excluded <= admitted:
            raise ValueError(f"{category}: exclusions {sorted(excluded - admitted)} are not admitted by the rule")
        result[category] = tuple(sorted(admitted - excluded))
    return result


def _render_table(
    wnids: Sequence[str], names: Sequence[str], roots: Mapping[str, str], indices: Mapping[str, tuple[int, ...]]
) -> str:
    """The text of ``imagenet16_table.json``: JSON, one class or category a line so that changes diff readably."""

    def block(rows: Sequence[str]) -> list[str]:
        return [f"    {row}," for row in rows[:-1]] + [f"    {rows[-1]}"]

    dump = json.dumps
    lines = [
        "{",
        '  "about": ' + dump(
            "GENERATED by python -m cortexbox.benchmarks.imagenet16 --write; do not edit (the derivation is in that "
            "module's docstring). classes: the 1000 ILSVRC-2012 classes in index order [wnid, names] (sorted WNIDs; "
            "names as synset_words.txt), from timm 1.0.31's timm/data/_info/imagenet_synsets.txt and "
            "imagenet_synset_to_lemma.txt (Apache-2.0). root_synsets: each category word's first WordNet 3.0 noun "
            "sense. category_indices: the classes of each category (WordNet rule minus the manual exclusions)."
        ) + ",",
        '  "root_synsets": {',
        *block([f"{dump(c)}: {dump('n' + roots[c])}" for c in CATEGORIES]),
        "  },",
        '  "category_indices": {',
        *block([f"{dump(c)}: {dump(list(indices[c]))}" for c in CATEGORIES]),
        "  },",
        '  "classes": [',
        *block([dump([w, n]) for w, n in zip(wnids, names)]),
        "  ]",
        "}",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Derive the 16-category ImageNet index table from WordNet 3.0.")
    parser.add_argument("--wordnet", default="/usr/share/wordnet", help="folder with index.noun and data.noun")
    parser.add_argument("--synsets", help="1000 ILSVRC-2012 WNIDs, one a line (default: the committed table's)")
    parser.add_argument("--names", help="'WNID<TAB>names' lines (default: the committed table's)")
    parser.add_argument("--write", help="write the table (JSON) to this path")
    parser.add_argument("--check", action="store_true", help="fail unless the derivation equals the committed table")
    args = parser.parse_args(argv)
    if args.synsets:
        wnids = [line.strip() for line in Path(args.synsets).read_text().splitlines() if line.strip()]
        by_wnid = dict(line.split("\t", 1) for line in Path(args.names).read_text().splitlines() if "\t" in line)
        names = [by_wnid[w].strip() for w in wnids]
    else:
        wnids, names = list(ILSVRC2012_WNIDS), list(ILSVRC2012_NAMES)
    if len(wnids) != 1000 or wnids != sorted(wnids):
        raise SystemExit("expected the 1000 ILSVRC-2012 WNIDs in sorted order")
    for category, excluded in MANUAL_EXCLUSIONS.items():
        for index, wnid, _ in excluded:
            if wnids[index] != wnid:
                raise SystemExit(f"exclusion {index} of {category} is {wnids[index]}, expected {wnid}")
    indices = derive_category_indices(args.wordnet, names)
    senses = _read_noun_index(Path(args.wordnet))
    roots = {c: senses[c][0] for c in CATEGORIES}
    text = _render_table(wnids, names, roots, indices)
    if args.write:
        Path(args.write).write_text(text)
    if args.check:
        same = indices == dict(CATEGORY_INDICES) and wnids == list(ILSVRC2012_WNIDS)
        if not same:
            print("derived table differs from the committed one", file=sys.stderr)  # noqa: T201
            return 1
    for category in CATEGORIES:
        print(f"{category:9s} {len(indices[category]):3d} {list(indices[category])}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
