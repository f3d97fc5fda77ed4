"""The README's commands chain, and the pages stay true to the tree.

The README's data-extraction lines run on small archives laid out like the shared ones (in a
temporary HOME, from a checkout beside a `shared/` folder), and the folders they create must be
the ones its fbl-train and fbl-reproduce commands (and the docs') read. Every CIFAR data path in
README, docs, configs and fbl-reproduce uses the one layout; links resolve; README stays a
three-minute page; its test command is CI's; DESIGN.md's file layout names files that exist.
"""

from __future__ import annotations

import io
import os
import pathlib
import re
import subprocess
import tarfile

import numpy as np
import pytest
from PIL import Image

from fbl_jax.data import sources
from fbl_jax.reproduce.cli import _data_overrides

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "RESULTS.md", ROOT / "BENCHMARKS.md"]
SHARED_ARCHIVES = {  # archive under ../shared/data → {member folder: files}
    "cifar10-lossless/cifar10-lossless.tar.gz": {
        "train/airplane": ["a0.png", "a1.png"],
        "train/truck": ["t0.png"],
        "test/airplane": ["a2.png"],
        "test/truck": ["t1.png"],
    },
    "cifar100-lossless/cifar100-lossless-part1.tar.gz": {  # the test set and the LT pool
        "train/apple": ["p0.png"],
        "train/worm": ["w0.png"],
        "test/apple": ["p9.png"],
        "test/worm": ["w9.png"],
    },
    "cifar100-lossless/cifar100-lossless-part2.tar.gz": {  # the rest of train/ only
        "train/apple": ["p1.png"],
        "train/worm": ["w1.png"],
    },
}
RUN_FILES = {"config.json", "class_counts.json", "data.json", "timing.json", "sweep.json"}
PATH_FLAGS = re.compile(r"(--config\.data\.root=|--data-root[ =]|--root[ =]|-C |\bR=)(\S+)")


def bash_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.extend(part.strip() for part in line.split("&&"))
    return out


def flag(command: str, name: str) -> str | None:
    m = re.search(rf"{re.escape(name)}[ =](\S+)", command)
    return m.group(1) if m else None


def expand(value: str, home: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(value.replace("${HOME}", str(home)).replace("$HOME", str(home)))


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _write_archive(path: pathlib.Path, layout: dict[str, list[str]], image: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for folder, names in layout.items():
            for name in names:
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(image)
                tar.addfile(info, io.BytesIO(image))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> pathlib.Path:
    """HOME after README's data lines ran in a checkout beside a shared/ folder."""
    base = tmp_path_factory.mktemp("readme")
    checkout, home = base / "checkout", base / "home"
    checkout.mkdir()
    home.mkdir()
    image = _png()
    for rel, layout in SHARED_ARCHIVES.items():
        _write_archive(base / "shared" / "data" / rel, layout, image)
    lines = [c for b in bash_blocks(README) for c in commands(b) if c.startswith(("mkdir", "tar"))]
    assert any(c.startswith("tar -xzf ../shared/data/") for c in lines), "no extraction in README"
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    subprocess.run(["bash", "-euc", "\n".join(lines)], cwd=checkout, env=env, check=True)
    return home


def _image_tree(root: pathlib.Path) -> dict[str, list[str]]:
    return {
        split: sources.list_image_folder(str(root), split).class_names
        for split in ("train", "test")
    }


def test_readme_extraction_gives_the_one_layout(extracted):
    data = extracted / "data"
    assert _image_tree(data / "cifar10") == {s: ["airplane", "truck"] for s in ("train", "test")}
    assert _image_tree(data / "cifar100") == {s: ["apple", "worm"] for s in ("train", "test")}
    # both CIFAR-100 parts in one folder: the full training set
    assert sorted(p.name for p in (data / "cifar100" / "train" / "apple").iterdir()) == [
        "p0.png",
        "p1.png",
    ]


def test_training_commands_read_what_the_extraction_made(extracted, tmp_path):
    readme_cmds = [c for b in bash_blocks(README) for c in commands(b)]
    all_cmds = readme_cmds + [c for d in DOCS for b in bash_blocks(d) for c in commands(b)]
    trained = reproduced = 0
    for cmd in all_cmds:
        if not cmd.startswith(("fbl-train", "fbl-sweep", "fbl-reproduce")):
            continue
        config, root = flag(cmd, "--config"), flag(cmd, "--config.data.root")
        if config:
            assert (ROOT / config).is_file(), cmd
        if root:
            folder = expand(root, extracted)
            assert _image_tree(folder)["train"], cmd
            # the CIFAR-100 configs read cifar100/, the CIFAR-10 ones cifar10/
            assert ("cifar100" in config) == (folder.name == "cifar100"), cmd
            trained += cmd in readme_cmds
        if cmd.startswith("fbl-reproduce pack"):
            folder = expand(flag(cmd, "--root"), extracted)
            assert f"{folder.name}_lt" == flag(cmd, "--dataset") and _image_tree(folder), cmd
        data_root = flag(cmd, "--data-root")
        if cmd.startswith("fbl-reproduce") and data_root and "$HOME" in data_root:
            datasets = ["cifar10_lt", "cifar100_lt"]
            overrides = _data_overrides(
                "paper", datasets, str(expand(data_root, extracted)), tmp_path
            )
            for dataset in datasets:
                folder = extracted / "data" / dataset.removesuffix("_lt")
                assert overrides[dataset]["data.root"] == str(folder), cmd
            reproduced += cmd in readme_cmds
        elif cmd.startswith("fbl-reproduce") and data_root:  # a packed folder: packed just before
            packs = [flag(c, "--out") for c in all_cmds if c.startswith("fbl-reproduce pack")]
            assert {f"{data_root}/cifar10", f"{data_root}/cifar100"} <= set(packs), cmd
    assert trained and reproduced, "README lost its fbl-train or fbl-reproduce data commands"


def test_every_cifar_data_path_uses_the_one_layout():
    texts = [*PAGES[:-2], *(ROOT / "configs").glob("*.py"), *(ROOT / "fbl_jax").rglob("*.py")]
    found = 0
    for path in texts:
        for kind, value in PATH_FLAGS.findall(path.read_text(encoding="utf-8")):
            value = value.strip("`'\",;)")
            assert not value.startswith("/data"), f"{path}: {kind}{value}"
            if "cifar" in value.lower() and not value.endswith(".tar.gz"):
                found += 1
                assert re.fullmatch(r"(\$HOME/data|DATA|packed)/cifar(10|100)", value), (
                    f"{path}: {kind}{value} (use $HOME/data/cifar10 or $HOME/data/cifar100)"
                )
    assert found > 10


def _slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_links_resolve():
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            assert dest.exists(), f"{page.name}: {target}"
            if anchor:
                assert anchor in _anchors(dest), f"{page.name}: {target}"


def test_readme_is_short_and_reaches_every_doc():
    text = README.read_text(encoding="utf-8")
    assert len(text) <= 10_000
    for doc in DOCS:
        assert f"(docs/{doc.name}" in text, f"README does not link docs/{doc.name}"


def test_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = "python -m pytest -q -n 2 --dist loadfile tests"
    assert command in [line.strip() for line in ci.splitlines()]
    assert any(command in c for b in bash_blocks(README) for c in commands(b))


def test_design_layout_names_files_that_exist():
    text = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    block = re.search(r"## Layout\n\n```\n(.*?)```", text, re.S).group(1)
    named, folder, sub = set(), "", ""
    for line in block.splitlines():
        head = re.match(r"^(\s*)(\S+)", line)
        indent, first = (len(head.group(1)), head.group(2)) if head else (None, "")
        if indent == 0:
            folder, sub = (first if first.endswith("/") else ""), ""
        elif indent == 2:
            sub = first if first.endswith("/") else ""
        base = ROOT / folder / sub
        for name in re.findall(r"(?<![\w/.-])([\w/-]+\.(?:py|sh|sbatch|md|json|cc))\b", line):
            if name in RUN_FILES:
                continue
            path = (
                base / name if (base / name).exists() or not (ROOT / name).exists() else ROOT / name
            )
            assert path.exists(), f"docs/DESIGN.md layout: {name} (looked in {base})"
            named.add(path.resolve())
    modules = [
        p for p in (ROOT / "fbl_jax").rglob("*.py") if p.name not in ("__init__.py", "__main__.py")
    ]
    missing = [
        str(p.relative_to(ROOT))
        for p in modules
        if p.resolve() not in named and p.parent.name != "kinds"
    ]
    assert not missing, f"modules missing from docs/DESIGN.md's layout: {missing}"
