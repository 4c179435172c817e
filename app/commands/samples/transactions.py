"""Realistic sample data: raw Pix events with 45 fields, and bad ones with a known reason."""
from __future__ import annotations

import base64
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import orjson

from domain.errors import Reason

EVENT_TYPES = ("PIX_PAYMENT", "PIX_RECEIPT", "PIX_REFUND")
CHANNELS = ("MOBILE", "INTERNET_BANKING", "API", "ATM")
BANKS = ("00000000", "00360305", "60701190", "90400888", "18236120")


@dataclass(frozen=True)
class Sample:
    key: bytes
    value: bytes
    event_id: Optional[str]          # None when the bytes carry no recoverable id
    expected_reason: Optional[Reason]  # None: a good event


def account_id(n: int) -> str:
    return f"acc-{n:06d}"


def raw_event(rng: random.Random, account: str, now: datetime) -> dict[str, Any]:
    """One raw event as upstream sends it: 10 mapped fields and 35 the pipeline drops."""
    occurred = now - timedelta(seconds=rng.randint(0, 3600), milliseconds=rng.randint(0, 999))
    event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return {
        # mapped
        "eventId": event_id,
        "eventType": rng.choice(EVENT_TYPES),
        "accountId": account,
        "amount": f"{rng.randint(1, 500000) / 100:.2f}",
        "currency": "BRL",
        "occurredAt": occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "endToEndId": f"E{rng.choice(BANKS)}{occurred:%Y%m%d%H%M}{rng.getrandbits(44):011x}",
        "counterpartyKey": rng.choice([f"user{rng.randint(1, 9999)}@example.com",
                                       f"+55119{rng.randint(10000000, 99999999)}",
                                       str(uuid.UUID(int=rng.getrandbits(128), version=4))]),
        "channel": rng.choice(CHANNELS),
        "description": rng.choice(["", "aluguel", "mercado", "transferência", "pix cobrança"]),
        # carried upstream, not mapped
        "schemaVersion": "2.3", "source": "core-banking", "traceId": f"{rng.getrandbits(128):032x}",
        "spanId": f"{rng.getrandbits(64):016x}", "deviceId": f"dev-{rng.getrandbits(32):08x}",
        "deviceModel": rng.choice(["iPhone15,2", "SM-S918B", "Pixel 8"]), "osVersion": "17.4",
        "appVersion": "8.12.0", "ipAddress": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "userAgent": "bank-app/8.12.0", "geoLat": round(rng.uniform(-33, 5), 5),
        "geoLon": round(rng.uniform(-73, -35), 5), "branchCode": f"{rng.randint(1, 9999):04d}",
        "accountType": rng.choice(["CACC", "SVGS", "TRAN"]), "ispbPayer": rng.choice(BANKS),
        "ispbPayee": rng.choice(BANKS), "payerName": "Fulano de Tal", "payerDocument": "***.456.789-**",
        "payeeName": "Beltrano Ltda", "payeeDocument": "**.345.678/0001-**", "payeeBank": rng.choice(BANKS),
        "initiationType": rng.choice(["MANU", "DICT", "QRDN", "QRES"]), "priority": "HIGH",
        "purpose": "IPAY", "fee": "0.00", "fxRate": None, "settlementDate": f"{occurred:%Y-%m-%d}",
        "authCode": f"{rng.randint(0, 999999):06d}", "riskFlags": [],
        "merchantCategoryCode": rng.choice(["5411", "5812", "0000"]),
        "correlationId": f"{rng.getrandbits(64):016x}", "batchId": None,
        "ingestedAt": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "partnerId": None, "tags": {"env": "sample"},
    }


# Each kind of bad event, with the reason the pipeline must give it.
def _bad(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, Reason]:
    kind = rng.randrange(8)
    if kind == 0:
        return b"\xff\xfenot json at all", Reason.UNDECODABLE
    if kind == 1:
        return orjson.dumps([event]), Reason.NOT_AN_OBJECT
    if kind == 2:
        del event["accountId"]
        return orjson.dumps(event), Reason.MISSING_FIELD
    if kind == 3:
        event["eventType"] = "PIX_CHARGEBACK"
        return orjson.dumps(event), Reason.UNKNOWN_CATEGORY
    if kind == 4:
        event["amount"] = rng.choice(["-10.00", "0", "12.345", "abc"])
        return orjson.dumps(event), Reason.INVALID_AMOUNT
    if kind == 5:
        event["occurredAt"] = rng.choice(["yesterday", "2026-13-40T99:00:00Z", "2026-11-22T10:00:00"])
        return orjson.dumps(event), Reason.INVALID_TIMESTAMP
    if kind == 6:
        event["channel"] = 42
        return orjson.dumps(event), Reason.INVALID_FIELD
    return base64.b64encode(b"{truncated"), Reason.UNDECODABLE


def samples(count: int, *, bad_ratio: float = 0.0, accounts: int = 1000, seed: int = 0,
            base64_ratio: float = 0.3) -> list[Sample]:
    """`count` events; about `bad_ratio` of them bad, `base64_ratio` of the good ones base64-wrapped."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    out = []
    for _ in range(count):
        account = account_id(rng.randrange(accounts))
        event = raw_event(rng, account, now)
        if rng.random() < bad_ratio:
            value, reason = _bad(rng, event)
            out.append(Sample(account.encode(), value, event["eventId"], reason))
            continue
        value = orjson.dumps(event)
        if rng.random() < base64_ratio:
            value = base64.b64encode(value)
        out.append(Sample(account.encode(), value, event["eventId"], None))
    return out
