"""Dataset loading: real files, malformed lines, specs, reasoning-gym generators."""

from __future__ import annotations

import json

import pytest

from leanthink.data import Dataset, Item, list_datasets, load_dataset
from leanthink.errors import ConfigError, DataError, LeanthinkError

from .conftest import DATA_DIR

needs_data = pytest.mark.skipif(
    not (DATA_DIR / "gsm8k_dev.jsonl").is_file(), reason=f"benchmark data not found in {DATA_DIR}"
)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    """Tests choose their data directory explicitly; run from a dir without ../shared/data."""
    monkeypatch.delenv("LEANTHINK_DATA_DIR", raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD_GSM = json.dumps({"question": "What is 1+1?", "answer": "1+1=2\n#### 2", "idx": 0})


# --------------------------------------------------------------------------- real files


@needs_data
@pytest.mark.parametrize("name,kind", [("gsm8k", "number"), ("math500", "math"), ("aime24", "number")])
def test_real_files_load_five(name, kind):
    ds = load_dataset(name, limit=5, data_dir=str(DATA_DIR))
    assert isinstance(ds, Dataset) and ds.name == name
    assert len(ds.items) == 5 and ds.skipped == []
    assert str(DATA_DIR) in ds.source
    assert len({it.id for it in ds.items}) == 5
    for it in ds.items:
        assert isinstance(it, Item)
        assert it.id.startswith(f"{name}/")
        assert it.question.strip() and it.answer.strip()
        assert it.kind == kind


@needs_data
def test_gsm8k_gold_answers():
    ds = load_dataset("gsm8k", data_dir=str(DATA_DIR))
    assert len(ds.items) == 1000
    first = ds.items[0]
    assert first.id == "gsm8k/0"
    assert first.question.startswith("Janet")
    assert first.answer == "18"
    assert "####" in first.meta["solution"]
    assert ds.items[2].answer == "70000"
    assert ds.items[146].answer == "2125"  # "#### 2,125": commas removed
    assert all("####" not in it.answer and "," not in it.answer for it in ds.items)


@needs_data
def test_math500_and_aime24_fields():
    m = load_dataset("math500", limit=2, data_dir=str(DATA_DIR))
    assert m.items[0].id == "math500/test/precalculus/807.json"
    assert m.items[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert m.items[0].question.startswith("Convert the point $(0,3)$")
    assert m.items[1].answer == "p - q"
    assert m.items[1].meta["level"] == 5 and m.items[1].meta["subject"] == "Intermediate Algebra"
    a = load_dataset("aime24", data_dir=str(DATA_DIR))
    assert len(a.items) == 30
    assert a.items[0].id == "aime24/60" and a.items[0].answer == "204"


@needs_data
def test_data_dir_from_env_and_cwd(monkeypatch, tmp_path):
    monkeypatch.setenv("LEANTHINK_DATA_DIR", str(DATA_DIR))
    assert load_dataset("aime24", limit=1).items[0].answer == "204"
    monkeypatch.delenv("LEANTHINK_DATA_DIR")
    # ../shared/data relative to the working directory
    shared = tmp_path / "proj" / "shared" / "data"
    shared.mkdir(parents=True)
    (shared / "aime24_test.jsonl").write_text((DATA_DIR / "aime24_test.jsonl").read_text(encoding="utf-8"))
    work = tmp_path / "proj" / "main"
    work.mkdir()
    monkeypatch.chdir(work)
    assert load_dataset("aime24", limit=1).source == str((shared / "aime24_test.jsonl").resolve())


@needs_data
def test_jsonl_spec_on_real_file():
    ds = load_dataset(f"jsonl:{DATA_DIR / 'gsm8k_dev.jsonl'}?kind=gsm8k", limit=3)
    assert [it.answer for it in ds.items[:1]] == ["18"]
    bare = load_dataset(str(DATA_DIR / "math500_test.jsonl"), limit=1)  # bare path, default fields
    assert bare.items[0].answer == r"\left( 3, \frac{\pi}{2} \right)" and bare.items[0].kind == "math"
    rel = load_dataset("jsonl:aime24_test.jsonl", limit=1, data_dir=str(DATA_DIR))  # relative to data dir
    assert rel.items[0].answer == "204" and rel.items[0].kind == "number"


# --------------------------------------------------------------------------- missing data


def test_missing_file_message(tmp_path):
    with pytest.raises(DataError) as ei:
        load_dataset("gsm8k", data_dir=str(tmp_path))
    msg = str(ei.value)
    assert str(tmp_path / "gsm8k_dev.jsonl") in msg
    assert "--data-dir" in msg and "LEANTHINK_DATA_DIR" in msg and "hf:" in msg


def test_no_data_dir_at_all():
    with pytest.raises(DataError) as ei:
        load_dataset("math500")
    msg = str(ei.value)
    assert "shared/data" in msg and "--data-dir" in msg and "LEANTHINK_DATA_DIR" in msg


def test_missing_jsonl_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"jsonl:{tmp_path / 'nope.jsonl'}")


# --------------------------------------------------------------------------- malformed lines


def _gsm_dir(tmp_path, bad_line):
    write(tmp_path / "gsm8k_dev.jsonl", [GOOD_GSM, "", bad_line, GOOD_GSM.replace('"idx": 0', '"idx": 3')])
    return str(tmp_path)


@pytest.mark.parametrize(
    "bad,reason",
    [
        ('{"question": "x", "answer": ', "invalid JSON"),
        ('["question", "answer"]', "JSON object"),
        (json.dumps({"answer": "#### 3", "idx": 1}), "question"),
        (json.dumps({"question": "Why?", "idx": 1}), "answer"),
        (json.dumps({"question": "   ", "answer": "#### 3", "idx": 1}), "empty question"),
        (json.dumps({"question": "How many?", "answer": "it is 3", "idx": 1}), "####"),
    ],
    ids=["invalid-json", "not-object", "no-question", "no-answer", "empty-question", "no-hash-line"],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, reason):
    data_dir = _gsm_dir(tmp_path, bad)
    with pytest.raises(DataError) as ei:
        load_dataset("gsm8k", data_dir=data_dir)
    msg = str(ei.value)
    assert "gsm8k_dev.jsonl:3:" in msg  # line 2 is blank and is counted but ignored
    assert reason in msg
    ds = load_dataset("gsm8k", data_dir=data_dir, skip_bad=True)
    assert [it.id for it in ds.items] == ["gsm8k/0", "gsm8k/3"]
    assert len(ds.skipped) == 1 and ds.skipped[0][0] == 3 and reason in ds.skipped[0][1]


def test_skip_bad_counts_and_limit_after_skipping(tmp_path):
    lines = [
        "not json",
        GOOD_GSM,
        "",
        "   ",
        json.dumps({"question": "q", "answer": "no hash"}),
        GOOD_GSM.replace('"idx": 0', '"idx": 5'),
        "42",
        GOOD_GSM.replace('"idx": 0', '"idx": 7'),
    ]
    write(tmp_path / "gsm8k_dev.jsonl", lines)
    ds = load_dataset("gsm8k", data_dir=str(tmp_path), skip_bad=True)
    assert len(ds.items) == 3
    assert [n for n, _ in ds.skipped] == [1, 5, 7]
    ds2 = load_dataset("gsm8k", data_dir=str(tmp_path), skip_bad=True, limit=2)
    assert [it.id for it in ds2.items] == ["gsm8k/0", "gsm8k/5"]
    with pytest.raises(DataError, match=r"gsm8k_dev\.jsonl:1:"):
        load_dataset("gsm8k", data_dir=str(tmp_path))


def test_all_bad_or_empty_file_is_an_error(tmp_path):
    write(tmp_path / "gsm8k_dev.jsonl", ["{bad", "", "[]"])
    with pytest.raises(DataError, match="no items"):
        load_dataset("gsm8k", data_dir=str(tmp_path), skip_bad=True)
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no items"):
        load_dataset(str(tmp_path / "empty.jsonl"))


def test_generic_jsonl_field_mapping(tmp_path):
    f = write(
        tmp_path / "mine.jsonl",
        [
            json.dumps({"uid": "a", "prompt": "2+2?", "gold": "4", "solution": "long"}),
            json.dumps({"uid": "b", "prompt": "x^2 at 3?", "gold": "9"}),
        ],
    )
    ds = load_dataset(f"jsonl:{f}?question=prompt&answer=gold&kind=number&id=uid")
    assert ds.name == "mine"
    assert [(it.id, it.question, it.answer, it.kind) for it in ds.items] == [
        ("mine/a", "2+2?", "4", "number"),
        ("mine/b", "x^2 at 3?", "9", "number"),
    ]
    # default field names: 'answer' wins over 'solution'; ids fall back to the position
    g = write(
        tmp_path / "defaults.jsonl",
        [
            json.dumps({"problem": "Simplify 2/4.", "solution": "It is $\\boxed{\\frac12}$.", "answer": "\\frac{1}{2}"}),
            json.dumps({"question": "Capital of France?", "answer": "Paris"}),
            json.dumps({"problem": "Compute 3*3.", "solution": "3*3 = \\boxed{9}"}),
        ],
    )
    items = load_dataset(str(g)).items
    assert [(it.id, it.answer, it.kind) for it in items] == [
        ("defaults/0", "\\frac{1}{2}", "math"),
        ("defaults/1", "Paris", "math"),
        ("defaults/2", "9", "number"),
    ]
    assert load_dataset(f"{g}?kind=text").items[1].kind == "text"
    with pytest.raises(DataError, match=r"defaults\.jsonl:1: .*answer"):
        load_dataset(f"{g}?answer=gold")


# --------------------------------------------------------------------------- spec / argument validation


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_must_be_positive(limit):
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("builtin", limit=limit)


def test_unknown_spec_lists_known_names():
    with pytest.raises(ConfigError) as ei:
        load_dataset("gsm9k")
    msg = str(ei.value)
    for name in ("gsm8k", "math500", "aime24", "builtin", "rg:", "jsonl:", "hf:"):
        assert name in msg
    assert isinstance(ei.value, LeanthinkError)


@pytest.mark.parametrize("spec", ["gsm8k?split=train", "jsonl:x.jsonl?kind=banana", "jsonl:x.jsonl?colour=red", "rg:", ""])
def test_bad_spec_options(spec):
    with pytest.raises(ConfigError):
        load_dataset(spec)


def test_hf_without_datasets_library_is_a_clear_error():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(LeanthinkError, match="datasets"):
            load_dataset("hf:openai/gsm8k?config=main&kind=gsm8k")
    else:
        pytest.skip("datasets is installed; loading would need the network")


def test_list_datasets():
    names = [name for name, _ in list_datasets()]
    for name in ("gsm8k", "math500", "aime24", "builtin", "rg:gsm_symbolic", "rg:syllogism", "rg:family_relationships"):
        assert name in names
    assert all(desc for _, desc in list_datasets())


# --------------------------------------------------------------------------- reasoning-gym generators


def test_rg_gsm_symbolic_deterministic_by_seed():
    a = load_dataset("rg:gsm_symbolic?n=8", seed=1)
    b = load_dataset("rg:gsm_symbolic?n=8", seed=1)
    c = load_dataset("rg:gsm_symbolic?n=8", seed=2)
    qa = [it.question for it in a.items]
    assert len(qa) == 8 and len(set(qa)) > 1
    assert qa == [it.question for it in b.items]
    assert [it.answer for it in a.items] == [it.answer for it in b.items]
    assert qa != [it.question for it in c.items]
    assert all(it.kind == "number" and it.answer.lstrip("-").replace(".", "").isdigit() for it in a.items)
    assert a.name == "rg:gsm_symbolic" and "seed=1" in a.source
    # limit takes a prefix of the same sequence
    assert [it.question for it in load_dataset("rg:gsm_symbolic?n=8", seed=1, limit=3).items] == qa[:3]


def test_builtin_alias():
    ds = load_dataset("builtin")
    assert ds.name == "builtin" and len(ds.items) == 20
    assert [it.question for it in ds.items[:5]] == [it.question for it in load_dataset("rg:gsm_symbolic?n=20").items[:5]]
    assert len(load_dataset("builtin", limit=4).items) == 4


@pytest.mark.parametrize("task", ["syllogism", "family_relationships"])
def test_rg_logic_tasks(task):
    ds = load_dataset(f"rg:{task}?n=12", seed=3)
    assert len(ds.items) == 12 and ds.skipped == []
    for it in ds.items:
        assert it.kind == "text"
        assert it.question and 0 < len(it.answer) < 30 and "\n" not in it.answer
        assert it.id.startswith(f"{task}/")
    if task == "syllogism":
        assert {it.answer for it in ds.items} <= {"Yes", "No"}


def test_rg_unknown_task_and_task_without_answers():
    with pytest.raises(ConfigError, match="gsm_symbolic"):
        load_dataset("rg:no_such_task")
    with pytest.raises(DataError, match="exact answer"):
        load_dataset("rg:propositional_logic?n=2")
