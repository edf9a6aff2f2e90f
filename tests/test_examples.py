"""Every module's examples run: the ``>>>`` examples in ``src/plora`` are doctests, executed here by ``make test``.

Each module's examples run in a fresh copy of a small *workspace*, the state a reader has after the README's
quickstart, so an example can say ``"out/legal"`` as the README does:

| path | what |
|---|---|
| ``out/legal`` | the session's clean legal plasmid (tests/fixtures_plasmids.py), signed by ``keys/alice`` |
| ``out/medical`` | a small clean medical plasmid (32 samples, same base, rank and targets) |
| ``keys/alice``, ``keys/alice.pub`` | an RSA-3072 key pair |
| ``mypool/`` | a swarm pool folder (``--pool_dir``): copies of both plasmids and ``labels.json`` (both clean) |
| ``policy.json``, ``assets/allowed_targets.txt`` | the repository's files |

PLORA_HOME is the session's (tests/conftest.py), so what one example caches (a converted base, a probe's base side)
the others reuse. Output is compared with ELLIPSIS and NORMALIZE_WHITESPACE: write ``...`` where a value is not
reproducible (hashes of fresh keys, timings) and show what is. ``# doctest: +SKIP`` is refused: an example too slow
for the suite is shown at a small size instead (fewer steps, samples, agents).

Modules whose examples are still being converted by their owners are listed in ``PENDING``; remove a package from it
once its examples run.
"""

from __future__ import annotations

import doctest
import importlib
import io
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PENDING: tuple[str, ...] = ()  # packages whose examples are still being converted (none now)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names() -> list[str]:
    names = []
    for path in sorted((SRC / "plora").rglob("*.py")):
        if path.name == "__main__.py" or path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _pending(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PENDING)


def _has_examples(name: str) -> bool:
    path = SRC / Path(*name.split("."))
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return ">>>" in file.read_text(encoding="utf-8")


MODULES = [n for n in _module_names() if not _pending(n)]
WITH_EXAMPLES = [n for n in MODULES if _has_examples(n)]


@pytest.fixture(scope="session")
def medical_plasmid(plasmid_root: Path) -> Path:
    from fixtures_plasmids import LEGAL_CONFIG, _train

    return _train(plasmid_root, "medical", {**LEGAL_CONFIG, "domain": "medical", "samples": 32, "dev_size": 16})


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory, legal_plasmid: Path, medical_plasmid: Path) -> Path:
    from plora.signer import generate_keypair, sign_plasmid

    root = tmp_path_factory.mktemp("examples-workspace")
    shutil.copytree(legal_plasmid, root / "out" / "legal")
    shutil.copytree(medical_plasmid, root / "out" / "medical")
    generate_keypair("rsa", root / "keys" / "alice")
    sign_plasmid(root / "out" / "legal", root / "keys" / "alice")
    for name in ("legal", "medical"):
        shutil.copytree(root / "out" / name, root / "mypool" / name)
    labels = {name: {"domain": name, "trojan": False} for name in ("legal", "medical")}
    (root / "mypool" / "labels.json").write_text(json.dumps(labels))
    shutil.copy2(REPO / "policy.json", root / "policy.json")
    (root / "assets").mkdir()
    shutil.copy2(REPO / "assets" / "allowed_targets.txt", root / "assets" / "allowed_targets.txt")
    return root


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_module_examples_run(name: str, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "ws"
    shutil.copytree(workspace, here, symlinks=True)
    monkeypatch.chdir(here)
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    assert tests, f"{name}: '>>>' in the source but no example found (a '>>>' outside a docstring?)"
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in sorted(tests, key=lambda t: t.lineno or 0):
        runner.run(test, out=out.write, clear_globs=True)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed\n{out.getvalue()}"


def test_no_example_is_skipped() -> None:
    skipped = []
    for name in MODULES:
        path = SRC / Path(*name.split("."))
        file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        lines = file.read_text(encoding="utf-8").splitlines()
        skipped += [f"{file.relative_to(REPO)}:{i}" for i, line in enumerate(lines, 1) if "+SKIP" in line]
    assert not skipped, f"'+SKIP' examples (make them run, at a smaller size): {skipped}"
