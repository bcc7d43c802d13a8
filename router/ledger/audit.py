"""The audit of the usage ledger: verify its hash chain, export a subsidy claim's rows.

``verify`` walks the chain (see ``chain``) and names the first row that was
changed, inserted or deleted, then cross-checks the chain against the holds table: every
usage row belongs to a settled hold and every settled hold has its usage row, which also
catches rows dropped from the end of the chain. ``export_csv`` writes the per-request
rows a subsidy claim needs, headed by the chain head that an auditor re-verifies.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from suanli.router.ledger.chain import GENESIS, chain_root, row_hash
from suanli.router.ledger.keys import KeyRow
from suanli.router.ledger.types import IN_DOUBT_STATUS, UsageRow

__all__ = [
    "EXPORT_COLUMNS",
    "ChainBrokenError",
    "ChainReport",
    "ChainSource",
    "export_csv",
    "parse_bound",
    "verify",
]

EXPORT_COLUMNS = (
    "time",
    "request_id",
    "key",
    "key_name",
    "region",
    "model",
    "class",
    "prompt_tokens",
    "completion_tokens",
    "tokens",
    "cost_yuan",
    "cash_yuan",
    "voucher",
    "voucher_units",
    "voucher_yuan",
    "row_id",
    "row_hash",
)


class ChainSource(Protocol):
    """What the audit reads: the SQLite ``Ledger``, or a PostgreSQL ``ChainSnapshot``."""

    def chain_rows(self) -> Iterator[tuple[int, tuple[Any, ...], str, str]]: ...
    def chain_orphans(self) -> tuple[int | None, int]: ...
    def keys(self) -> list[KeyRow]: ...
    def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]: ...


class ChainBrokenError(Exception):
    """The usage chain does not verify: nothing is exported from a tampered ledger."""


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of ``verify``. ``problem`` is None, "changed", "inserted" or "deleted"."""

    rows: int
    head_id: int | None
    head_hash: str
    problem: str | None = None
    row_id: int | None = None  # the first row changed, inserted, or missing
    message: str = ""
    in_doubt: tuple[int, ...] = ()  # ids of the rows in doubt (types.IN_DOUBT_STATUS), when it verifies
    root: str = ""  # several chains (replicas): the root sealing their heads (chain.chain_root)
    chains: int = 1

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(ledger: ChainSource, *, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Walk the whole chain; the first broken row, classified, or an OK with the head.

    ``anchor`` is a chain head published earlier (an export's ``row N hash H``): the chain
    must still pass through it, which catches even a forger who re-hashed every row after
    an edit, or truncated the chain and the holds behind it.

    A ledger shared by replicas (``chain_parts``) keeps one chain per replica: each is walked
    on its own (ids increase, not necessarily by one), must end at the head its writer
    recorded, and their heads are sealed into one root (``chain.chain_root``).
    """
    parts = getattr(ledger, "chain_parts", None)
    if parts is not None:
        return _verify_parts(ledger, parts(), anchor)
    report = _walk(ledger.chain_rows(), anchor, contiguous=True)
    if report.problem is None:
        return _cross_check(ledger, report, anchor)
    return report


def _walk(chain: Iterator[tuple[int, Any, str, str]], anchor: tuple[int, str] | None, *,
          contiguous: bool) -> ChainReport:
    """One chain walked from GENESIS: the first broken row, or an OK report with its head."""
    rows = 0
    in_doubt: list[int] = []
    prev_id, prev_hash_seen, before_prev = 0, GENESIS, GENESIS
    for row_id, values, prev_hash, hash_ in chain:
        content_ok = row_hash(prev_hash, values) == hash_
        link_ok = prev_hash == prev_hash_seen
        expected_id = prev_id + 1
        id_ok = row_id == expected_id if contiguous else row_id > prev_id
        if not (link_ok and content_ok and id_ok):
            return _broken(
                row_id,
                expected_id,
                prev_id,
                content_ok,
                link_ok,
                points_before=prev_hash == before_prev and prev_id > 0,
                rows=rows,
                head=(prev_id or None, prev_hash_seen),
            )
        if anchor is not None and row_id == anchor[0] and hash_ != anchor[1]:
            return ChainReport(
                rows,
                prev_id or None,
                prev_hash_seen,
                problem="changed",
                row_id=row_id,
                message=f"row {row_id} no longer has the anchored hash: rows up to it were rewritten",
            )
        rows += 1
        if values[-1] == IN_DOUBT_STATUS:  # the status, hashed last
            in_doubt.append(row_id)
        before_prev, prev_hash_seen, prev_id = prev_hash_seen, hash_, row_id
    return ChainReport(rows, prev_id or None, prev_hash_seen, in_doubt=tuple(in_doubt))


def _verify_parts(ledger: ChainSource, parts: list[tuple[str, Any, tuple[int, str] | None]],
                  anchor: tuple[int, str] | None) -> ChainReport:
    """Every replica's chain, each against its recorded head; then the holds cross-check."""
    rows, in_doubt, heads = 0, [], []
    newest: tuple[int, str] = (0, GENESIS)
    anchored = anchor is None
    for name, chain, recorded in parts:
        seen: list[int] = []
        walked = _walk(_noting(chain, seen, anchor), anchor, contiguous=False)
        if walked.problem is not None:
            message = f"chain {name or 'main'}: {walked.message}"
            return replace(walked, rows=rows + walked.rows, message=message)
        anchored = anchored or bool(seen)
        head = (walked.head_id or 0, walked.head_hash)
        if recorded is not None and recorded[0] > head[0]:
            return ChainReport(rows + walked.rows, *head, problem="deleted", row_id=recorded[0],
                               message=f"chain {name or 'main'} ends at row {head[0]}, but its writer"
                               f" committed up to row {recorded[0]}: rows were deleted")
        rows += walked.rows
        in_doubt.extend(walked.in_doubt)
        heads.append((name, walked.rows, *head))
        newest = max(newest, head)
    if not anchored:
        assert anchor is not None
        return ChainReport(rows, newest[0] or None, newest[1], problem="deleted", row_id=anchor[0],
                           message=f"the anchored row {anchor[0]} is in no chain: rows were deleted")
    root = chain_root(heads)
    report = ChainReport(rows, newest[0] or None, newest[1], in_doubt=tuple(sorted(in_doubt)), root=root,
                         chains=len(heads))
    return _cross_check(ledger, report, None)


def _noting(chain: Iterator[tuple[int, Any, str, str]], seen: list[int],
            anchor: tuple[int, str] | None) -> Iterator[tuple[int, Any, str, str]]:
    for entry in chain:
        if anchor is not None and entry[0] == anchor[0]:
            seen.append(entry[0])
        yield entry


def _cross_check(ledger: ChainSource, walked: ChainReport, anchor: tuple[int, str] | None) -> ChainReport:
    """The walked chain(s) against the anchor's position and the holds table."""
    rows, in_doubt = walked.rows, list(walked.in_doubt)
    prev_id, prev_hash_seen = walked.head_id or 0, walked.head_hash
    head = (prev_id or None, prev_hash_seen)
    if anchor is not None and prev_id < anchor[0]:
        return ChainReport(
            rows,
            *head,
            problem="deleted",
            row_id=prev_id + 1,
            message=f"the chain ends at row {prev_id}, before the anchored row {anchor[0]}:"
            " rows were deleted",
        )
    forged, missing = ledger.chain_orphans()
    if forged is not None:
        return ChainReport(
            rows,
            *head,
            problem="inserted",
            row_id=forged,
            message=f"row {forged} was inserted: no settled request of the ledger made it",
        )
    if missing:
        return ChainReport(
            rows,
            *head,
            problem="deleted",
            row_id=prev_id + 1,
            message=f"{missing} settled request(s) have no usage row: rows were deleted"
            f" (the chain ends at row {prev_id})",
        )
    message = f"{rows} rows verify; chain head row {prev_id} {prev_hash_seen}"
    if walked.root:
        message = (f"{rows} rows verify in {walked.chains} chain(s), sealed in root {walked.root};"
                   f" newest row {prev_id} {prev_hash_seen}")
    if in_doubt:
        shown = ", ".join(map(str, in_doubt[:20])) + (", ..." if len(in_doubt) > 20 else "")
        message += (
            f"; {len(in_doubt)} row(s) in doubt (sent, never answered, charged at their hold): {shown}"
        )
    return replace(walked, message=message)


def _broken(
    row_id: int,
    expected_id: int,
    prev_id: int,
    content_ok: bool,
    link_ok: bool,
    *,
    points_before: bool,
    rows: int,
    head: tuple[int | None, str],
) -> ChainReport:
    """Name what happened just before ``row_id``, the first row that does not follow on."""
    if row_id > expected_id and content_ok:
        span = f"{expected_id}" if row_id == expected_id + 1 else f"{expected_id}-{row_id - 1}"
        return ChainReport(
            rows,
            *head,
            problem="deleted",
            row_id=expected_id,
            message=f"row(s) {span} were deleted: row {row_id} follows a missing row",
        )
    if link_ok and not content_ok:
        return ChainReport(
            rows,
            *head,
            problem="changed",
            row_id=row_id,
            message=f"row {row_id} was changed: its content no longer matches its hash",
        )
    if points_before:
        return ChainReport(
            rows,
            *head,
            problem="inserted",
            row_id=prev_id,
            message=f"row {prev_id} was inserted: row {row_id} still points to the row before it",
        )
    if content_ok:
        return ChainReport(
            rows,
            *head,
            problem="changed",
            row_id=prev_id,
            message=f"row {prev_id} was changed and re-hashed: row {row_id} no longer follows it",
        )
    return ChainReport(
        rows,
        *head,
        problem="changed",
        row_id=row_id,
        message=f"row {row_id} was changed or inserted: neither its hash nor its link verify",
    )


def parse_bound(text: str, tz: ZoneInfo, *, end: bool) -> datetime:
    """``--from``/``--to``: a date (local to ``tz``; an end date counts whole) or an ISO time."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime.combine(day, time(0), tzinfo=tz)
        try:
            return start + timedelta(days=1) if end else start
        except OverflowError:  # the end of 9999-12-31: no time after it to bound by
            raise ValueError(f"{text!r} is past the last representable date") from None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a date (2026-12-01) nor an ISO time") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=tz)


def export_csv(
    ledger: ChainSource, *, voucher: str | None, since: datetime | None, until: datetime | None, tz: ZoneInfo
) -> str:
    """The claim CSV: ``#`` lines with the scope and chain head, a header, one row per request.

    Rows are the usage settled in ``[since, until)`` paid (in part) by ``voucher`` (every
    row when None). Raises ChainBrokenError when the chain does not verify.
    """
    report = verify(ledger)
    if not report.ok:
        raise ChainBrokenError(f"the usage ledger does not verify: {report.message}")
    names = {row.id: row.name for row in ledger.keys()}  # key id -> name
    out = io.StringIO()
    scope = (
        f"voucher={voucher or '*'} from={since.isoformat() if since else '-'}"
        f" to={until.isoformat() if until else '-'}"
    )
    # Several replicas' chains: the root that seals their heads (verify prints it too).
    sealed = f" chains={report.chains} root={report.root}" if report.root else ""
    out.write(f"# suanli usage export {scope}{sealed}\n")
    out.write(
        f"# chain head: row {report.head_id or 0} hash {report.head_hash} ({report.rows} rows verified;"
        f" later: suanli audit verify --head {report.head_id or 0}:{report.head_hash})\n"
    )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for u in ledger.usage(since=since, until=until):
        if voucher is not None and u.voucher_id != voucher:
            continue
        writer.writerow(
            (
                u.time.astimezone(tz).isoformat(),
                u.request_id,
                u.key_id or "",
                names.get(u.key_id or "", ""),
                u.region,
                u.model,
                u.work_class,
                u.prompt_tokens,
                u.completion_tokens,
                u.tokens,
                repr(u.cost_yuan),
                repr(u.cash_yuan),
                u.voucher_id or "",
                repr(u.voucher_units),
                repr(u.voucher_yuan),
                u.id,
                u.hash,
            )
        )
    return out.getvalue()
