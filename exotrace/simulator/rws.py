"""The legacy Reporting Web Service: ``reporting.svc/MessageTrace`` and ``MessageTraceDetail``.

``$skiptoken`` is an integer offset into the window's rows as ordered *now*, so rows published or
re-ordered between two pages shift the offsets, exactly the weakness of the real service.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from exotrace.simulator.data import US, from_us, iso7, iso_short, to_us
from exotrace.simulator.entra import Caller, check_bearer
from exotrace.simulator.odata import Clause, FilterError, parse_clauses, parse_datetime
from exotrace.simulator.views import matcher, rws_item

if TYPE_CHECKING:
    from exotrace.simulator.app import SimState

NO_PERMISSION = {"ErrorCode": "", "Message": "No permission to access the report for the organization ."}
LIGHT_CT = "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
VERBOSE_CT = "application/json;odata=verbose;charset=utf-8"
ATOM_CT = "application/atom+xml;type=feed;charset=utf-8"
XML_CT = "application/xml;charset=utf-8"
_SERVICE_PATH = "/ecp/ReportingWebService/Reporting.svc"
_FIELDS = {f.lower(): f for f in ("StartDate", "EndDate", "SenderAddress", "RecipientAddress", "Status",
                                  "MessageId", "FromIP", "ToIP", "MessageTraceId", "Subject", "Organization")}
_TO_VIEW = {"SenderAddress": "senderAddress", "RecipientAddress": "recipientAddress", "Status": "status",
            "MessageId": "messageId", "FromIP": "fromIP", "ToIP": "toIP", "MessageTraceId": "id",
            "Subject": "subject"}
_DATE_RE = re.compile(r'"/Date\((-?\d+)\)/"')


def _headers(ct: str) -> dict[str, str]:
    return {"Content-Type": ct, "DataServiceVersion": "3.0;" if "minimal" in ct else "2.0;",
            "request-id": str(uuid.uuid4()),
            "X-RWS-Version": "2013-V1", "Cache-Control": "no-cache, no-store"}


def response_format(request: Request) -> str:
    """``verbose`` ($format=json or odata=verbose), ``light`` (Accept: application/json) or ``atom``."""
    fmt = request.query_params.get("$format", "").lower()
    accept = request.headers.get("accept", "").lower()
    if fmt == "json" or "odata=verbose" in accept:
        return "verbose"
    if fmt in ("atom", "xml"):
        return "atom"
    if "application/json" in accept:
        return "light"
    return "atom"


def odata_error(status: int, message: str, fmt: str, code: str = "", lang: str = "en-US") -> Response:
    if fmt == "atom":
        xml = ('<?xml version="1.0" encoding="utf-8" standalone="yes"?><m:error xmlns:m="http://schemas.microsoft'
               f'.com/ado/2007/08/dataservices/metadata"><m:code>{escape(code)}</m:code><m:message xml:lang="{lang}">'
               f"{escape(message)}</m:message></m:error>")
        return Response(xml, status_code=status, headers=_headers(XML_CT))
    key = "error" if fmt == "verbose" else "odata.error"
    body = {key: {"code": code, "message": {"lang": lang, "value": message}}}
    return JSONResponse(body, status_code=status, headers=_headers(VERBOSE_CT if fmt == "verbose" else LIGHT_CT))


def guard(state: SimState, request: Request, report: str) -> Caller | Response:
    caller = check_bearer(state, request, "rws")
    if not isinstance(caller, Caller):
        state.count("rws_401")
        return Response(status_code=401, headers={
            "WWW-Authenticate": 'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", '
                                'trusted_issuers="00000001-0000-0000-c000-000000000000@*", '
                                'token_types="app_asserted_user_v1 service_asserted_app_v1", error="invalid_token"',
            "x-ms-diagnostics": f'2000001;reason="{caller[2]}";error_category="invalid_token"'})
    if caller.tenant.rws_retired or "retired" in state.scenarios:
        state.count("rws_retired")
        return odata_error(state.config.rws_retired_status, f"Resource not found for the segment '{report}'.",
                           response_format(request))
    if not caller.tenant.rws_role:
        state.count("rws_403")
        return JSONResponse(NO_PERMISSION, status_code=403)
    return caller


def _verbose_json(obj: Any) -> bytes:
    """JSON with dates as ``"\\/Date(ms)\\/"`` on the wire, as WCF writes them."""
    text = orjson.dumps(obj).decode()
    return _DATE_RE.sub(r'"\\/Date(\1)\\/"', text).encode()


def _date_ms(us: int) -> str:
    return f"/Date({us // 1000})/"


async def message_trace(state: SimState, request: Request, caller: Caller, report: str) -> Response:
    params = request.query_params
    fmt = response_format(request)
    verbose = fmt == "verbose"
    now_us = to_us(state.clock.now())
    try:
        clauses = parse_clauses(params.get("$filter", ""), allow_or=False)
    except FilterError as exc:
        return odata_error(400, str(exc), fmt)
    fields: dict[str, Clause] = {}
    for c in clauses:
        name = _FIELDS.get(c.prop.lower())
        if name is None:
            return odata_error(400, f"No property '{c.prop}' exists in type 'TenantReporting.{report}'.", fmt)
        fields[name] = c
    start = end = None
    try:
        if "StartDate" in fields:
            start = parse_datetime(fields["StartDate"].value)
        if "EndDate" in fields:
            end = parse_datetime(fields["EndDate"].value)
    except ValueError as exc:
        return odata_error(400, f"Unrecognized 'Edm.DateTime' literal: {exc}", fmt)
    if (start is None) != (end is None):
        return odata_error(400, "If you supply EndDate you must also supply StartDate, and vice versa.", fmt)
    if start is None or end is None:
        end = now_us
        start = end - 48 * 3600 * US
    oldest = now_us - state.config.rws_max_age_days * 86400 * US
    if start < oldest:
        return odata_error(400, f"Invalid StartDate value. The StartDate can't be older than "
                                f"{state.config.rws_max_age_days} days from today.", fmt)
    if end < start:
        return odata_error(400, "Invalid date range: EndDate must be later than StartDate.", fmt)
    max_page = state.config.rws_max_page
    top = max_page
    top_given = "$top" in params
    if top_given:
        try:
            top = int(params["$top"])
        except ValueError:
            return odata_error(400, f"Invalid value '{params['$top']}' for $top query option found. "
                                    "The $top query option requires a non-negative integer value.", fmt)
        if top < 0:
            return odata_error(400, "The $top query option requires a non-negative integer value.", fmt)
    page = min(top, max_page)
    skip = 0
    if "$skiptoken" in params:
        try:
            skip = int(params["$skiptoken"])
        except ValueError:
            return odata_error(400, "Skip token is not valid.", fmt)
        if skip >= 999999:
            state.count("rws_500")
            # the body captured from the service (msapi.md 2.3) has an empty lang
            return odata_error(500, "An error has occurred on the server.", fmt, code="UnknownError", lang="")
        if skip < 0:
            return odata_error(400, "Skip token is not valid.", fmt)
    data = state.data[caller.tenant.name]
    view = [(_TO_VIEW[k], c) for k, c in fields.items() if k in _TO_VIEW]
    if report == "MessageTraceDetail":
        return _detail(state, request, caller, fields, start, end, now_us, fmt)
    match = matcher(view, "rws", now_us, True)
    rows, more, i = [], False, 0
    for row in data.iter_desc(start, end, now_us, state.horizon_us(now_us), match=match):
        if page == 0:  # $top=0: an empty page, and no link that would loop
            break
        if i >= skip:
            if len(rows) == page:
                more = True
                break
            rows.append(row)
        i += 1
    items = [rws_item(r, now_us, start, end, skip + n) for n, r in enumerate(rows)]
    state.count("rws_rows", len(items))
    await state.latency(len(items))
    next_skip = skip + len(rows)
    qs_filter = params.get("$filter", "")
    base = f"{state.base_url}{_SERVICE_PATH}"
    if fmt == "atom":
        next_url = None
        if more:
            next_url = (f"{base}/MessageTrace?$filter={quote(_echo_filter(qs_filter, start, end), safe=chr(39))}"
                        + (f"&$top={top}" if top_given else "") + f"&$skiptoken={next_skip}")
        return Response(atom_feed(base, "MessageTrace", items, next_url, skip), headers=_headers(ATOM_CT))
    if verbose:
        results = []
        for n, (it, r) in enumerate(zip(items, rows, strict=True)):
            uri = f"{base}/MessageTrace({skip + n})"
            it = {"__metadata": {"id": uri, "uri": uri, "type": "TenantReporting.MessageTrace"}, **it}
            it["Received"] = _date_ms(r.received_us)
            it["StartDate"], it["EndDate"] = _date_ms(start), _date_ms(end)
            results.append(it)
        d: dict[str, Any] = {"results": results}
        if more:
            d["__next"] = (f"{base}/MessageTrace?$format=json&$filter="
                           f"{quote(_echo_filter(qs_filter, start, end), safe=chr(39))}"
                           + (f"&$top={top}" if top_given else "") + f"&$skiptoken={next_skip}")
        return Response(_verbose_json({"d": d}), headers=_headers(VERBOSE_CT))
    body: dict[str, Any] = {"odata.metadata": f"{state.base_url}{_SERVICE_PATH}/$metadata#MessageTrace",
                            "value": items}
    if more:
        body["odata.nextLink"] = ("../../reportingwebservice/reporting.svc/MessageTrace?$filter="
                                  + quote(_echo_filter(qs_filter, start, end), safe="'")
                                  + (f"&$top={top}" if top_given else "") + f"&$skiptoken={next_skip}")
    return Response(orjson.dumps(body), headers=_headers(LIGHT_CT))


def _echo_filter(original: str, start: int, end: int) -> str:
    """The filter as the service re-emits it: capital ``DateTime'...'`` literals."""
    if "startdate" not in original.lower():
        original = (f"StartDate eq DateTime'{iso_short(start)}' and EndDate eq DateTime'{iso_short(end)}'"
                    + (f" and {original}" if original.strip() else ""))
    return re.sub(r"\bdatetime'", "DateTime'", original, flags=re.IGNORECASE)


def _detail(state: SimState, request: Request, caller: Caller, fields: dict[str, Clause], start: int, end: int,
            now_us: int, fmt: str) -> Response:
    verbose = fmt == "verbose"
    if "MessageTraceId" not in fields or "RecipientAddress" not in fields:
        return odata_error(400, "MessageTraceId and RecipientAddress are required to query MessageTraceDetail.",
                           fmt)
    data = state.data[caller.tenant.name]
    horizon = state.horizon_us(now_us)
    out: list[dict[str, Any]] = []
    for row in data.find(fields["MessageTraceId"].value, fields["RecipientAddress"].value):
        if row.visible_us > now_us or row.received_us < horizon:
            continue
        for ev in row.events_at(now_us):
            if not start <= ev.at_us <= end:
                continue
            out.append({
                "Organization": row.organization, "MessageId": row.message_id,
                "MessageTraceId": row.trace_id, "RecipientAddress": row.recipient,
                "SenderAddress": row.sender,
                "Date": _date_ms(ev.at_us) if verbose else iso7(ev.at_us, z=False),
                "Event": ev.event, "Action": ev.action or None, "Detail": ev.description,
                "Data": quote(f'<root><MEP Name="Hour" Long="{from_us(ev.at_us).hour}"/></root>'),
                "StartDate": _date_ms(start) if verbose else iso_short(start),
                "EndDate": _date_ms(end) if verbose else iso_short(end),
                "Index": len(out),
            })
    if fmt == "atom":
        feed = atom_feed(f"{state.base_url}{_SERVICE_PATH}", "MessageTraceDetail", out, None, 0)
        return Response(feed, headers=_headers(ATOM_CT))
    if verbose:
        return Response(_verbose_json({"d": {"results": out}}), headers=_headers(VERBOSE_CT))
    body = {"odata.metadata": f"{state.base_url}{_SERVICE_PATH}/$metadata#MessageTraceDetail", "value": out}
    return Response(json.dumps(body, ensure_ascii=False).encode(), headers=_headers(LIGHT_CT))


_EDM = {"Received": "Edm.DateTime", "StartDate": "Edm.DateTime", "EndDate": "Edm.DateTime", "Date": "Edm.DateTime",
        "Size": "Edm.Int32", "Index": "Edm.Int32", "MessageTraceId": "Edm.Guid"}


def atom_feed(base: str, report: str, items: list[dict[str, Any]], next_url: str | None, skip: int) -> bytes:
    """An OData v2 Atom feed, what the service sends when the client asks for neither JSON form."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = [
        '<?xml version="1.0" encoding="utf-8" standalone="yes"?>',
        f'<feed xml:base="{escape(base)}/" xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" '
        'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">',
        f'<id>{escape(base)}/{report}</id><title type="text">{report}</title><updated>{now}</updated>'
        f'<link rel="self" title="{report}" href="{report}" />',
    ]
    for n, item in enumerate(items):
        props = []
        for key, value in item.items():
            edm = _EDM.get(key)
            if value is None:
                props.append(f'<d:{key} m:null="true" />')
                continue
            text = str(value).removesuffix("Z") if edm == "Edm.DateTime" else str(value)
            attr = f' m:type="{edm}"' if edm else ""
            props.append(f"<d:{key}{attr}>{escape(text)}</d:{key}>")
        key_ = skip + n
        out.append(
            f'<entry><id>{escape(base)}/{report}({key_})</id><category term="TenantReporting.{report}" '
            'scheme="http://schemas.microsoft.com/ado/2007/08/dataservices/scheme" />'
            f'<link rel="edit" title="{report}" href="{report}({key_})" /><title /><updated>{now}</updated>'
            '<author><name /></author><content type="application/xml"><m:properties>'
            + "".join(props) + "</m:properties></content></entry>")
    if next_url:
        out.append(f'<link rel="next" href="{escape(next_url)}" />')
    out.append("</feed>")
    return "".join(out).encode()
