"""Many tenants with broken ones, configuration errors, secrets never leaked."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from collect_helpers import check_complete, collect, run_cli, write_config

from exotrace.config import load_config, parse_config
from exotrace.errors import ConfigError
from exotrace.net import redact, register_secret
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator


def test_many_tenants_one_broken_each_way(tmp_path: Path) -> None:
    tenants = [SimTenant.default("contoso", 4), SimTenant.default("northwind", 4),
               SimTenant.default("fabrikam", 4, graph_permission=False),
               SimTenant.default("adatum", 4, service_principal=False),
               SimTenant.default("litware", 4, secret_expired=True)]
    cfg = SimulatorConfig(seed=4, scenario="throttle,flaky", speed=600.0, rows_per_day=800, tenants=tenants)
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector="page_size = 200")
        reports, t0, t_end = collect(sim, path, since=timedelta(days=2))
        by = {r.name: r for r in reports}
        for good in ("contoso", "northwind"):
            assert by[good].ok, by[good].error
            check_complete(sim, tmp_path / "archive.db", sim.tenant(good), t0, t_end)
        assert not by["fabrikam"].ok and by["fabrikam"].exit_code == 3
        assert "ExchangeMessageTrace.Read.All" in by["fabrikam"].error
        assert "New-MgServicePrincipal -AppId 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373" in by["adatum"].error
        assert "7000222" in by["litware"].error or "expired" in by["litware"].error
        # the CLI reports the same through its exit code and summary, and `status` shows the error
        res = run_cli(sim, "collect", "--config", str(path), "--once", "--no-progress")
        assert res.returncode == 3, res.stderr[-2000:]
        assert "fabrikam: FAILED" in res.stderr and "contoso: ok" in res.stderr
        st = run_cli(sim, "status", "--config", str(path), "--json")
        assert st.returncode == 0, st.stderr
        assert '"last_error"' in st.stdout and "ExchangeMessageTrace.Read.All" in st.stdout
        archive_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("archive.db*"))
        logs = res.stderr + st.stdout + st.stderr
        for t in tenants:
            assert t.client_secret not in logs
            assert t.client_secret.encode() not in archive_bytes


def _cfg(tmp_path: Path, tenant: str, top: str = "") -> Path:
    p = tmp_path / "c.toml"
    p.write_text(f'{top}\n[[tenant]]\nname = "x"\ntenant_id = "t"\nclient_id = "c"\n{tenant}\n')
    return p


@pytest.mark.parametrize(("tenant", "top", "needle"), [
    ('client_secret = "abc~123secretvalue"', "", "env:EXOTRACE_SECRET"),
    ('client_secret = "env:EXOTRACE_NOPE_NOT_SET"', "", "EXOTRACE_NOPE_NOT_SET is not set"),
    ('client_secret = "file:/nonexistent/secret"', "", "cannot read secret file"),
    ('client_secret = "env:HOME"\nclud = "gcc"', "", "did you mean 'cloud'"),
    ('client_secret = "env:HOME"\ncloud = "gcchigh"\napi = "graph"', "", 'api = "rws"'),
    ('client_secret = "env:HOME"\ncloud = "mars"', "", "cloud"),
    ('client_secret = "env:HOME"\napi = "ews"', "", "api"),
    ('client_secret = "env:HOME"', "[collector]\nquota = 150", "100 requests per 5 minutes"),
    ('client_secret = "env:HOME"', '[collector]\nwindow = "soon"', "not a duration"),
    ('client_secret = "env:HOME"', '[collector]\nmax_window = "11d"', "10d"),
    ("", "", "a credential is required"),
    ('client_secret = "env:HOME"\ncertificate = "x.pem"', "", "not both"),
    ('certificate = "missing.pem"', "", "not found"),
])
def test_config_errors_name_key_and_fix(tmp_path: Path, tenant: str, top: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_cfg(tmp_path, tenant, top))
    assert needle in str(info.value)
    assert "abc~123secretvalue" not in str(info.value)


def test_config_cli_exit_code_2_no_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = _cfg(tmp_path, 'client_secret = "inline-secret-value"')
    res = subprocess.run([sys.executable, "-m", "exotrace", "collect", "--config", str(p), "--once"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "Error:" in res.stderr and "Traceback" not in res.stderr
    assert "inline-secret-value" not in res.stderr
    missing = subprocess.run([sys.executable, "-m", "exotrace", "status", "--config", str(tmp_path / "no.toml")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "exotrace init" in missing.stderr


def test_init_template_loads(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from exotrace.cli.collect import init

    target = tmp_path / "exotrace.toml"
    res = CliRunner().invoke(init, [str(target)])
    assert res.exit_code == 0, res.output
    os.environ["EXOTRACE_SECRET"] = "s3cr3t-value"
    cfg = load_config(target)
    assert cfg.tenants[0].api == "graph" and cfg.settings.quota == 90
    text = target.read_text()
    from exotrace.config import _SETTING_KEYS

    for key in _SETTING_KEYS:  # every [collector] key is in the template, with its default
        assert f"\n{key} = " in text or f"\n# {key} = " in text, key
    assert CliRunner().invoke(init, [str(target)]).exit_code == 2


def test_defaults_and_clouds(tmp_path: Path) -> None:
    os.environ["EXOTRACE_T_SECRET"] = "x" * 20
    base = {"name": "a", "tenant_id": "t", "client_id": "c", "client_secret": "env:EXOTRACE_T_SECRET"}
    cfg = parse_config({"tenant": [base, {**base, "name": "b", "cloud": "gcchigh"},
                                   {**base, "name": "c", "cloud": "gcc"}, {**base, "name": "d", "cloud": "dod"},
                                   {**base, "name": "e", "cloud": "china"}]}, base=tmp_path)
    a, b, c, d, e = cfg.tenants
    assert a.api == "graph" and a.page_size == 5000 and a.api_scope == "https://graph.microsoft.com/.default"
    assert b.api == "rws" and b.page_size == 2000 and b.login_url == "https://login.microsoftonline.us"
    # Graph message trace is served by Graph's global service (which GCC uses): graph there, rws elsewhere
    assert c.api == "graph" and c.graph_url == "https://graph.microsoft.com"
    assert d.api == "rws" and e.api == "rws" and e.login_url == "https://login.chinacloudapi.cn"
    assert "x" * 20 not in repr(a)


def test_redaction() -> None:
    register_secret("Zq8Q~verysecretvalue123")
    text = ("Authorization: Bearer eyJhbGciOi.eyJzdWIiOiIx.sig client_secret=Zq8Q~verysecretvalue123&x=1 "
            '{"access_token":"abcdef123456"}')
    out = redact(text)
    assert "verysecret" not in out and "eyJhbGciOi" not in out and "abcdef123456" not in out


def test_certificate_pem_and_pfx(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    with start_simulator(SimulatorConfig(seed=8, speed=600.0, rows_per_day=300,
                                         tenants=[SimTenant.default("contoso", 8)])) as sim:
        t = sim.tenants[0]
        path = write_config(sim, tmp_path)
        pem_cfg = path.read_text().replace('client_secret = "env:EXOTRACE_TEST_SECRET_CONTOSO"',
                                           f'certificate = "{t.bundle_pem}"')
        path.write_text(pem_cfg)
        reports, _, _ = collect(sim, path, since=timedelta(hours=6))
        assert reports[0].ok and reports[0].rows > 0, reports[0].error
        key = serialization.load_pem_private_key(Path(t.key_pem).read_bytes(), None)
        cert = x509.load_pem_x509_certificate(Path(t.cert_pem).read_bytes())
        pfx = tmp_path / "app.pfx"
        pfx.write_bytes(pkcs12.serialize_key_and_certificates(
            b"app", key, cert, None, serialization.BestAvailableEncryption(b"pfx-pass-123")))
        os.environ["EXOTRACE_TEST_PFX_PW"] = "pfx-pass-123"
        path.write_text(pem_cfg.replace(f'certificate = "{t.bundle_pem}"',
                                        f'certificate = "{pfx}"\ncertificate_password = "env:EXOTRACE_TEST_PFX_PW"'))
        reports, _, _ = collect(sim, path, since=timedelta(hours=6))
        assert reports[0].ok, reports[0].error
        os.environ["EXOTRACE_TEST_PFX_PW"] = "wrong"
        with pytest.raises(ConfigError, match="certificate"):
            collect(sim, path, since=timedelta(hours=6))


def test_normalize_table_geoip_and_original(tmp_path: Path) -> None:
    geo = Path(__file__).parent.parent / "data" / "geoip"
    with start_simulator(SimulatorConfig(seed=12, speed=600.0, rows_per_day=2000,
                                         tenants=[SimTenant.default("contoso", 12)])) as sim:
        path = write_config(sim, tmp_path)
        path.write_text(path.read_text() + f'\n[normalize]\ngeoip_dir = "{geo}"\npreserve_original = true\n')
        reports, _, _ = collect(sim, path, since=timedelta(days=1))
        assert reports[0].ok, reports[0].error
    from exotrace.archive import Archive

    with Archive.open(tmp_path / "archive.db") as arch:
        docs = [r["doc"] for r in arch.rows_since(0, 100000)]
    assert docs and all("original" in d["event"] for d in docs)
    assert any("geo" in (d.get("source") or {}) for d in docs)
    with pytest.raises(ConfigError, match="normalize.geoip_dir"):
        path.write_text(path.read_text().replace(str(geo), str(tmp_path / "nope")))
        load_config(path)


def test_proxy_credentials_come_from_a_reference_never_inline(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match='proxy = "env:EXOTRACE_PROXY"') as info:
        load_config(_cfg(tmp_path, 'client_secret = "env:HOME"\nproxy = "http://u:ProxyPw-1@proxy:3128"', ""))
    assert "ProxyPw-1" not in str(info.value)
    with pytest.raises(ConfigError, match="credentials are not accepted inline"):
        load_config(_cfg(tmp_path, 'client_secret = "env:HOME"\ngraph_url = "https://u:p@graph.example"', ""))
    monkeypatch.setenv("EXO_TEST_PROXY", "http://u:ProxyPw-2@proxy:3128")
    cfg = load_config(_cfg(tmp_path, 'client_secret = "env:HOME"\nproxy = "env:EXO_TEST_PROXY"', ""))
    assert cfg.tenants[0].proxy == "http://u:ProxyPw-2@proxy:3128"
    assert "ProxyPw-2" not in repr(cfg)
    shown = redact("ProxyError: cannot connect to http://u:ProxyPw-2@proxy:3128 (password ProxyPw-2)")
    assert "ProxyPw-2" not in shown and "u:" not in shown


def test_redaction_of_credentials_in_any_url() -> None:
    assert redact("GET https://bob:Hunter2@intake.example/x failed") == "GET https://[REDACTED]@intake.example/x failed"
