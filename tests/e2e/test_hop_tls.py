"""The router → cell hop over TLS: cells serve only HTTPS and the router checks their certificate.

A private CA (as cert-manager would run one) signs each cell's certificate for 127.0.0.1; the router trusts
that CA alone for its cells. Traffic flows through; a cell's plain-HTTP port does not exist; and a router
that does not trust the CA refuses to talk to the cell (503) instead of sending anything in clear or to an
impostor.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import Admin, Stack, problem, until
from tests.services import StorePostgres


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (cert, key, ca) PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("relay test CA")).issuer_name(_name("relay test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("cell")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "cell.pem", directory / "cell.key", directory / "ca.pem"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].chmod(0o600)
    return paths


def test_the_hop_is_https_and_the_router_checks_the_cell(pg: StorePostgres, scratch: Path) -> None:
    cert, key, ca = make_pki(scratch / "tls" / "pki")
    stack = Stack(pg, scratch, "tls", cell_tls=(cert, key, ca))
    try:
        topo = stack.dev.topology
        assert all(c["url"].startswith("https://127.0.0.1:") for c in topo["cells"].values()), topo["cells"]
        with httpx.Client(base_url=topo["router"]["url"], timeout=30, trust_env=False) as router:
            admin = Admin(router)  # provisioning crossed the hop (httpx, control calls)
            project = admin.project("eu-west")
            key_ = admin.key(project, ["ingest"])
            r = router.post("/v1/ingest/interactions", headers=key_["h"],  # the proxy's hot path (router.upstream)
                            json={"type": "bug", "content": {"text": "over tls"}})
            assert r.status_code == 201 and r.headers["x-relay-region"] == "eu-west", r.text
            listed = router.get(f"/v1/projects/{project['id']}/interactions", headers=admin.h).json()["data"]
            assert [i["content"]["text"] for i in listed] == ["over tls"]
            regions = {x["name"]: x["status"] for x in router.get("/v1/regions").json()["data"]}
            assert regions == {"us-west": "ok", "eu-west": "ok"}, regions
        cell = topo["cells"]["eu-west"]["url"]
        with pytest.raises(httpx.TransportError):  # no plain-HTTP door next to the TLS one
            httpx.get(cell.replace("https://", "http://") + "/healthz", timeout=5, trust_env=False)
        with pytest.raises(httpx.ConnectError):  # and the certificate means nothing without the CA
            httpx.get(cell + "/healthz", timeout=5, trust_env=False)
        trusted = ssl.create_default_context(cafile=ca)
        assert httpx.get(cell + "/healthz", timeout=5, trust_env=False, verify=trusted).status_code == 200

        # The same router made to trust another CA: it refuses to talk to the cells (an impostor's, as far as
        # it can tell), answering 503, rather than sending anything to them.
        _, _, other_ca = make_pki(scratch / "tls" / "other")
        part = stack.dev.part("router")
        cells = json.loads(part.env["RELAY_CELLS"])
        part.env["RELAY_CELLS"] = json.dumps({r: {**c, "ca_file": str(other_ca)} for r, c in cells.items()})
        stack.dev.restart("router")
        url = topo["router"]["url"]
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as router:
            until(lambda: _answers(router), 60, "router back")
            r = router.post("/v1/projects", json={"name": "p", "region": "eu-west"}, headers=admin.h)
            assert problem(r, 503)["detail"].startswith("project recorded; region eu-west is unreachable")
            r = router.post("/v1/ingest/interactions", headers=key_["h"], json={"type": "bug", "content": {}})
            assert problem(r, 503)["detail"] == "region eu-west did not answer"
    finally:
        stack.close()


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False
