"""Deterministic text and vectors for the simulated platforms.

The generator strings together *pieces* that are each exactly one reference token and
that the reference pre-tokenizer never merges across (a Chinese word is always followed
by an English word or punctuation, punctuation never follows punctuation). So an answer
of ``n`` pieces is ``n`` reference tokens, and a stream can send one token per chunk.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import struct

from suanli.providers.tokenizer import count_tokens

__all__ = ["default_length", "embedding", "generate_pieces", "seed_of", "vector_bytes", "warm_up"]

_EN_WORDS = (
    "the of and to in is that for it as with was on be by this are at from or an which have not but "
    "they all were can their has one more will other there about when so what its also into out only "
    "new some would time like than then these first any may use two very after most over such way well "
    "even make many where just must through back much good still own see same long both few last right "
    "under great high small large next early city power cloud model token price region data east west "
    "compute cheap fast night route light river stone green blue north south market energy voucher"
).split()
_ZH_WORDS = (
    "我们 可以 这个 一个 没有 中国 发展 问题 时候 因为 所以 但是 工作 计算 数据 模型 城市 服务 市场 技术 "
    "能力 系统 网络 平台 用户 价格 时间 今天 东部 西部 电力 成本 需要 已经 就是 如果 还是 通过 进行 自己 "
    "他们 什么 这样 现在 生活 经济 社会 国家 企业 地区 公司 我 你 他 的 是 在 有 和 人 大 上 中 山 水 云 光"
).split()
_PUNCT = ("，", "。", ",", ".", "！", "？")


@functools.cache
def _vocab() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Pieces that really are one reference token each (checked once, on first use)."""
    english = tuple(f" {w}" for w in _EN_WORDS if count_tokens(f" {w}") == 1)
    chinese = tuple(w for w in _ZH_WORDS if count_tokens(w) == 1)
    punct = tuple(p for p in _PUNCT if count_tokens(p) == 1)
    # With the fallback estimator nothing may pass; keep the text readable anyway.
    return english or (" the",), chinese or ("的",), punct or (".",)


def warm_up() -> None:
    """Load the tokenizer and check the vocabulary (blocking, about 0.2 s, once)."""
    _vocab()


def seed_of(*parts: object) -> int:
    """A stable 64-bit seed (``hash()`` is salted per process, so not that)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def default_length(seed: int) -> int:
    """Answer length in tokens when the request sets no maximum: 16 to 64."""
    return 16 + seed % 49


def generate_pieces(seed: int, count: int) -> list[str]:
    """``count`` one-token pieces of pseudo Chinese/English text, a function of ``seed``."""
    english, chinese, punct = _vocab()
    tables = {"zh": chinese, "en": english, "punct": punct}
    rng = random.Random(seed)
    pieces: list[str] = []
    kind = "zh"  # the first piece is Chinese, so no answer starts with a space
    for _ in range(count):
        table = tables[kind]
        pieces.append(table[rng.randrange(len(table))])
        kind = _next_kind(kind, rng.random())
    return pieces


def _next_kind(last: str, roll: float) -> str:
    # Two Chinese words in a row would merge into one CJK run, two punctuation marks
    # into one piece: both are excluded here.
    if last == "zh":
        return "en" if roll < 0.75 else "punct"
    if last == "punct":
        return "zh" if roll < 0.5 else "en"
    return "en" if roll < 0.45 else "zh" if roll < 0.75 else "punct"


def embedding(key: str, dimensions: int) -> list[float]:
    """A unit vector of ``dimensions`` floats, a function of ``key`` (model and input)."""
    rng = random.Random(seed_of("embedding", key))
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def vector_bytes(vector: list[float]) -> bytes:
    """Little-endian float32, as OpenAI's ``encoding_format: base64`` carries it."""
    return struct.pack(f"<{len(vector)}f", *vector)
