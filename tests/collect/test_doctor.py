"""`exotrace doctor` against the simulator: each broken flag gives its exact fix and exit code."""

from __future__ import annotations

from pathlib import Path

from collect_helpers import run_cli, write_config

from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator


def sections(text: str) -> dict[str, str]:
    """Doctor output split per tenant (a tenant's header line is not indented)."""
    out: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line and not line.startswith(" ") and not line.startswith(("all checks", "some checks")):
            current = line.strip()
            out[current] = ""
        elif current:
            out[current] += line + "\n"
    return out


def test_doctor_graph_tenants(tmp_path: Path) -> None:
    tenants = [SimTenant.default("contoso"), SimTenant.default("fabrikam", graph_permission=False),
               SimTenant.default("adatum", service_principal=False),
               SimTenant.default("litware", secret_expired=True)]
    with start_simulator(SimulatorConfig(seed=1, speed=60.0, tenants=tenants)) as sim:
        path = write_config(sim, tmp_path)
        good = run_cli(sim, "doctor", "--config", str(path), "--tenant", "contoso")
        assert good.returncode == 0, good.stderr
        assert "roles=['ExchangeMessageTrace.Read.All']" in good.stderr
        assert f"tid={sim.tenants[0].tenant_id}" in good.stderr and "clock skew" in good.stderr
        res = run_cli(sim, "doctor", "--config", str(path))
        out = res.stderr
    assert res.returncode == 3, out
    sec = sections(out)
    fab = sec["fabrikam"]
    assert "FAIL permission" in fab and "ExchangeMessageTrace.Read.All" in fab and "Grant admin consent" in fab
    ada = " ".join(sec["adatum"].split())
    # the service's own 401 text, then the fix
    assert "FAIL Graph service principal and list: tenant adatum: Graph answered 401: Unauthorized: Service " \
        "principal-less Authentication failed: the service principal for App ID " \
        "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373 was not found." in ada
    assert "fix: create the Transport Data Platform service principal in the tenant: `New-MgServicePrincipal " \
        "-AppId 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373`" in ada
    lit = sec["litware"]
    assert "AADSTS7000222" in lit and "create a new secret" in lit
    for t in tenants:
        assert t.client_secret not in out


def test_doctor_rws_role(tmp_path: Path) -> None:
    tenants = [SimTenant.default("contoso"), SimTenant.default("northwind", rws_role=False)]
    with start_simulator(SimulatorConfig(seed=1, speed=60.0, tenants=tenants)) as sim:
        path = write_config(sim, tmp_path, api="rws")
        res = run_cli(sim, "doctor", "--config", str(path))
    assert res.returncode == 3, res.stderr
    nw = sections(res.stderr)["northwind"]
    assert "No permission to access the report" in nw and "Global Reader" in nw
    assert "ReportingWebService.Read.All granted" in sections(res.stderr)["contoso"]


def test_doctor_unreachable(tmp_path: Path) -> None:
    with start_simulator(SimulatorConfig(seed=1, speed=60.0)) as sim:
        path = write_config(sim, tmp_path)
        text = path.read_text().replace(sim.graph_url, "https://127.0.0.1:9")
        text = text.replace('login_url = "https://127.0.0.1:9"', f'login_url = "{sim.login_url}"')
        path.write_text(text)
        res = run_cli(sim, "doctor", "--config", str(path))
    assert res.returncode == 4, res.stderr
    assert "FAIL reach API endpoint" in res.stderr


def test_doctor_unreachable_sign_in_endpoint_is_told_as_such(tmp_path: Path) -> None:
    with start_simulator(SimulatorConfig(seed=1, speed=60.0)) as sim:
        path = write_config(sim, tmp_path)
        path.write_text(path.read_text().replace(sim.login_url, "https://127.0.0.1:9"))
        res = run_cli(sim, "doctor", "--config", str(path))
    assert res.returncode == 4, res.stderr
    assert "the sign-in endpoint https://127.0.0.1:9 did not answer" in " ".join(res.stderr.split())
    assert "AADSTS" not in res.stderr
