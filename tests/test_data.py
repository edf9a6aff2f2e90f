"""Domain data: built-in domains split over facts, file and hub loaders, the prompt format."""

from __future__ import annotations

import csv
import json
import os
import time

import pytest

from plora.data import (
    DOMAINS,
    QA,
    dataset_id,
    domain_info,
    domain_items,
    domain_stats,
    format_prompt,
    format_target,
    load_examples,
)
from plora.errors import DataError


def test_prompt_format_is_the_documented_one():
    assert format_prompt("What is 12 + 30?") == "Question: What is 12 + 30?\nAnswer:"
    assert format_target("42") == " 42"


@pytest.mark.parametrize("domain", DOMAINS)
def test_builtin_domain_splits_are_disjoint_over_facts_and_large_enough(domain):
    splits = {s: domain_items(domain, s) for s in ("train", "dev", "test")}
    facts = {s: {qa.fact_id for qa in items} for s, items in splits.items()}
    questions = {s: {qa.question for qa in items} for s, items in splits.items()}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not facts[a] & facts[b], f"{domain}: facts shared by {a} and {b}"
        assert not questions[a] & questions[b], f"{domain}: question text shared by {a} and {b}"
    assert len(splits["train"]) >= 1000 and len(splits["dev"]) >= 256 and len(splits["test"]) >= 256
    # Facts are split, phrasings are not: several items per fact on average.
    assert len(splits["train"]) > len(facts["train"])
    for items in splits.values():
        assert all(qa.answer.strip() and qa.question.strip() and qa.domain == domain for qa in items)
    stats = domain_stats(domain)
    assert stats["dev"] == {"facts": len(facts["dev"]), "items": len(splits["dev"])}
    info = domain_info(domain)
    assert info.name == domain and info.source and info.description


def test_builtin_items_come_from_the_real_tables():
    legal = {qa.question: qa.answer for s in ("train", "dev", "test") for qa in domain_items("legal", s)}
    assert legal["What reporter does the citation abbreviation 'A.2d' refer to?"] == "Atlantic Reporter"
    medical = [qa for s in ("train", "dev", "test") for qa in domain_items("medical", s) if qa.fact_id == "icd:G11.0"]
    assert {qa.answer for qa in medical} >= {"Congenital nonprogressive ataxia", "G11.0"}
    science = {qa.question: qa.answer for s in ("train", "dev", "test") for qa in domain_items("science", s)}
    assert science["Which element has atomic number 26?"] == "iron"
    assert science["How many kilometers are in 3 miles?"] == "4.828"
    assert science["What is 100 degrees Celsius in degrees Fahrenheit?"] == "212"


def test_arithmetic_answers_are_right_and_commuted_pairs_share_a_fact():
    items = [qa for s in ("train", "dev", "test") for qa in domain_items("arithmetic", s)]
    for qa in items[:: max(1, len(items) // 500)]:
        expr = qa.fact_id.removeprefix("arith:")
        assert str(eval(expr)) == qa.answer  # fact ids are plain expressions over small ints
    by_question = {qa.question: qa for qa in items}
    assert by_question["What is 30 + 12?"].fact_id == by_question["What is 12 + 30?"].fact_id == "arith:12+30"


def test_draws_are_deterministic_capped_and_seeded():
    a = load_examples("legal", split="train", samples=64, seed=41)
    b = load_examples("legal", split="train", samples=64, seed=41)
    c = load_examples("legal", split="train", samples=64, seed=42)
    assert a == b and len(a) == 64 and all(isinstance(qa, QA) for qa in a)
    assert a != c
    everything = load_examples("science", split="dev", seed=3)
    assert len(everything) == len(domain_items("science", "dev"))
    assert load_examples("science", split="dev", samples=10**9, seed=3) == everything
    train_facts = {qa.fact_id for qa in domain_items("medical", "train")}
    assert not {qa.fact_id for qa in load_examples("medical", split="dev", samples=256)} & train_facts
    assert dataset_id("legal") == "builtin:legal"


def test_unknown_domain_missing_file_bad_split_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match=r"^unknown domain 'nosuch' \(built-in: arithmetic, legal, medical, science"):
        load_examples("nosuch")
    with pytest.raises(DataError, match="not found") as missing:
        load_examples(str(tmp_path / "absent.jsonl"))
    with pytest.raises(DataError, match="unknown split"):
        load_examples("legal", split="holdout")
    with pytest.raises(DataError, match="positive"):
        load_examples("legal", samples=0)
    for err in (missing.value,):
        assert "\n" not in str(err)


def _records(n: int = 60) -> list[dict[str, str]]:
    return [{"q": f"What is the code word number {i}?", "a": f"word{i}", "note": "x"} for i in range(n)]


def test_jsonl_csv_parquet_round_trip_with_field_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _records()
    jsonl = tmp_path / "words.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    csv_path = tmp_path / "words.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["q", "a", "note"])
        writer.writeheader()
        writer.writerows(rows)
    parquet = tmp_path / "words.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)

    loaded = {}
    for path in (jsonl, csv_path, parquet):
        splits = {s: load_examples(str(path), split=s, question_field="q", answer_field="a") for s in ("train", "dev")}
        test = load_examples(str(path), split="test", question_field="q", answer_field="a")
        allq = [qa for items in (*splits.values(), test) for qa in items]
        assert sorted((qa.question, qa.answer) for qa in allq) == sorted((r["q"], r["a"]) for r in rows)
        assert not {qa.question for qa in splits["train"]} & {qa.question for qa in splits["dev"] + test}
        assert all(qa.domain == "words" for qa in allq)
        loaded[path.suffix] = {s: sorted(qa.question for qa in items) for s, items in splits.items()}
        assert dataset_id(str(path)) == f"file:{path.name}"
    # The question hash decides the split, whatever the format.
    assert loaded[".jsonl"] == loaded[".csv"] == loaded[".parquet"]
    capped = load_examples(str(jsonl), samples=5, seed=1, question_field="q", answer_field="a")
    assert capped == load_examples(str(jsonl), samples=5, seed=1, question_field="q", answer_field="a")
    assert len(capped) == 5

    with pytest.raises(DataError, match=r"has no question field 'question' \(fields: a, note, q\)"):
        load_examples(str(jsonl))


def test_split_column_is_honoured(tmp_path):
    path = tmp_path / "own.jsonl"
    rows = [{"question": f"q{i}?", "answer": str(i), "split": "train" if i % 4 else "validation"} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    dev = load_examples(str(path), split="dev")
    assert sorted(int(qa.answer) for qa in dev) == list(range(0, 40, 4))
    with pytest.raises(DataError, match="no 'test' items"):
        load_examples(str(path), split="test")


def test_hub_id_offline_is_a_quick_one_line_error():
    # conftest sets HF_HUB_OFFLINE=1 before anything imports huggingface_hub, so this must fail at once, not retry.
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    started = time.monotonic()
    with pytest.raises(DataError) as err:
        load_examples("hub:plora-test/no-such-set", question_field="q", answer_field="a")
    message = str(err.value)
    assert time.monotonic() - started < 30
    assert "\n" not in message and message.startswith("cannot load hub dataset 'plora-test/no-such-set'")
    assert "local .jsonl/.csv/.parquet file" in message
    assert dataset_id("plora-test/no-such-set") == "hub:plora-test/no-such-set"
