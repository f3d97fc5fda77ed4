"""paper_numbers.json against ../shared/paper/tables.md, the paper's tables copied cell by cell.

The tables are parsed from the Markdown here, with their own name mappings (nothing is taken
from the JSON), and the two are compared both ways: every number of the JSON must be a cell of
the tables, at the same place, and every numeric cell of Tables 1-6 must be in the JSON, so a
typo, a misplaced or a missing cell fails.
"""

from __future__ import annotations

import ast
import importlib.resources
import json
import pathlib
import re

import pytest

from fbl_jax.reproduce import compare, plan

# The paper's names → the JSON's keys (written from tables.md's text).
METHOD_KEYS = {  # the method column, without its "(venue)" or "(ours)" note
    "CE loss": "ce",
    "LDAM-DRW": "ldam_drw",
    "BBN": "bbn",
    "LA": "la",
    "FBL": "fbl",
    "Decoupling": "decoupling",
}
DATASET_KEYS = {
    "CIFAR-10-LT": "cifar10_lt",
    "CIFAR-100-LT": "cifar100_lt",
    "ImageNet-LT": "imagenet_lt",
    "iNat 2018": "inat2018",
    "Places-LT": "places_lt",
}
TABLE2_COLUMN = re.compile(r"C(10|100) IF (\d+)")
TABLE1_FIELDS = {
    "classes": "classes",
    "training images": "training_images",
    "tail class": "tail_class",
    "head class": "head_class",
    "val": "val",
    "test": "test",
}
CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()
CIFAR100_NAMES = {0: "apple", 9: "bottle", 19: "cattle", 29: "dinosaur", 69: "rocket"}
CIFAR100_NAMES.update({79: "spider", 89: "tractor", 99: "worm"})


def parse_tables(text: str) -> dict[str, dict]:
    """{"1": {"heading": ..., "header": [...], "rows": [[...], ...]}, ...} from "## Table N"."""
    tables: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        heading = re.match(r"## Table (\d+)\b(.*)", line)
        if heading:
            current = tables.setdefault(heading[1], {"heading": line, "header": None, "rows": []})
            continue
        if line.startswith("## "):
            current = None
        if current is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
            continue
        if current["header"] is None:
            current["header"] = cells
        else:
            assert len(cells) == len(current["header"]), line
            current["rows"].append(cells)
    return tables


def number(cell: str) -> int | float | None:
    """A printed cell: "12,406" → 12406, "82.46" → 82.46, "-" → None."""
    if cell == "-":
        return None
    assert re.fullmatch(r"\d{1,3}(,\d{3})*(\.\d+)?|\d+(\.\d+)?", cell), cell
    cell = cell.replace(",", "")
    return float(cell) if "." in cell else int(cell)


def method_key(cell: str) -> str:
    return METHOD_KEYS[re.sub(r"\s*\([^)]*\)$", "", cell)]


def curriculum_key(cell: str) -> str:
    """Table 4's α(t) names: "linear increase" → "linear", "linear decrease" → "linear_decrease"."""
    return re.sub(r" increase$", "", cell).replace(" ", "_")


def heading_dataset(heading: str) -> str:
    found = [key for name, key in DATASET_KEYS.items() if re.search(rf"\b{name}\b", heading)]
    assert len(found) == 1, heading
    return found[0]


def expected_leaves(tables: dict[str, dict]) -> dict[tuple, object]:
    """Every numeric cell of tables.md as {JSON path: value} (Table 1's "-" as None)."""
    leaves: dict[tuple, object] = {}

    def top1(table: str, dataset: str, imbalance: str, row: str, value) -> None:
        if value is None:  # a cell the paper leaves empty is absent from the JSON
            return
        leaves[("top1", dataset, imbalance, row)] = value
        leaves[(f"table{table}", "top1", dataset, imbalance, row)] = value

    t1 = tables["1"]
    assert t1["header"][:3] == ["dataset", "classes", "IF"]
    for cells in t1["rows"]:
        row = dict(zip(t1["header"], cells))
        path = ("table1", "datasets", DATASET_KEYS[row["dataset"]], str(number(row["IF"])))
        for column, field in TABLE1_FIELDS.items():
            leaves[(*path, field)] = number(row[column])

    t2 = tables["2"]
    assert t2["header"][0] == "method"
    for cells in t2["rows"]:
        for column, cell in zip(t2["header"][1:], cells[1:]):
            c, imbalance = TABLE2_COLUMN.fullmatch(column).groups()
            top1("2", f"cifar{c}_lt", imbalance, method_key(cells[0]), number(cell))

    t3 = tables["3"]
    assert t3["header"][0] == "method"
    for cells in t3["rows"]:
        for column, cell in zip(t3["header"][1:], cells[1:]):
            top1("3", DATASET_KEYS[column], "", method_key(cells[0]), number(cell))

    t4 = tables["4"]
    assert t4["header"] == ["α(t)", "representation", "top-1"]
    dataset = heading_dataset(t4["heading"])
    imbalance = re.search(r"IF (\d+)", t4["heading"])[1]
    leaves[("table4", "dataset")] = dataset  # strings, checked with the numbers
    leaves[("table4", "imbalance")] = imbalance
    for name, _, cell in t4["rows"]:
        leaves[("top1", dataset, imbalance, curriculum_key(name))] = number(cell)
        leaves[("table4", "top1", curriculum_key(name))] = number(cell)

    for table in ("5", "6"):
        t = tables[table]
        assert t["header"][:2] == ["IF", "method"]
        dataset = heading_dataset(t["heading"])
        for i, column in enumerate(t["header"][2:]):
            leaves[("per_class", "classes", dataset, i)] = number(column)
        for imbalance, method, *cells in t["rows"]:
            for i, cell in enumerate(cells):
                value = number(cell)
                assert value is not None, (table, imbalance, method, i)
                path = ("per_class", "top1", dataset, imbalance, method_key(method), i)
                leaves[path] = value
    return leaves


def json_leaves(tree, path=()) -> dict[tuple, object]:
    """Every number and null of the JSON by path (list items by index); strings left out."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    elif tree is None or isinstance(tree, int | float):
        return {path: tree}
    else:
        return {}
    out: dict[tuple, object] = {}
    for key, value in items:
        out.update(json_leaves(value, (*path, key)))
    return out


@pytest.fixture(scope="module")
def tables(shared_dir: pathlib.Path) -> dict[str, dict]:
    return parse_tables((shared_dir / "paper" / "tables.md").read_text())


@pytest.fixture(scope="module")
def numbers() -> dict:
    return compare.paper_numbers()


def test_the_markdown_parses_into_tables_1_to_6(tables):
    assert sorted(tables) == ["1", "2", "3", "4", "5", "6"]
    sizes = {n: (len(t["header"]), len(t["rows"])) for n, t in tables.items()}
    assert sizes == {"1": (8, 7), "2": (5, 5), "3": (4, 5), "4": (3, 5), "5": (12, 4), "6": (10, 4)}


def test_every_json_number_is_a_table_cell_and_every_cell_is_in_the_json(tables, numbers):
    expected = expected_leaves(tables)
    got = json_leaves(numbers)
    strings = {p: v for p, v in expected.items() if isinstance(v, str)}
    assert {p: numbers[p[0]][p[1]] for p in strings} == strings
    expected = {p: v for p, v in expected.items() if not isinstance(v, str)}
    assert {p: v for p, v in got.items() if p not in expected} == {}  # nothing extra, no typo
    assert {p: v for p, v in expected.items() if p not in got} == {}  # nothing missing
    assert {p: (got[p], v) for p, v in expected.items() if got[p] != v} == {}
    assert all(type(got[p]) is type(v) for p, v in expected.items())  # 91.0 stays a float


def test_rows_and_labels_match_the_project(numbers):
    top1 = numbers["top1"]
    assert set(numbers["table4"]["top1"]) == set(plan.CURRICULA)  # the rows Table 4's stage fills
    rows = {r for d in top1.values() for f in d.values() for r in f}
    per_class = {r for d in numbers["per_class"]["top1"].values() for f in d.values() for r in f}
    assert rows | per_class <= set(compare.ROW_LABELS)
    assert set(numbers["methods"]["names"]) == rows - set(plan.CURRICULA)
    assert numbers["a_ablation"]["top1"] == {}  # the paper has no A table
    # the paper's FBL number is the one both FBL forms are set beside
    assert compare.PAPER_ROW["fbl_paper_form"] == "fbl"


def test_every_table_key_cites_its_table(numbers):
    assert "arXiv:2305.10772" in numbers["source"]
    cited = {"table1": "Table 1", "table2": "Table 2", "table3": "Table 3", "table4": "Table 4"}
    cited.update({"per_class": "Table 5", "a_ablation": "A"})
    for key, citation in cited.items():
        assert citation in numbers[key]["source"], key
    assert "Table 6" in numbers["per_class"]["source"]


def test_class_names_are_the_datasets_label_names(numbers):
    per_class = numbers["per_class"]
    assert per_class["class_names"]["cifar10_lt"] == CIFAR10_NAMES
    names = [CIFAR100_NAMES[c] for c in per_class["classes"]["cifar100_lt"]]
    assert per_class["class_names"]["cifar100_lt"] == names
    for dataset, classes in per_class["classes"].items():
        for rows in per_class["top1"][dataset].values():
            assert all(len(values) == len(classes) for values in rows.values())


def test_the_json_is_package_data():
    source = pathlib.Path(compare.__file__).with_name("paper_numbers.json")
    assert compare.PAPER_FILE == source
    resource = importlib.resources.files("fbl_jax.reproduce") / "paper_numbers.json"
    assert json.loads(resource.read_text()) == compare.paper_numbers()
    setup = pathlib.Path(__file__).resolve().parents[1] / "setup.py"
    calls = [n for n in ast.walk(ast.parse(setup.read_text())) if isinstance(n, ast.Call)]
    (package_data,) = [
        ast.literal_eval(k.value) for c in calls for k in c.keywords if k.arg == "package_data"
    ]
    assert "paper_numbers.json" in package_data["fbl_jax.reproduce"]
