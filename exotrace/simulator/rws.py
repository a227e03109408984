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

from exotrace.model import LEGACY_FIELDS
from exotrace.simulator.data import TICKS_PER_US, US, from_us, iso7, iso_short, to_us
from exotrace.simulator.entra import Caller, check_bearer
from exotrace.simulator.odata import Clause, FilterError, parse_clauses, parse_datetime, parse_ticks
from exotrace.simulator.views import matcher, rws_item

if TYPE_CHECKING:
    from exotrace.simulator.app import SimState

NO_PERMISSION = {"ErrorCode": "", "Message": "No permission to access the report for the organization ."}
LIGHT_CT = "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
VERBOSE_CT = "application/json;odata=verbose;charset=utf-8"
ATOM_CT = "application/atom+xml;type=feed;charset=utf-8"
XML_CT = "application/xml;charset=utf-8"
THROTTLED = "Your recent queries have surpassed the permitted limit, please try again later."
RWS_VERSION = "2013-V1"
_SERVICE_PATH = "/ecp/ReportingWebService/Reporting.svc"
#: Properties of each report, in the order the service writes them.
REPORT_FIELDS = {
    "MessageTrace": LEGACY_FIELDS,
    "MessageTraceDetail": ("Organization", "MessageId", "MessageTraceId", "RecipientAddress", "SenderAddress",
                           "Date", "Event", "Action", "Detail", "Data", "StartDate", "EndDate", "Index"),
}
#: Filterable properties (RWS-MT lists every In/Out field; StartDate/EndDate are input-only).
_FIELDS = {f.lower(): f for f in ("StartDate", "EndDate", "SenderAddress", "RecipientAddress", "Status",
                                  "MessageId", "FromIP", "ToIP", "MessageTraceId", "Subject", "Organization",
                                  "Received", "Size")}
_TO_VIEW = {"SenderAddress": "senderAddress", "RecipientAddress": "recipientAddress", "Status": "status",
            "MessageId": "messageId", "FromIP": "fromIP", "ToIP": "toIP", "MessageTraceId": "id",
            "Subject": "subject", "Organization": "organization"}  # Received and Size: parsed first
_FUNCS = ("contains", "startswith", "endswith")
_DATE_RE = re.compile(r'"/Date\((-?\d+)\)/"')
#: IIS's page for a refused credential (captured from the service in the Basic-auth era; SEKOIA's fixture).
IIS_401 = (
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">'
    '\r\n<html xmlns="http://www.w3.org/1999/xhtml">\r\n<head>\r\n<meta http-equiv="Content-Type" '
    'content="text/html; charset=iso-8859-1"/>\r\n<title>401 - Unauthorized: Access is denied due to invalid '
    'credentials.</title>\r\n</head>\r\n<body>\r\n<div id="header"><h1>Server Error</h1></div>\r\n<div '
    'id="content">\r\n <div class="content-container"><fieldset>\r\n  <h2>401 - Unauthorized: Access is denied '
    'due to invalid credentials.</h2>\r\n  <h3>You do not have permission to view this directory or page using '
    'the credentials that you supplied.</h3>\r\n </fieldset></div>\r\n</div>\r\n</body>\r\n</html>\r\n')


def _headers(ct: str, light: bool = False) -> dict[str, str]:
    return {"Content-Type": ct, "DataServiceVersion": "3.0;" if light else "2.0;",
            "request-id": str(uuid.uuid4()),
            "X-RWS-Version": RWS_VERSION, "Cache-Control": "no-cache, no-store"}


def with_service_headers(response: Response) -> Response:
    """Every RWS answer, errors and auth failures too, carries ``request-id`` and ``X-RWS-Version``."""
    response.headers.setdefault("request-id", str(uuid.uuid4()))
    response.headers.setdefault("X-RWS-Version", RWS_VERSION)
    return response


def response_format(request: Request, default: str = "atom") -> str:
    """``verbose`` ($format=json or odata=verbose), ``light`` (Accept: application/json), ``atom``
    ($format=atom or an Atom/XML Accept), else ``default`` (``SimulatorConfig.rws_default_format``)."""
    fmt = request.query_params.get("$format", "").lower()
    accept = request.headers.get("accept", "").lower()
    if fmt == "json" or "odata=verbose" in accept:
        return "verbose"
    if fmt in ("atom", "xml"):
        return "atom"
    if "application/json" in accept:
        return "light"
    if "application/atom+xml" in accept or "application/xml" in accept:
        return "atom"
    return default


def odata_error(status: int, message: str, fmt: str, code: str = "", lang: str = "en-US",
                headers: dict[str, str] | None = None, light_ct: str = LIGHT_CT) -> Response:
    """An OData error in the response format: ``<m:error>`` (Atom), ``{"error": ...}`` (verbose) or
    ``{"odata.error": ...}`` (JSON light)."""
    extra = headers or {}
    if fmt == "atom":
        xml = ('<?xml version="1.0" encoding="utf-8" standalone="yes"?><m:error xmlns:m="http://schemas.microsoft'
               f'.com/ado/2007/08/dataservices/metadata"><m:code>{escape(code)}</m:code><m:message xml:lang="{lang}">'
               f"{escape(message)}</m:message></m:error>")
        return Response(xml, status_code=status, headers={**_headers(XML_CT), **extra})
    key = "error" if fmt == "verbose" else "odata.error"
    body = {key: {"code": code, "message": {"lang": lang, "value": message}}}
    ct = VERBOSE_CT if fmt == "verbose" else light_ct
    return JSONResponse(body, status_code=status, headers={**_headers(ct, light=fmt != "verbose"), **extra})


def state_format(state: SimState, request: Request) -> str:
    return response_format(request, state.config.rws_default_format)


def guard(state: SimState, request: Request, report: str) -> Caller | Response:
    """Bearer token, retirement, the directory role and the version header, in that order."""
    fmt = state_format(state, request)
    caller = check_bearer(state, request, "rws")
    if not isinstance(caller, Caller):
        state.count("rws_401")
        headers = {
            "WWW-Authenticate": 'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", '
                                'trusted_issuers="00000001-0000-0000-c000-000000000000@*", '
                                'token_types="app_asserted_user_v1 service_asserted_app_v1", error="invalid_token"',
            "x-ms-diagnostics": f'2000001;reason="{caller[2]}";error_category="invalid_token"'}
        style = state.config.rws_401_body
        if state.config.rws_bad_token_status == 403:
            state.count("rws_403_bad_token")
            return odata_error(403, "Access is denied due to invalid credentials.", fmt, code="Forbidden",
                               headers=headers, light_ct=state.config.rws_light_content_type)
        if style == "html":
            return Response(IIS_401, status_code=401, headers={**headers, "Content-Type": "text/html"})
        if style == "json":
            return odata_error(401, "Access is denied due to invalid credentials.", fmt, code="Unauthorized",
                               headers=headers, light_ct=state.config.rws_light_content_type)
        return Response(status_code=401, headers=headers)
    if caller.tenant.rws_retired or "retired" in state.scenarios:
        state.count("rws_retired")
        return odata_error(state.config.rws_retired_status, f"Resource not found for the segment '{report}'.",
                           fmt, light_ct=state.config.rws_light_content_type)
    if not caller.tenant.rws_role:
        state.count("rws_403")
        return JSONResponse(NO_PERMISSION, status_code=403)
    version = request.headers.get("x-rws-version") or request.query_params.get("rws-version")
    if version is not None and version.strip().upper() != RWS_VERSION:
        state.count("rws_400")
        return Response('<?xml version="1.0" encoding="utf-8"?><Error xmlns="http://schemas.microsoft.com/'
                        'exchange/reportingwebservice/2013"><Message>The version specified in the request is '
                        'unsupported.</Message></Error>', status_code=400, headers=_headers(XML_CT))
    return caller


def _verbose_json(obj: Any) -> bytes:
    """JSON with dates as ``"\\/Date(ms)\\/"`` on the wire, as WCF writes them."""
    text = orjson.dumps(obj).decode()
    return _DATE_RE.sub(r'"\\/Date(\1)\\/"', text).encode()


def _date_ms(us: int) -> str:
    return f"/Date({us // 1000})/"


def _select(params: Any, report: str) -> tuple[list[str] | None, str | None]:
    """``$select`` -> (property names in the service's order, or None for all; an error message)."""
    text = params.get("$select")
    if text is None or not text.strip() or text.strip() == "*":
        return None, None
    known = REPORT_FIELDS[report]
    names = [n.strip() for n in text.split(",")]
    for n in names:
        if n not in known:
            return None, (f"No property '{n}' exists in type 'TenantReporting.{report}' at position "
                          f"{text.find(n)}.")
    chosen = set(names)
    return [f for f in known if f in chosen], None


def _project(item: dict[str, Any], cols: list[str] | None) -> dict[str, Any]:
    return item if cols is None else {k: item[k] for k in cols}


async def message_trace(state: SimState, request: Request, caller: Caller, report: str) -> Response:
    params = request.query_params
    cfg = state.config
    fmt = state_format(state, request)
    verbose = fmt == "verbose"
    now_us = to_us(state.clock.now())

    def err(status: int, message: str, **kw: Any) -> Response:
        if status == 400:
            state.count("rws_400")
        return odata_error(status, message, fmt, light_ct=cfg.rws_light_content_type, **kw)

    if "$orderby" in params and cfg.rws_orderby == "reject":
        return err(400, "The query parameter '$orderby' is not supported by this report.")
    cols, problem = _select(params, report)
    if problem:
        return err(400, problem)
    lenient = cfg.rws_filter == "lenient"
    try:
        clauses = parse_clauses(params.get("$filter", ""), allow_or=lenient)
    except FilterError as exc:
        return err(400, str(exc))
    fields: dict[str, Clause] = {}
    for c in clauses:
        name = _FIELDS.get(c.prop.lower())
        if name is None or (not lenient and c.prop != name):  # WCF Data Services: names are case-sensitive
            return err(400, f"No property '{c.prop}' exists in type 'TenantReporting.{report}'.")
        if not lenient and name in ("StartDate", "EndDate", "Received") and c.type != "datetime":
            return err(400, f"Operator '{c.op}' incompatible with operand types 'System.DateTime' and "
                            f"'{'System.String' if c.type == 'string' else 'System.Int32'}'.")
        if lenient and (c.op == "ne" or (c.op in _FUNCS and name != "Subject")):
            continue  # accepted, ignored (as Graph does)
        fields[name] = c  # the last value per property wins
    start = end = None
    start_t, end_t = 0, None  # the bounds in 100 ns ticks, as rows are compared
    try:
        if "StartDate" in fields:
            start = parse_datetime(fields["StartDate"].value, round_up=True)
            start_t = parse_ticks(fields["StartDate"].value, round_up=True)
        if "EndDate" in fields:
            end = parse_datetime(fields["EndDate"].value)
            end_t = parse_ticks(fields["EndDate"].value)
    except ValueError as exc:
        return err(400, f"Unrecognized 'Edm.DateTime' literal: {exc}")
    if (start is None) != (end is None):
        return err(400, "If you supply EndDate you must also supply StartDate, and vice versa.")
    oldest = now_us - cfg.rws_max_age_days * 86400 * US
    if start is None or end is None:
        end, end_t = now_us, None
        start = max(end - 48 * 3600 * US, oldest)
    if start < oldest:
        if cfg.rws_old_start == "reject":
            return err(400, f"Invalid StartDate value. The StartDate can't be older than "
                            f"{cfg.rws_max_age_days} days from today.")
        start = oldest
    if end < start:
        return err(400, "Invalid date range: EndDate must be later than StartDate.")
    view: list[tuple[str, Clause]] = []
    for k, c in fields.items():
        if k == "Received":
            try:
                us = parse_datetime(c.value)
            except ValueError as exc:
                return err(400, f"Unrecognized 'Edm.DateTime' literal: {exc}")
            view.append(("received", Clause(c.prop, c.op, str(us))))
        elif k == "Size":
            try:
                view.append(("size", Clause(c.prop, c.op, str(int(c.value)))))
            except ValueError:
                return err(400, f"Unrecognized 'Edm.Int32' literal '{c.value}' in '{params.get('$filter')}'.")
        elif k in _TO_VIEW:
            view.append((_TO_VIEW[k], c))
    max_page = cfg.rws_max_page
    top = max_page
    top_given = "$top" in params
    if top_given:
        try:
            top = int(params["$top"])
        except ValueError:
            return err(400, f"Invalid value '{params['$top']}' for $top query option found. "
                            "The $top query option requires a non-negative integer value.")
        if top < 0:
            return err(400, "The $top query option requires a non-negative integer value.")
        if top > max_page and cfg.rws_top_over_max == "reject":
            return err(400, f"The limit of '{max_page}' for top query has been exceeded. The value from the "
                            f"incoming request is '{top}'.")
    page = min(top, max_page)
    skip = 0
    if "$skiptoken" in params:
        try:
            skip = int(params["$skiptoken"])
        except ValueError:
            return err(400, "Skip token is not valid.")
        if skip >= 999999:
            state.count("rws_500")
            # the body captured from the service (msapi.md 2.3) has an empty lang
            return err(500, "An error has occurred on the server.", code="UnknownError", lang="")
        if skip < 0:
            return err(400, "Skip token is not valid.")
    if report == "MessageTraceDetail":
        return _detail(state, caller, fields, start, end, now_us, fmt, cols)
    data = state.data[caller.tenant.name]
    match = matcher(view, "rws", now_us, True)
    rows, more, i = [], False, 0
    if start_t // TICKS_PER_US < start - 1 or not start_t:  # no StartDate, or one clamped to the oldest day
        start_t = start * TICKS_PER_US
    end_t = end * TICKS_PER_US + TICKS_PER_US - 1 if end_t is None else end_t
    for row in data.iter_desc(start_t, end_t, now_us, state.horizon_us(now_us), match=match):
        if page == 0:  # $top=0: an empty page, and no link that would loop
            break
        if i >= skip:
            if len(rows) == page:
                more = True
                break
            rows.append(row)
        i += 1
    first_index = skip if cfg.rws_index == "absolute" else 0
    items = [rws_item(r, now_us, start, end, first_index + n, cfg.rws_received_z) for n, r in enumerate(rows)]
    state.count("rws_rows", len(items))
    await state.latency(len(items))
    next_skip = skip + len(rows)
    base = f"{state.base_url}{_SERVICE_PATH}"
    query = _next_query(params, start, end, top if top_given and cfg.rws_echo_top else None, cols, next_skip)
    if fmt == "atom":
        next_url = f"{base}/MessageTrace?{query}" if more else None
        body_atom = atom_feed(base, "MessageTrace", [_project(it, cols) for it in items], next_url, first_index)
        return Response(body_atom, headers=_headers(ATOM_CT))
    if verbose:
        results = []
        for n, (it, r) in enumerate(zip(items, rows, strict=True)):
            uri = f"{base}/MessageTrace({first_index + n})"
            it["Received"] = _date_ms(r.received_us)
            it["StartDate"], it["EndDate"] = _date_ms(start), _date_ms(end)
            results.append({"__metadata": {"id": uri, "uri": uri, "type": "TenantReporting.MessageTrace"},
                            **_project(it, cols)})
        d: dict[str, Any] = {"results": results}
        if more and cfg.rws_verbose_next != "none":
            prefix = base if cfg.rws_verbose_next == "absolute" else "../../reportingwebservice/reporting.svc"
            d["__next"] = f"{prefix}/MessageTrace?$format=json&{query}"
        return Response(_verbose_json({"d": d}), headers=_headers(VERBOSE_CT))
    body: dict[str, Any] = {"odata.metadata": f"{base}/$metadata#MessageTrace",
                            "value": [_project(it, cols) for it in items]}
    if more:
        body["odata.nextLink"] = f"../../reportingwebservice/reporting.svc/MessageTrace?{query}"
    return Response(orjson.dumps(body), headers=_headers(cfg.rws_light_content_type, light=True))


def _next_query(params: Any, start: int, end: int, top: int | None, cols: list[str] | None, skip: int) -> str:
    """The query of a next link: the filter as the service re-emits it, ``$select``, ``$orderby``, ``$top``
    (when echoed) and the next ``$skiptoken``."""
    out = "$filter=" + quote(_echo_filter(params.get("$filter", ""), start, end), safe="'")
    if cols is not None:
        out += "&$select=" + quote(",".join(cols), safe=",")
    if "$orderby" in params:
        out += "&$orderby=" + quote(params["$orderby"], safe=",")
    if top is not None:
        out += f"&$top={top}"
    return out + f"&$skiptoken={skip}"


def _echo_filter(original: str, start: int, end: int) -> str:
    """The filter as the service re-emits it: capital ``DateTime'...'`` literals."""
    if "startdate" not in original.lower():
        original = (f"StartDate eq DateTime'{iso_short(start)}' and EndDate eq DateTime'{iso_short(end)}'"
                    + (f" and {original}" if original.strip() else ""))
    return re.sub(r"\bdatetime'", "DateTime'", original, flags=re.IGNORECASE)


def _detail(state: SimState, caller: Caller, fields: dict[str, Clause], start: int, end: int,
            now_us: int, fmt: str, cols: list[str] | None) -> Response:
    verbose = fmt == "verbose"
    light_ct = state.config.rws_light_content_type
    if "MessageTraceId" not in fields or "RecipientAddress" not in fields:
        state.count("rws_400")
        return odata_error(400, "MessageTraceId and RecipientAddress are required to query MessageTraceDetail.",
                           fmt, light_ct=light_ct)
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
    out = [_project(it, cols) for it in out]
    if fmt == "atom":
        feed = atom_feed(f"{state.base_url}{_SERVICE_PATH}", "MessageTraceDetail", out, None, 0)
        return Response(feed, headers=_headers(ATOM_CT))
    if verbose:
        return Response(_verbose_json({"d": {"results": out}}), headers=_headers(VERBOSE_CT))
    body = {"odata.metadata": f"{state.base_url}{_SERVICE_PATH}/$metadata#MessageTraceDetail", "value": out}
    return Response(json.dumps(body, ensure_ascii=False).encode(), headers=_headers(light_ct, light=True))


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
