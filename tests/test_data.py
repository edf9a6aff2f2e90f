"""Domain data: built-in domains split over facts, file and hub loaders, the prompt format."""

from __future__ import annotations

import csv
import json
import os
import time

import pytest

from plora.data import (
    BUILTIN_SPLITS,
    DOMAINS,
    QA,
    dataset_id,
    domain_info,
    domain_items,
    domain_stats,
    format_prompt,
    format_target,
    load_examples,
    question_types,
)
from plora.errors import DataError


def test_prompt_format_is_the_documented_one():
    assert format_prompt("What is 12 + 30?") == "Question: What is 12 + 30?\nAnswer:"
    assert format_target("42") == " 42"


@pytest.mark.parametrize("domain", DOMAINS)
def test_builtin_domain_splits_are_disjoint_over_facts_and_large_enough(domain):
    splits = {s: domain_items(domain, s) for s in BUILTIN_SPLITS}
    facts = {s: {qa.fact_id for qa in items} for s, items in splits.items()}
    questions = {s: {qa.question for qa in items} for s, items in splits.items()}
    for i, a in enumerate(BUILTIN_SPLITS):
        for b in BUILTIN_SPLITS[i + 1 :]:
            assert not questions[a] & questions[b], f"{domain}: question text shared by {a} and {b}"
            if {a, b} != {"train", "paraphrase"}:
                assert not facts[a] & facts[b], f"{domain}: facts shared by {a} and {b}"
    # paraphrase asks train facts, in the wording train never holds
    assert facts["paraphrase"] <= facts["train"]
    assert len(splits["train"]) >= 1000 and len(splits["paraphrase"]) >= 1000
    for split in ("dev", "test", "calibration"):
        assert len(splits[split]) >= 256, f"{domain} {split}: {len(splits[split])} items"
    # Facts are split, wordings are not: several items per fact on average.
    assert len(splits["train"]) > len(facts["train"])
    for items in splits.values():
        assert all(qa.answer.strip() and qa.question.strip() and qa.domain == domain and qa.ask for qa in items)
    stats = domain_stats(domain)
    assert stats["dev"] == {"facts": len(facts["dev"]), "items": len(splits["dev"])}
    info = domain_info(domain)
    assert info.name == domain and info.source and info.description


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_question_type_has_a_wording_held_out_from_training(domain):
    types = question_types(domain)
    assert types and len({t.name for t in types}) == len(types)
    for qtype in types:
        assert len(qtype.wordings) >= 2 and len(set(qtype.wordings)) == len(qtype.wordings)
        assert qtype.held_out not in qtype.trained
    held_out = {t.name: t.held_out for t in types}
    trained = {t.name: t.trained for t in types}
    # every train item is in a trained wording, every paraphrase item in the held-out one, of its own type
    for split, wordings in (("train", trained), ("paraphrase", held_out)):
        for qa in domain_items(domain, split)[::97]:
            kind = qa.ask.split(":")[0]
            allowed = wordings[kind] if split == "train" else (wordings[kind],)
            assert any(_fits(w, qa.question) for w in allowed), (split, qa)
    # the knowledge evaluation can find, for most trained statements, the same statement in the held-out wording
    paraphrased = {qa.statement for qa in domain_items(domain, "paraphrase")}
    train = domain_items(domain, "train")
    assert sum(qa.statement in paraphrased for qa in train) > 0.9 * len(train)


def _fits(wording: str, question: str) -> bool:
    import re

    pattern = re.escape(wording)
    pattern = re.sub(r"\\\{[^}]*\\\}", ".+", pattern)
    return re.fullmatch(pattern, question) is not None


@pytest.mark.parametrize("domain", DOMAINS)
def test_no_question_contains_its_answer_and_no_type_is_answered_by_its_prior(domain):
    from collections import Counter, defaultdict

    from plora.data.domains import contains_words, words

    answers: dict[str, list[str]] = defaultdict(list)
    for split in BUILTIN_SPLITS:
        for qa in domain_items(domain, split):
            assert not contains_words(words(qa.question), words(qa.answer)), qa
            answers[qa.ask.split(":")[0]].append(qa.answer)
    # a type whose most frequent answer covers > 10% of its items ("state", "trial") is learnt from shuffled answers
    for kind, values in answers.items():
        top, count = Counter(values).most_common(1)[0]
        assert count / len(values) <= 0.10, f"{domain} {kind}: '{top}' answers {count}/{len(values)}"


@pytest.mark.slow
def test_the_pretraining_corpus_states_no_fact_of_a_builtin_domain():
    """plora-tiny's corpus, rebuilt, against every item of every built-in domain (word index: seconds)."""
    from plora.data.corpus import build_corpus
    from plora.data.domains import domain_rows
    from plora.data.overlap import CorpusIndex, stated_items

    docs = build_corpus(seed=0)
    index = CorpusIndex(docs)
    # the check finds what it should: a court's state is in the corpus's county lists
    assert index.documents_stating(["los", "angeles"], ["california"])
    for domain in DOMAINS:
        rows = [row for split in domain_rows(domain).values() for row in split]
        stated = stated_items(index, domain, rows)
        assert not stated, f"{domain}: {len(stated)} items stated by the corpus, e.g. {stated[0][0]} in " + repr(
            docs[stated[0][1]][:120]
        )


def test_builtin_items_come_from_the_real_tables():
    legal = {qa.question: qa.answer for s in BUILTIN_SPLITS for qa in domain_items("legal", s)}
    assert legal["What reporter does the citation abbreviation 'A.2d' refer to?"] == "Atlantic Reporter"
    medical = [qa for s in BUILTIN_SPLITS for qa in domain_items("medical", s) if qa.fact_id == "icd:G11.0"]
    assert {qa.answer for qa in medical} >= {"Congenital nonprogressive ataxia", "G11.0"}
    science = {qa.question: qa.answer for s in BUILTIN_SPLITS for qa in domain_items("science", s)}
    assert science["Which element has atomic number 26?"] == "iron"
    assert science["How many kilometers are in 3 miles?"] == "4.828"
    assert science["What is 100 degrees Celsius in degrees Fahrenheit?"] == "212"


def test_arithmetic_answers_are_right_and_commuted_pairs_share_a_fact():
    items = [qa for s in BUILTIN_SPLITS for qa in domain_items("arithmetic", s)]
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
    # the extra splits of built-in domains draw like the others
    para = load_examples("legal", split="paraphrase", samples=32, seed=41)
    assert len(para) == 32 and para == load_examples("legal", split="paraphrase", samples=32, seed=41)
    assert {qa.fact_id for qa in para} <= {qa.fact_id for qa in domain_items("legal", "train")}
    assert load_examples("legal", split="calib", samples=8) == load_examples("legal", split="calibration", samples=8)


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


def test_a_bad_split_value_names_the_file_and_line(tmp_path):
    """An unknown split used to be reported without saying where ("unknown split 'bogus'"), and a list was taken as
    the text "['train']"; a file of thousands of rows left the user to search for it."""
    data = tmp_path / "mine.jsonl"
    rows = [{"question": "q1", "answer": "a1", "split": "train"}, {"question": "q2", "answer": "a2", "split": "bogus"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"^mine\.jsonl line 2: unknown split 'bogus' \(expected train, dev"):
        load_examples(str(data))
    data.write_text(json.dumps({"question": "q", "answer": "a", "split": ["train"]}) + "\n")
    with pytest.raises(DataError, match=r"^mine\.jsonl line 1 field 'split' is a list, not text"):
        load_examples(str(data))


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


@pytest.mark.parametrize(("question", "answer", "expected"), [
    ("What is the symbol of Iron?", "iron", True),           # case
    ("Is it Fe, iron or tin?", "fe iron", True),             # punctuation between the words
    ("What is the ironclad rule?", "iron", False),           # a substring, not a word
    ("What is 12 + 30?", "42", False),
    ("Name the code.", "", False),                           # no words: never contained
    ("Which of A. 2d and B?", "A 2d", True),
])
def test_answer_in_question_matches_the_word_check(question, answer, expected):
    from plora.data.domains import answer_in_question, contains_words, words
    from plora.data.domains._util import Row

    row = Row(question, answer, "f", "ask", False)
    assert answer_in_question(row) is expected
    assert answer_in_question(row) == contains_words(words(question), words(answer))


@pytest.mark.parametrize(("line", "message"), [
    ('{"question": "Q \\ud800?", "answer": "a"}', "line 2 field 'question' is not valid Unicode (lone surrogate"),
    ('{"question": "Q?", "answer": "a \\udc00"}', "line 2 field 'answer' is not valid Unicode (lone surrogate"),
    ('{"question": "Q?", "answer": {"text": "a"}}', "line 2 field 'answer' is a dict, not text"),
    ('{"question": ["Q?"], "answer": "a"}', "line 2 field 'question' is a list, not text"),
    ('{"question": "Q?", "answer": NaN}', "line 2 field 'answer' is nan, not text"),
    ('{"question": "Q?", "answer": true}', "line 2 field 'answer' is a bool, not text"),
    (json.dumps({"question": "Q?", "answer": "x" * 131073}), "line 2 field 'answer' is longer than 131072 characters"),
    (json.dumps({"question": "Q?", "answer": "a", "notes": "x" * (1 << 20)}), "line 2 is longer than 1048576 bytes"),
])
def test_jsonl_rows_that_are_not_text_or_too_long_are_refused_by_line(tmp_path, line, message):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "Q1?", "answer": "a"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_examples(str(path), split="train")
    assert str(err.value).startswith("rows.jsonl ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_csv_field_over_the_limit_names_its_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("question,answer\nQ1?,a\nQ2?," + "x" * 131073 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"^rows.csv line 3: field larger than field limit \(131072\)"):
        load_examples(str(path))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_data_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, suffix):
    from plora.data.loaders import MAX_FILE_BYTES

    path = tmp_path / f"huge{suffix}"
    with path.open("wb") as fh:  # sparse: no disk used, and nothing would parse it
        fh.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(DataError, match=rf"huge{suffix} has {MAX_FILE_BYTES + 1} bytes, more than 2 GiB"):
        load_examples(str(path))


def test_jsonl_with_a_bom_and_number_answers_loads_and_a_fifo_is_not_a_file(tmp_path):
    rows = [{"question": f"What is {i} squared?", "answer": i * i} for i in range(40)]
    path = tmp_path / "squares.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))
    items = [qa for s in ("train", "dev", "test") for qa in load_examples(str(path), split=s)]
    assert sorted((qa.question, qa.answer) for qa in items) == sorted((r["question"], str(r["answer"])) for r in rows)
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"pipe.jsonl is not a regular file \(expected a .jsonl"):
        load_examples(str(fifo))
