"""BIO reader: the five CrossNER domains, both column orders, malformed and swapped files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from samalign.datasets import read_bio, read_file
from samalign.errors import InputError
from samalign.evaluation.datasets import read_crossner

# crossner/SOURCE.md: sentences / tokens / entity mentions per split
CROSSNER_SOURCE_COUNTS = {
    ("ai", "train"): (100, 3782, 532),
    ("ai", "dev"): (350, 10919, 1549),
    ("ai", "test"): (431, 12991, 1809),
    ("literature", "train"): (100, 3782, 541),
    ("literature", "dev"): (400, 14503, 2130),
    ("literature", "test"): (416, 16157, 2266),
    ("music", "train"): (100, 3909, 648),
    ("music", "dev"): (380, 15591, 2679),
    ("music", "test"): (465, 19605, 3336),
    ("politics", "train"): (200, 8384, 1304),
    ("politics", "dev"): (541, 24624, 3482),
    ("politics", "test"): (651, 27585, 4209),
    ("science", "train"): (200, 7100, 1075),
    ("science", "dev"): (450, 16139, 2538),
    ("science", "test"): (543, 19487, 3089),
}
# SOURCE.md: number of entity types per domain
CROSSNER_TYPES = {"ai": 14, "literature": 12, "music": 13, "politics": 9, "science": 17}


@pytest.mark.parametrize(("domain", "split"), sorted(CROSSNER_SOURCE_COUNTS))
def test_crossner_files_match_their_source_counts(
    shared_data: Path, domain: str, split: str
) -> None:
    path = shared_data / "crossner" / domain / f"{split}.txt"
    data = read_file(path)
    assert data.format == "bio"
    sentences, tokens, mentions = CROSSNER_SOURCE_COUNTS[(domain, split)]
    assert len(data.records) == sentences
    assert sum(len(r.tokens) for r in data.records) == tokens
    assert sum(len(r.entities) for r in data.records) == mentions
    if split == "test":
        assert data.label_set is not None and len(data.label_set) == CROSSNER_TYPES[domain]
    for n, record in enumerate(data.records):
        assert record.id == f"{domain}-{split}-{n}"
        assert record.text == " ".join(record.tokens)
        assert len(record.tags) == len(record.tokens)
        for e in record.entities:
            assert e.start is not None and e.end is not None
            assert e.token_start is not None and e.token_end is not None
            assert record.text[e.start : e.end] == e.text
            assert e.text == " ".join(record.tokens[e.token_start : e.token_end])
            assert record.tags[e.token_start] == f"B-{e.type}"


Swap = Callable[..., Path]


@pytest.mark.parametrize("sep", ["\t", " "])
def test_tag_first_files_read_like_the_original(
    shared_data: Path, tmp_path: Path, swap_bio_columns: Swap, sep: str
) -> None:
    source = shared_data / "crossner" / "ai" / "dev.txt"
    swapped = swap_bio_columns(source, tmp_path / "dev.txt", sep=sep)
    original = read_bio(source)
    detected = read_bio(swapped)
    assert len(detected.records) == len(original.records) == 350
    for a, b in zip(detected.records, original.records, strict=True):
        assert (a.tokens, a.tags, a.entities, a.origin.line) == (
            b.tokens,
            b.tags,
            b.entities,
            b.origin.line,
        )
    assert detected.label_set == original.label_set
    explicit = read_bio(swapped, columns="tag-token")
    assert [r.entities for r in explicit.records] == [r.entities for r in original.records]


def test_space_separated_token_tag_columns(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("Geoffrey B-researcher\nHinton  I-researcher\nspoke O\n", encoding="utf-8")
    [record] = read_bio(path).records
    assert [(e.text, e.type) for e in record.entities] == [("Geoffrey Hinton", "researcher")]


def test_explicit_columns_the_file_contradicts_say_they_look_swapped(
    shared_data: Path, tmp_path: Path, swap_bio_columns: Swap
) -> None:
    source = shared_data / "crossner" / "ai" / "train.txt"
    swapped = swap_bio_columns(source, tmp_path / "train.txt")
    with pytest.raises(InputError, match=r"the columns look swapped.*columns='tag-token'") as err:
        read_bio(swapped, columns="token-tag")
    assert str(swapped) in str(err.value) and "tag<TAB>token" in str(err.value)
    with pytest.raises(InputError, match=r"the columns look swapped.*columns='token-tag'"):
        read_bio(source, columns="tag-token")
    # neither column holds tags: not "swapped", the first bad tag is named
    no_tags = _write(tmp_path / "x.txt", "EU\tB-\n")
    with pytest.raises(InputError, match=r"x\.txt:1: tag 'EU' is not"):
        read_bio(no_tags, columns="tag-token")
    with pytest.raises(InputError, match="BIO columns must be one of"):
        read_bio(source, columns="tags-first")  # type: ignore[arg-type]


def test_mit_restaurant_style_file(tmp_path: Path) -> None:
    # the MIT Restaurant layout: tag first, labels with underscores
    path = tmp_path / "restauranttest.bio"
    path.write_text(
        "O\ta\nB-Rating\tfour\nI-Rating\tstar\nB-Restaurant_Name\tjoes\n\n"
        "B-Amenity\tdelivery\nO\tplease\n",
        encoding="utf-8",
    )
    data = read_file(path)
    assert data.format == "bio"
    assert [[(e.text, e.type) for e in r.entities] for r in data.records] == [
        [("four star", "Rating"), ("joes", "Restaurant_Name")],
        [("delivery", "Amenity")],
    ]
    assert data.label_set == ("Amenity", "Rating", "Restaurant_Name")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("EU\tB-org\nrejects\n", r"bad\.txt:2: expected 'token<TAB>tag' \(a token without a tag\)"),
        ("EU\tB-org\tX\n", r"bad\.txt:1: expected 'token<TAB>tag'"),
        ("EU\tB-org\n\nrejects\tX-org\n", r"bad\.txt:3: tag 'X-org' is not"),
        ("EU\tB-\n", r"bad\.txt:1: tag 'B-' is not"),
        ("EU\t\n", r"bad\.txt:1: expected 'token<TAB>tag' \(a token without a tag\)"),
    ],
)
def test_malformed_bio_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_crossner(_write(tmp_path / "bad.txt", content))


def test_invalid_iob2_is_repaired_with_a_warning_or_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "x.txt", "The\tO\nEuropean\tI-org\nUnion\tI-org\n.\tO\n")
    with caplog.at_level(logging.WARNING, logger="samalign.datasets.bio"):
        [sentence] = read_crossner(path)
    assert [(e.text, e.label) for e in sentence.entities] == [("European Union", "org")]
    assert "x.txt:2" in caplog.text and "invalid IOB2" in caplog.text
    with pytest.raises(InputError, match=r"x\.txt:2: tag 'I-org' continues no entity"):
        read_crossner(path, strict=True)


def test_bio_reader_handles_crlf_and_trailing_sentence(tmp_path: Path) -> None:
    path = _write(tmp_path / "dev.txt", "A\tB-x\r\nb\tI-x\r\n\r\nC\tO\n")
    sentences = read_crossner(path, prefix="p")
    assert [s.id for s in sentences] == ["p-0", "p-1"]
    assert sentences[0].entities[0].text == "A b"
    assert sentences[0].origin.endswith("dev.txt:1")


def test_a_byte_order_mark_is_not_part_of_the_first_token(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffParis\tB-location\nis\tO\n".encode())
    [record] = read_file(path).records
    assert record.tokens == ("Paris", "is")
    assert record.entities[0].text == "Paris"


def test_not_utf8_and_missing_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("Zürich\tB-location\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.txt: not UTF-8 text \(byte 1\)"):
        read_bio(path)
    with pytest.raises(InputError, match="cannot read"):
        read_bio(tmp_path / "missing.txt")
