"""Microsoft Graph ``/admin/exchange/tracing/messageTraces`` and ``getDetailsByRecipient``."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from exotrace.simulator.data import HOUR_US, TICKS_PER_US, US, hour_of_trace_id, iso_short, iso_ticks, to_us
from exotrace.simulator.entra import GRAPH_ROLE, Caller, check_bearer
from exotrace.simulator.odata import Clause, FilterError, parse_clauses, parse_ticks
from exotrace.simulator.views import graph_item, matcher

if TYPE_CHECKING:
    from exotrace.simulator.app import SimState

SP_APP_ID = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"
SP_MISSING = (
    "Service principal-less Authentication failed: the service principal for App ID "
    f"{SP_APP_ID} was not found. Please create a service principal for this app in your tenant. "
    "Provisioning may take several hours to complete."
)
THROTTLED = "Your recent queries have surpassed the permitted limit, please try again later."
JSON_CT = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
DAY_US = 86400 * US
_ARG = "|System.ArgumentException|"
_PROPS = {p.lower(): p for p in ("receivedDateTime", "id", "messageId", "status", "senderAddress",
                                 "recipientAddress", "fromIP", "toIP", "subject")}


def _request_id(request: Request) -> str:
    """This request's ``request-id`` (one per request: the header and an error's ``innerError`` agree)."""
    rid = getattr(request.state, "graph_request_id", None)
    if rid is None:
        rid = request.state.graph_request_id = str(uuid.uuid4())
    return rid


def with_ids(response: Response, request: Request) -> Response:
    """Graph's ``request-id`` and ``client-request-id`` (the caller's, echoed) response headers."""
    rid = _request_id(request)
    response.headers["request-id"] = rid
    response.headers["client-request-id"] = request.headers.get("client-request-id", rid)
    return response


def error(state: SimState, request: Request, status: int, code: str, message: str,
          headers: dict[str, str] | None = None) -> JSONResponse:
    rid = _request_id(request)
    body = {"error": {"code": code, "message": message, "innerError": {
        "date": state.clock.now().strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": rid,
        "client-request-id": request.headers.get("client-request-id", rid),
    }}}
    return JSONResponse(body, status_code=status, headers=headers)


def bad_request(state: SimState, request: Request, message: str) -> JSONResponse:
    state.count("graph_400")
    return error(state, request, 400, "BadRequest", message)


#: The members of ``exchangeMessageTraceStatus`` (``resolved``, which the V2 cmdlet reports, is none).
STATUS_MEMBERS = frozenset({"gettingStatus", "pending", "failed", "delivered", "expanded", "quarantined",
                            "filteredAsSpam", "unknownFutureValue", "recalled"})


def guard(state: SimState, request: Request, details: bool = False) -> Caller | Response:
    """Authentication, service principal, permission and quota, in that order."""
    caller = check_bearer(state, request, "graph")
    if not isinstance(caller, Caller):
        status, code, msg = caller
        state.count("graph_401")
        return error(state, request, status, code, msg,
                     headers={"WWW-Authenticate": 'Bearer realm="", authorization_uri='
                              '"https://login.microsoftonline.com/common/oauth2/authorize"'})
    if not caller.tenant.service_principal:
        state.count("graph_401")
        return error(state, request, 401, "Unauthorized", SP_MISSING)
    cfg = state.config
    if GRAPH_ROLE not in caller.roles or (cfg.graph_requires_directory_role and not caller.tenant.rws_role):
        state.count("graph_403")
        if cfg.graph_403 == "request-denied":
            return error(state, request, 403, "Authorization_RequestDenied",
                         "Insufficient privileges to complete the operation.")
        if GRAPH_ROLE not in caller.roles:
            return error(state, request, 403, "Forbidden",
                         f"Missing role permissions on the request. API requires one of '{GRAPH_ROLE}'. "
                         f"Roles on the request '{' '.join(caller.roles)}'.")
        return error(state, request, 403, "Forbidden", "The application's service principal has no directory "
                     "role that grants access to message trace (for example Global Reader).")
    bucket = caller.tenant.name + (":details" if details and cfg.graph_details_quota == "separate" else "")
    wait = state.quota.take(bucket, state.clock.now().timestamp())
    if wait is not None:
        state.count("graph_429")
        state.count("quota_429")
        return error(state, request, 429, "TooManyRequests", THROTTLED, headers={"Retry-After": str(int(wait))})
    return caller


_OP_KINDS = {"ge": "GreaterThanOrEqual", "gt": "GreaterThan", "le": "LessThanOrEqual", "lt": "LessThan",
             "eq": "Equal", "ne": "NotEqual"}
#: A DateTimeOffset literal ends with its offset: ``Z`` or ``+hh:mm``.
_ZONED = re.compile(r"(Z|[+-]\d\d:?\d\d)$", re.IGNORECASE)


def _window_checks(state: SimState, start: int, end: int, now: int) -> str | None:
    if end < start:
        return "|System.ArgumentException|The StartDate must be earlier than the EndDate."
    if end - start > 10 * DAY_US:
        return "|System.ArgumentException|The interval between StartDate and EndDate can't be longer than 10 days."
    if start < now - 90 * DAY_US:
        return ("|System.ArgumentException|Invalid StartDate value. The StartDate can't be older than 90 days "
                "from today.")
    if end > now:
        return "|System.ArgumentException|Invalid EndDate value. The EndDate can't be in the future."
    return None


def decode_skiptoken(token: str) -> dict[str, Any]:
    """base64 (padded or not, standard or URL-safe) JSON -> dict; raises ValueError."""
    raw = token.strip()
    raw += "=" * (-len(raw) % 4)
    try:
        data = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
        obj = json.loads(data)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("undecodable") from exc
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    return obj


def encode_skiptoken(obj: dict[str, Any], poison: bool = False) -> str:
    if poison:  # Microsoft's bug (Elastic #18134): values JSON-encoded twice
        obj = {k: json.dumps(v) if k != "ResultSize" else v for k, v in obj.items()}
    return base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")


async def list_traces(state: SimState, request: Request, version: str, caller: Caller) -> Response:
    tenant = caller.tenant
    data = state.data[tenant.name]
    now = state.clock.now()
    now_us = to_us(now)
    prefer_unknown = "include-unknown-enum-members" in request.headers.get("prefer", "").lower()
    params = request.query_params

    pascal = version == "beta" and state.config.graph_beta_status == "pascal"
    strict_status = state.config.graph_status_filter == "strict"
    top = 1000
    if "$top" in params:
        try:
            top = int(params["$top"])
        except ValueError:
            top = -1
        if not 1 <= top <= 5000:
            return bad_request(state, request, "|System.ArgumentException|ResultSize is invalid")
    try:
        clauses = parse_clauses(params.get("$filter", ""))
    except FilterError as exc:
        return bad_request(state, request, f"Invalid filter clause: {exc}")
    start = end = None
    props: dict[str, Clause] = {}
    for c in clauses:
        prop = _PROPS.get(c.prop.lower())
        if prop is None:
            return bad_request(state, request, f"Invalid filter clause: Could not find a property named "
                                               f"'{c.prop}' on type 'microsoft.graph.exchangeMessageTrace'.")
        if prop == "receivedDateTime":
            if c.type == "string":  # OData v4 compares a DateTimeOffset with a bare literal, not a string
                return bad_request(state, request, "Invalid filter clause: A binary operator with incompatible "
                                   "types was detected. Found operand types 'Edm.DateTimeOffset' and "
                                   f"'Edm.String' for operator kind '{_OP_KINDS.get(c.op, c.op)}'.")
            try:
                if c.type or ("T" in c.value.upper() and not _ZONED.search(c.value)):
                    raise ValueError("datetime'...' (OData v3) or no time zone")  # no DateTimeOffset literal
                when = parse_ticks(c.value, round_up=c.op in ("ge", "gt"))
            except ValueError:
                return bad_request(state, request, f"Invalid filter clause: The DateTimeOffset text "
                                                   f"'{c.value}' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)"
                                                   "?(zzzzzz)?' and each field value is within valid range.")
            if c.op in ("ge", "gt"):
                start = when
            elif c.op in ("le", "lt"):
                end = when
            continue
        if c.op == "ne":
            continue  # accepted, ignored
        if c.op in ("contains", "startswith", "endswith") and prop != "subject":
            continue  # accepted, ignored
        if prop == "status" and strict_status and c.value not in STATUS_MEMBERS:
            return bad_request(state, request, f"Invalid filter clause: The string '{c.value}' is not a valid "
                                               "enumeration type constant.")
        props[prop] = c  # the last value per property wins
    after: tuple[int, str] | None = None
    token = params.get("$skiptoken")
    if token is not None:
        try:
            tok = decode_skiptoken(token)
        except ValueError:
            return bad_request(state, request, "|System.ArgumentException|The skip token is invalid.")
        for key in ("StartDate", "EndDate"):
            value = str(tok.get(key, ""))
            if value.startswith('"'):
                state.count("poisoned_tokens_rejected")
                return bad_request(state, request, (
                    f"Cannot process argument transformation on parameter '{key}'. Cannot convert value "
                    f"\"{value}\" to type \"System.DateTime\". Error: \"String was not recognized as a valid "
                    "DateTime.\""))
        rcpt = str(tok.get("StartingRecipientAddress") or "")
        if rcpt.startswith('"'):
            state.count("poisoned_tokens_rejected")
            return bad_request(state, request, "|System.ArgumentException|Invalid starting recipient address")
        try:
            start = parse_ticks(str(tok["StartDate"]))
            end = parse_ticks(str(tok["EndDate"]))
            top = int(tok.get("ResultSize") or top)
        except (KeyError, ValueError):
            return bad_request(state, request, "|System.ArgumentException|The skip token is invalid.")
        if not 1 <= top <= 5000:
            return bad_request(state, request, "|System.ArgumentException|ResultSize is invalid")
        if rcpt:
            after = (end, rcpt.lower())
    if start is None and end is None:
        end = now_us * TICKS_PER_US + TICKS_PER_US - 1
        start = (now_us - 48 * 3600 * US) * TICKS_PER_US
    elif start is None:
        return bad_request(state, request, f"{_ARG}StartDate is required when an EndDate is entered.")
    elif end is None:
        return bad_request(state, request, f"{_ARG}EndDate is required when a StartDate is entered.")
    problem = _window_checks(state, start // TICKS_PER_US, end // TICKS_PER_US, now_us)
    if problem:
        return bad_request(state, request, problem)
    hours = None
    if "id" in props:
        h = hour_of_trace_id(props["id"].value)
        hours = [h] if h is not None else []
    match = matcher(list(props.items()), "graph", now_us, prefer_unknown)
    rows = []
    more = False
    for row in data.iter_desc(start, end, now_us, state.horizon_us(now_us), after=after, match=match,
                              hours=hours):
        if len(rows) == top:
            more = True
            break
        rows.append(row)
    beta = version == "beta"
    body: dict[str, Any] = {
        "@odata.context": f"{state.graph_url}/{version}/$metadata#admin/exchange/tracing/messageTraces",
        "value": [graph_item(r, now_us, prefer_unknown, beta, pascal) for r in rows],
    }
    if more:
        last = rows[-1]
        tok_obj = {"StartDate": iso_ticks(start), "EndDate": iso_ticks(last.received_ticks),
                   "StartingRecipientAddress": last.recipient, "ResultSize": str(top)}
        poison = state.faults.chance("poison", request.url.query, last.trace_id, last.rcpt_lower)
        if poison:
            state.count("faults_poison")
            state.count("faults_injected")
        body["@odata.nextLink"] = _next_link(f"{state.graph_url}/{version}/admin/exchange/tracing/messageTraces",
                                             params.multi_items(), encode_skiptoken(tok_obj, poison))
    state.count("graph_rows", len(rows))
    await state.latency(len(rows))
    return Response(orjson.dumps(body), headers={"Content-Type": JSON_CT})


async def details(state: SimState, request: Request, version: str, caller: Caller, trace_id: str,
                  recipient: str) -> Response:
    """``messageTraces/{id}/getDetailsByRecipient(recipientAddress='...')``."""
    data = state.data[caller.tenant.name]
    now_us = to_us(state.clock.now())
    value: list[dict[str, Any]] = []
    horizon = state.horizon_us(now_us)
    found = False
    for row in data.find(trace_id, recipient):
        if row.visible_us > now_us or row.received_us < horizon:
            continue
        found = True
        for ev in row.events_at(now_us):
            value.append({
                "id": row.trace_id, "messageId": row.message_id, "dateTime": iso_short(ev.at_us),
                "event": ev.event, "action": ev.action, "description": ev.description,
                "data": _mep_data(row, ev.at_us),
            })
    if not found and state.config.graph_details_unknown == "404":
        return error(state, request, 404, "NotFound", "No message trace was found for the given id and "
                     "recipient address.")
    body: dict[str, Any] = {
        "@odata.context": f"{state.graph_url}/{version}/$metadata"
                          "#Collection(microsoft.graph.exchangeMessageTraceDetail)",
        "value": value,
    }
    page = state.config.graph_details_page
    if page:
        try:
            skip = int(request.query_params.get("$skiptoken", "0"))
        except ValueError:
            return bad_request(state, request, "|System.ArgumentException|The skip token is invalid.")
        if skip < 0:
            return bad_request(state, request, "|System.ArgumentException|The skip token is invalid.")
        body["value"] = value[skip: skip + page]
        if skip + page < len(value):
            raw_path = request.scope.get("raw_path") or quote(request.url.path, safe="/()'=@+:,$")
            path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else raw_path
            body["@odata.nextLink"] = _next_link(f"{state.graph_url}{path}", request.query_params.multi_items(),
                                                 str(skip + page))
    await state.latency(len(body["value"]))
    return JSONResponse(body, headers={"Content-Type": JSON_CT})


def _next_link(url: str, params: Iterable[tuple[str, str]], skiptoken: str) -> str:
    """``url`` with the request's query parameters and a new ``$skiptoken``, encoded as Graph writes it."""
    keep = [(k, v) for k, v in params if k != "$skiptoken"]
    keep.append(("$skiptoken", skiptoken))
    return f"{url}?" + urlencode(keep, quote_via=quote, safe="$'*@,:()")


def _mep_data(row: Any, at_us: int) -> str:
    return (f'<root><MEP Name="Connector" String="{"Outbound" if row.direction == "outbound" else "Default"}"/>'
            f'<MEP Name="MessageSize" Integer="{row.size}"/><MEP Name="Hour" Long="{at_us // HOUR_US}"/></root>')
