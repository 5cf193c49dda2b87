"""The line assembler: whole lines out of arbitrary reads, long lines cut, lines decorated."""

from __future__ import annotations

import datetime
import random
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circus_sd.output.lines import SPLIT_MARKER, Buffer, LineAssembler, LineStyle


def joined(parts: list[Buffer]) -> bytes:
    return b"".join(bytes(part) for part in parts)


def feed_all(assembler: LineAssembler, reads: list[bytes], now: float = 0.0) -> bytes:
    out = b"".join(joined(assembler.feed(data, now)) for data in reads)
    return out + joined(assembler.flush(now))


def test_whole_lines_pass_through_without_a_copy() -> None:
    assembler = LineAssembler(100)
    data = b"one\ntwo\n"
    parts = assembler.feed(data)
    assert parts == [data]
    assert parts[0] is data  # the common case costs no copy


def test_a_partial_line_waits_for_its_end() -> None:
    assembler = LineAssembler(100)
    assert assembler.feed(b"hel") == []
    assert assembler.pending == 3
    assert joined(assembler.feed(b"lo\nwor")) == b"hello\n"
    assert joined(assembler.feed(b"ld\n")) == b"world\n"
    assert assembler.pending == 0


def test_lines_split_across_many_reads_come_out_whole_and_in_order() -> None:
    text = b"".join(b"line %d %s\n" % (i, b"x" * (i % 37)) for i in range(500))
    rng = random.Random(7)
    reads, start = [], 0
    while start < len(text):
        size = rng.randint(1, 300)
        reads.append(text[start : start + size])
        start += size
    assembler = LineAssembler(1000)
    out = b""
    for data in reads:
        parts = assembler.feed(data)
        block = joined(parts)
        assert not block or block.endswith(b"\n")  # never a torn line
        out += block
    assert out == text


def test_partial_last_line_is_flushed_with_a_plain_newline() -> None:
    assembler = LineAssembler(100)
    assembler.feed(b"done\nno newline at the end")
    assert joined(assembler.flush()) == b"no newline at the end\n"
    assert assembler.flush() == []


def test_flush_with_nothing_pending_gives_nothing() -> None:
    assembler = LineAssembler(100)
    assembler.feed(b"a\n")
    assert assembler.flush() == []


def test_a_line_longer_than_max_line_is_cut_with_a_marker() -> None:
    assembler = LineAssembler(10)
    out = feed_all(assembler, [b"0123456789abcdefghijKLM\nshort\n"])
    assert out == (
        b"0123456789" + SPLIT_MARKER + b"\n"
        b"abcdefghij" + SPLIT_MARKER + b"\n"
        b"KLM\nshort\n"
    )
    assert assembler.split_lines == 1


def test_a_line_of_exactly_max_line_is_not_cut() -> None:
    assert feed_all(LineAssembler(5), [b"12345\n"]) == b"12345\n"


def test_a_long_line_without_end_is_given_out_in_pieces_as_it_comes() -> None:
    assembler = LineAssembler(4)
    assert joined(assembler.feed(b"abcdefghij")) == (
        b"abcd" + SPLIT_MARKER + b"\nefgh" + SPLIT_MARKER + b"\n"
    )
    assert assembler.pending == 2  # memory stays bounded by max_line
    assert joined(assembler.feed(b"k\n")) == b"ijk\n"


def test_a_long_line_in_the_middle_of_short_ones_is_found() -> None:
    lines = [b"short %d" % i for i in range(100)]
    lines[57] = b"L" * 300
    text = b"\n".join(lines) + b"\n"
    out = feed_all(LineAssembler(128), [text])
    assert out.count(SPLIT_MARKER) == 2
    assert out.replace(SPLIT_MARKER + b"\n", b"") == text


def test_a_long_line_completed_by_the_pending_start_is_found() -> None:
    assembler = LineAssembler(10)
    assembler.feed(b"123456")
    assert joined(assembler.feed(b"789012\n")) == b"1234567890" + SPLIT_MARKER + b"\n12\n"


def test_cuts_do_not_split_a_utf8_character() -> None:
    line = "aaa\u00e9\u00e9\u00e9".encode()  # é is 2 bytes
    out = feed_all(LineAssembler(4), [line + b"\n"])
    pieces = out.replace(SPLIT_MARKER, b"").splitlines()
    assert [piece.decode() for piece in pieces] == ["aaa", "\u00e9\u00e9", "\u00e9"]


def test_max_line_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineAssembler(0)


@given(
    st.lists(
        st.binary(max_size=60)
        .map(lambda b: b.replace(b"\n", b""))
        .filter(lambda b: SPLIT_MARKER not in b),  # else the pieces cannot be told apart
        max_size=40,
    ),
    st.integers(min_value=1, max_value=50),
    st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=20),
)
def test_any_reads_give_the_lines_back_cut_only_where_too_long(
    lines: list[bytes], max_line: int, sizes: list[int]
) -> None:
    text = b"".join(line + b"\n" for line in lines)
    reads, start, index = [], 0, 0
    while start < len(text):
        size = sizes[index % len(sizes)]
        reads.append(text[start : start + size])
        start, index = start + size, index + 1
    out = feed_all(LineAssembler(max_line), reads)
    assert out.endswith(b"\n") or not out
    for piece in out.split(b"\n")[:-1]:
        assert len(piece.removesuffix(SPLIT_MARKER)) <= max_line
    assert out.replace(SPLIT_MARKER + b"\n", b"") == text


# -- decoration ----------------------------------------------------------------------------------


def test_a_head_is_put_before_every_line() -> None:
    assembler = LineAssembler(100, LineStyle(head=b"web[2] "))
    assert joined(assembler.feed(b"a\nb\nc")) == b"web[2] a\nweb[2] b\n"
    assert joined(assembler.flush()) == b"web[2] c\n"


def test_time_format_prefixes_each_line_not_each_read() -> None:
    now = datetime.datetime(2024, 5, 17, 13, 45, 10).timestamp()
    assembler = LineAssembler(100, LineStyle(head=b"[42] | ", time_format="%H:%M:%S"))
    out = joined(assembler.feed(b"first\nsecond\nthi", now))
    out += joined(assembler.feed(b"rd\n", now + 1))
    assert out == (
        b"13:45:10 [42] | first\n13:45:10 [42] | second\n13:45:11 [42] | third\n"
    )


def test_subsecond_time_formats_are_not_cached() -> None:
    now = datetime.datetime(2024, 5, 17, 13, 45, 10, 250000).timestamp()
    assembler = LineAssembler(100, LineStyle(time_format="%S.%f"))
    assert joined(assembler.feed(b"a\n", now)).startswith(b"10.250000 ")
    assert joined(assembler.feed(b"b\n", now + 0.5)).startswith(b"10.750000 ")


def test_lead_and_tail_wrap_each_line() -> None:
    style = LineStyle(lead=b"<c>", head=b"w[1] | ", tail=b"</c>", time_format="%Y")
    now = datetime.datetime(2024, 1, 2).timestamp()
    out = joined(LineAssembler(100, style).feed(b"x\ny\n", now))
    assert out == b"<c>2024 w[1] | x</c>\n<c>2024 w[1] | y</c>\n"


def test_cut_pieces_are_decorated_like_lines() -> None:
    assembler = LineAssembler(3, LineStyle(head=b"> "))
    assert joined(assembler.feed(b"abcdef\n")) == (
        b"> abc" + SPLIT_MARKER + b"\n> def\n"
    )


# -- cost of long lines --------------------------------------------------------------------------


def _bytes_allocated_by_feeds(assembler: LineAssembler, reads: list[bytes]) -> tuple[int, bytes]:
    """Memory the assembler allocates while taking `reads` (the sum, over feeds, of each
    feed's peak above what was allocated before it: a deterministic measure of copying), and
    what it gave out."""
    out: list[list[Buffer]] = []
    total = 0
    tracemalloc.start()
    try:
        for data in reads:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            parts = assembler.feed_plain(data)
            _, peak = tracemalloc.get_traced_memory()
            total += peak - before
            out.append(parts)
    finally:
        tracemalloc.stop()
    return total, b"".join(joined(parts) for parts in out)


@pytest.mark.parametrize("max_line", [1 << 20, 100_000])
def test_a_long_line_in_small_reads_is_assembled_in_linear_memory_traffic(max_line: int) -> None:
    """512 KiB of one line arriving 256 bytes at a time: each byte is copied a few times, not
    once per later read (rebuilding the held part at every read allocates ~500 MB here)."""
    size, chunk = 512 * 1024, 256
    line = bytes(random.Random(3).choices(b"abcdefghij", k=size))
    reads = [line[i : i + chunk] for i in range(0, size, chunk)] + [b"\n"]
    assembler = LineAssembler(max_line)
    allocated, out = _bytes_allocated_by_feeds(assembler, reads)
    assert out.replace(SPLIT_MARKER + b"\n", b"") == line + b"\n"
    assert allocated < 6 * size, f"{allocated} bytes allocated for a {size}-byte line"
