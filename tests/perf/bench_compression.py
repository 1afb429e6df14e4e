"""Codec comparison: ratio and compress/decompress MB/s for every codec.

Payloads are generated in-process from a fixed seed, so every run measures
the same bytes: JSON documents shaped like API responses, English-like text
(Zipf-distributed words, as real prose is), and random bytes (the worst
case: nothing to find), each at ~64 KiB and ~1 KiB.  The ``pack`` column
says what ``geecache.compression.pack`` stores when a group is configured
with that codec: the codec (``*``) or raw bytes (``raw``, it saved < 10%).
The ``none`` codec does no work (it hands back the same object), so its
speed is not reported: a figure would be the cost of a function call
divided into the payload size, hundreds of GB/s that say nothing.  A plot
(ratio and MB/s per payload and codec) goes to ``tests/perf/out/``.
"""

from __future__ import annotations

import json
import random

from geecache.compression import CODECS, get_codec, pack, unpack
from tests.perf.common import auto_n, median_us, plot_bars, progress, result, table

SIZES = (("64k", 64 * 1024), ("1k", 1024))
KINDS = ("json", "text", "random")
SEED = 20240611

_WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be at one have this from "
    "or had by hot word but what some we can out other were all there when up use your how said an "
    "each she which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people my over "
    "know water than call first who may down side been now find any new work part take get place made "
    "live where after back little only round man year came show every good me give our under name very "
    "through just form sentence great think say help low line differ turn cause much mean before move "
    "right boy old too same tell does set three want air well also play small end put home read hand "
    "port large spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth father"
).split()


def json_payload(size: int, rng: random.Random) -> bytes:
    """JSON shaped like a paged API response: repeated field names, varied values."""
    statuses = ("active", "pending", "suspended", "deleted")
    records: list[dict] = []
    body = b""
    i = 0
    while True:
        i += 1
        first, last = rng.choice(_WORDS).title(), rng.choice(_WORDS).title()
        records.append({
            "id": 100000 + rng.randrange(900000),
            "user": {"name": f"{first} {last}", "email": f"{first.lower()}.{last.lower()}@example.com"},
            "created_at": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                          f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
            "status": rng.choice(statuses),
            "score": round(rng.random() * 100, 3),
            "tags": rng.sample(_WORDS, rng.randint(0, 4)),
            "items": [
                {"sku": f"SKU-{rng.randrange(10**6):06d}", "qty": rng.randint(1, 9), "price": rng.randint(99, 99999) / 100}
                for _ in range(rng.randint(0, 3))
            ],
        })
        candidate = json.dumps({"page": 1, "count": i, "results": records}, separators=(",", ":")).encode()
        if len(candidate) > size and body:
            return body
        body = candidate


def text_payload(size: int, rng: random.Random) -> bytes:
    """English-like prose: common words with Zipf frequencies, sentences and paragraphs."""
    weights = [1 / (rank + 1) for rank in range(len(_WORDS))]
    parts: list[str] = []
    length = 0
    while length < size:
        words = rng.choices(_WORDS, weights, k=rng.randint(5, 18))
        sentence = " ".join(words).capitalize() + rng.choice((". ", ". ", ". ", "? ", "! ", ".\n\n"))
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts).encode()[:size]


def random_payload(size: int, rng: random.Random) -> bytes:
    """Incompressible bytes: what already-compressed images or archives look like."""
    return rng.randbytes(size)


_MAKERS = {"json": json_payload, "text": text_payload, "random": random_payload}


def payloads() -> list[tuple[str, bytes]]:
    """(label, bytes) for every kind and size, the same on every run."""
    out = []
    for kind in KINDS:
        for size_label, size in SIZES:
            out.append((f"{kind}-{size_label}", _MAKERS[kind](size, random.Random(f"{SEED}-{kind}-{size}"))))
    return out


def pack_mark(payload: bytes, codec_name: str) -> str:
    """``*`` when ``pack`` keeps *codec_name*'s output for *payload*, ``raw`` when it stores it plain."""
    codec_id, blob = pack(payload, codec_name)
    if unpack(codec_id, blob) != payload:
        raise AssertionError(f"pack/unpack with {codec_name} did not round-trip")
    if codec_name == "none":
        return ""
    return "*" if codec_id == get_codec(codec_name).id else "raw"


def run(quick: bool) -> dict:
    """Measure every codec on every payload; one table per payload size."""
    target_s, repeats = (0.03, 3) if quick else (0.15, 5)
    names = [c.name for c in CODECS]
    rows_by_size: dict[str, list[list]] = {label: [] for label, _ in SIZES}
    summary: dict[str, float] = {}
    # payload label -> codec -> (ratio, compress MB/s, decompress MB/s), for the plot
    figures: dict[str, dict[str, tuple[float, float | None, float | None]]] = {}
    for label, data in payloads():
        for name in names:
            codec = get_codec(name)
            blob = codec.compress(data)
            if codec.decompress(blob) != data:
                raise AssertionError(f"{name} did not round-trip {label}")
            ratio = len(data) / len(blob)
            if name == "none":  # no work to time: see the module docstring
                c_mbs = d_mbs = None
            else:
                c_us = median_us(lambda: codec.compress(data), auto_n(lambda: codec.compress(data), target_s),
                                 repeats)
                d_us = median_us(lambda: codec.decompress(blob), auto_n(lambda: codec.decompress(blob), target_s),
                                 repeats)
                c_mbs, d_mbs = len(data) / c_us, len(data) / d_us  # bytes per microsecond == MB/s
                summary[f"compress_mbs.{label}.{name}"] = round(c_mbs, 1)
                summary[f"decompress_mbs.{label}.{name}"] = round(d_mbs, 1)
            kind, size_label = label.rsplit("-", 1)
            rows_by_size[size_label].append(
                [kind, len(data), name, len(blob), round(ratio, 2), c_mbs, d_mbs, pack_mark(data, name)]
            )
            summary[f"ratio.{label}.{name}"] = round(ratio, 3)
            figures.setdefault(label, {})[name] = (ratio, c_mbs, d_mbs)
        progress(f"{label}: {len(data)} bytes, {len(names)} codecs")
    columns = ["payload", "bytes", "codec", "packed", "ratio", "compress MB/s", "decompress MB/s", "pack"]
    tables = [
        table(f"codecs on ~{size_label.replace('k', ' KiB')} payloads (ratio = original/compressed; "
              "pack: * keeps codec, raw = stored plain; none: no work, no speed)", columns, rows)
        for size_label, rows in rows_by_size.items()
    ]
    plot = _plot(figures, [n for n in names if n != "none"])
    return result("compression", tables, summary, [plot] if plot else [])


def _plot(figures: dict[str, dict[str, tuple]], codecs: list[str]) -> str | None:
    """Ratio, compress and decompress MB/s: one panel each, a bar per codec per payload."""
    labels = list(figures)

    def series(i: int) -> dict[str, list]:
        return {c: [figures[label][c][i] for label in labels] for c in codecs}

    return plot_bars("compression.png", "Codecs (geecache.compression) on the bench payloads", [
        {"title": "ratio (original / compressed; 1 = none)", "ylabel": "ratio", "categories": labels,
         "series": series(0)},
        {"title": "compress", "ylabel": "MB/s (log scale)", "categories": labels, "series": series(1),
         "logy": True},
        {"title": "decompress", "ylabel": "MB/s (log scale)", "categories": labels, "series": series(2),
         "logy": True},
    ])
