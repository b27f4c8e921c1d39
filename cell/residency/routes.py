"""Residency endpoints: where a project's data is, proved from the cell's stores, and signed audits of it.

`GET …/residency` (read) audits the project live and shows the newest signed
report that covered it; `POST …/residency/audits` (admin) runs the audit again
and records it as the next link of the cell's receipt chain. Audits of the whole
cell (foreign rows, objects outside any homed project) run from the operator's
`relay residency audit`, which names every project and so is not for tenants.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, get, post

from cell import audit as audit_log
from cell.auth import ADMIN, READ, Principal, require
from cell.context import caller, ctx
from cell.residency import audit, receipts
from cell.residency.types import AuditIn, Findings, LastAudit, Report, Residency, Store, Usage
from common.problems import Problem, from_validation


def _stores(region: str, body: dict[str, Any]) -> list[Store]:
    prefixes = {name: Usage(**usage) for name, usage in body["prefixes"].items()}
    return [
        Store(kind="database", region=region, name=f"{region} Postgres", rows=body["rows"], tables=body["tables"]),
        Store(kind="object_storage", region=region, name=f"{region} object storage",
              prefix=f"projects/{body['project_id']}/", objects=body["objects"], bytes=body["bytes"],
              prefixes=prefixes),
    ]


def _last_audit(receipt: receipts.Receipt | None, project_id: uuid.UUID) -> LastAudit | None:
    if receipt is None:
        return None
    common: dict[str, Any] = {"seq": receipt.seq, "created_at": receipt.created_at, "hash": receipt.hash,
              "prev_hash": receipt.prev_hash, "signature": receipt.signature, "public_key": receipt.public_key}
    if receipt.scope == "project":
        return LastAudit(scope="project", clean=bool(receipt.body.get("clean")), body=receipt.body, **common)
    section = receipt.body["projects"][str(project_id)]
    return LastAudit(scope="cell", clean=bool(section.get("clean")), section=section, **common)


@get("/v1/projects/{project_id:uuid}/residency")
async def get_residency(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Residency:
    """The project's stores with rows and bytes, what is unaccounted for, and its newest signed report."""
    require(await caller(request, project_id), project_id, level=READ)
    c = ctx(request)
    region = c.settings.region
    async with c.pool.acquire() as conn:
        body = await audit.audit_project(conn, c.store, region, project_id)
        last = await receipts.latest_for(conn, project_id)
        newest = await receipts.head(conn)
    findings = msgspec.convert({k: body[k] for k in ("orphan_objects", "missing_objects", "cross_references",
                                                     "recent_objects")}, Findings)
    key = receipts.signing_key(c.settings.secret_key, region)
    return Residency(project_id=project_id, region=region, stores=_stores(region, body),
                     last_audit=_last_audit(last, project_id), clean=body["clean"], findings=findings,
                     public_key=receipts.public_key_of(key), head_hash=newest.hash if newest else None,
                     checked_at=datetime.now(UTC))


@post("/v1/projects/{project_id:uuid}/residency/audits", status_code=201)
async def record_audit(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Response[Report]:
    """Audit the project now and append the signed report to the cell's chain (admin)."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    raw = await request.body()
    try:
        data = msgspec.json.decode(raw, type=AuditIn) if raw.strip() else AuditIn()
    except msgspec.ValidationError as exc:
        raise from_validation(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise Problem(400, "malformed request body") from exc
    return Response(await audit_now(request, principal, project_id, data.grace_seconds), status_code=201)


async def audit_now(request: Request[Any, Any, Any], principal: Principal, project_id: uuid.UUID,
                    grace_seconds: int) -> Report:
    """Audit the project and append the signed report to the chain, audited (the API's and the dashboard's
    "Run audit now")."""
    c = ctx(request)
    key = receipts.signing_key(c.settings.secret_key, c.settings.region)
    async with c.pool.acquire() as conn:
        body = await audit.audit_project(conn, c.store, c.settings.region, project_id, grace=grace_seconds)
        async with conn.transaction():
            receipt = await receipts.append(conn, key, body, scope="project", audited_project=project_id)
            await audit_log.record(conn, principal, "residency.audited", "residency_report", receipt.seq,
                                   {"clean": body["clean"], "hash": receipt.hash})
    return Report(seq=receipt.seq, created_at=receipt.created_at, scope="project", body=receipt.body,
                  prev_hash=receipt.prev_hash, hash=receipt.hash, signature=receipt.signature,
                  public_key=receipt.public_key)


ROUTES = [get_residency, record_audit]
