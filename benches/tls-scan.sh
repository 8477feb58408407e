#!/usr/bin/env bash
# TLS scan: starts farmgate with an HTTPS listener on a certificate made for the run (RSA 2048
# for "localhost", ECDSA P-256 for "ecdsa.localhost", both from a throwaway CA), scans it with
# sslyze (installed from PyPI into a venv under target/ when missing), and prints a summary:
# protocols accepted, cipher suites, the certificate served, and the vulnerability checks.
#
# Everything stays on loopback. Needs python3 (with venv), openssl and cargo.
#
# Environment:
#   TLS_SCAN_PROFILE   cargo profile of the farmgate binary: dev (default) or release
#   TLS_SCAN_JSON      where to keep sslyze's full JSON result (default target/tls-scan/sslyze.json)
#
# Usage: bash benches/tls-scan.sh
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PROFILE="${TLS_SCAN_PROFILE:-dev}"
OUT_DIR="$REPO_ROOT/target/tls-scan"
JSON_OUT="${TLS_SCAN_JSON:-$OUT_DIR/sslyze.json}"
VENV="$REPO_ROOT/target/tls-scan-venv"

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is needed"
command -v openssl >/dev/null || die "openssl is needed (to make the test certificates)"

# sslyze, in a venv of its own.
if [ ! -x "$VENV/bin/sslyze" ]; then
    log "installing sslyze into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet sslyze
fi

# farmgate.
log "building farmgate ($PROFILE)"
(cd "$REPO_ROOT" && cargo build --quiet --profile "$PROFILE" --bin farmgate)
case "$PROFILE" in
    dev) BIN="$REPO_ROOT/target/debug/farmgate" ;;
    *) BIN="$REPO_ROOT/target/$PROFILE/farmgate" ;;
esac

WORKDIR="$(mktemp -d)"
FARMGATE_PID=""
cleanup() {
    if [ -n "$FARMGATE_PID" ] && kill -0 "$FARMGATE_PID" 2>/dev/null; then
        kill "$FARMGATE_PID" 2>/dev/null || true
        wait "$FARMGATE_PID" 2>/dev/null || true
    fi
    rm -rf "$WORKDIR"
}
trap cleanup EXIT

# Certificates: a CA, an RSA leaf for localhost (the default) and an ECDSA leaf.
log "making certificates in $WORKDIR"
(
    cd "$WORKDIR"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
        -subj "/CN=farmgate scan CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' > rsa.ext
    openssl x509 -req -in rsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile rsa.ext -out rsa.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ec.key -out ec.csr \
        -subj "/CN=ecdsa.localhost" 2>/dev/null
    printf 'subjectAltName=DNS:ecdsa.localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' > ec.ext
    openssl x509 -req -in ec.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ec.ext -out ec.pem 2>/dev/null
    cat rsa.pem ca.pem > rsa-chain.pem
    cat ec.pem ca.pem > ec-chain.pem
)

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
PORT="$(free_port)"
MEMBER_PORT="$(free_port)"

cat > "$WORKDIR/farmgate.toml" <<EOF
[access_log]
format = "off"
[plugins]
dir = ""
cache_dir = ""
[[listeners]]
name = "secure"
bind = "127.0.0.1:$PORT"
[[listeners.certificates]]
cert = "rsa-chain.pem"
key = "rsa.key"
default = true
[[listeners.certificates]]
cert = "ec-chain.pem"
key = "ec.key"
[[rules]]
name = "scan"
public_names = ["*"]
farm = "scan"
hsts = true
[[farms]]
name = "scan"
members = [{ name = "member", host = "127.0.0.1", port = $MEMBER_PORT }]
[[sample_servers]]
name = "member"
bind = "127.0.0.1:$MEMBER_PORT"
EOF

log "starting farmgate on 127.0.0.1:$PORT"
"$BIN" --log-level warn run --config "$WORKDIR/farmgate.toml" > "$WORKDIR/farmgate.log" 2>&1 &
FARMGATE_PID=$!
for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$PORT)))" 2>/dev/null; then
        break
    fi
    kill -0 "$FARMGATE_PID" 2>/dev/null || { cat "$WORKDIR/farmgate.log" >&2; die "farmgate did not start"; }
    sleep 0.1
done

mkdir -p "$(dirname "$JSON_OUT")"
log "scanning localhost:$PORT (RSA certificate) and ecdsa.localhost (ECDSA certificate)"
rm -f "$JSON_OUT"
# Every check sslyze has, spelled out (with no check named it runs a default set).
"$VENV/bin/sslyze" --quiet --json_out="$JSON_OUT" \
    --certinfo --certinfo_ca_file="$WORKDIR/ca.pem" \
    --sslv2 --sslv3 --tlsv1 --tlsv1_1 --tlsv1_2 --tlsv1_3 \
    --heartbleed --openssl_ccs --robot --compression --reneg --fallback --ems \
    --resum --early_data --elliptic_curves --http_headers \
    "localhost:$PORT{127.0.0.1}" "ecdsa.localhost:$PORT{127.0.0.1}" >/dev/null \
    || [ -s "$JSON_OUT" ] || die "sslyze failed"

"$VENV/bin/python" - "$JSON_OUT" <<'PY'
import json, sys

data = json.load(open(sys.argv[1]))
PROTOCOLS = [
    ("ssl_2_0_cipher_suites", "SSL 2.0"),
    ("ssl_3_0_cipher_suites", "SSL 3.0"),
    ("tls_1_0_cipher_suites", "TLS 1.0"),
    ("tls_1_1_cipher_suites", "TLS 1.1"),
    ("tls_1_2_cipher_suites", "TLS 1.2"),
    ("tls_1_3_cipher_suites", "TLS 1.3"),
]

def result(cmds, name):
    r = cmds.get(name) or {}
    if r.get("status") != "COMPLETED":
        return None
    return r.get("result")

for server in data.get("server_scan_results", []):
    loc = server["server_location"]
    print(f"\n### {loc['hostname']}:{loc['port']}  (scan {server.get('scan_status')})")
    cmds = server.get("scan_result") or {}
    accepted = []
    print("protocols:")
    for key, label in PROTOCOLS:
        r = result(cmds, key)
        if r is None:
            print(f"  {label:8} not tested")
            continue
        suites = [s["cipher_suite"]["name"] for s in r.get("accepted_cipher_suites", [])]
        print(f"  {label:8} {'ACCEPTED' if suites else 'refused'}")
        if suites:
            accepted.append((label, suites))
    print("cipher suites accepted:")
    for label, suites in accepted:
        for s in suites:
            print(f"  {label:8} {s}")
    cert = result(cmds, "certificate_info")
    if cert:
        for d in cert.get("certificate_deployments", []):
            leaf = d["received_certificate_chain"][0]
            key = leaf.get("public_key", {})
            print("certificate:")
            print(f"  subject      {leaf.get('subject', {}).get('rfc4514_string')}")
            print(f"  issuer       {leaf.get('issuer', {}).get('rfc4514_string')}")
            print(f"  key          {key.get('algorithm')} {key.get('key_size')}")
            print(f"  signature    {leaf.get('signature_hash_algorithm', {}).get('name')}")
            print(f"  names        {leaf.get('subject_alternative_name', {}).get('dns_names')}")
            print(f"  chain sent   {len(d['received_certificate_chain'])} certificate(s), in order: {d.get('received_chain_has_valid_order')}")
            trusted = [p.get('trust_store', {}).get('name') for p in d.get('path_validation_results', []) if p.get('was_validation_successful')]
            print(f"  validates    against: {', '.join(n for n in trusted if n) or 'no store'}")
    print("checks:")
    checks = [
        ("heartbleed", lambda r: "VULNERABLE" if r["is_vulnerable_to_heartbleed"] else "not vulnerable"),
        ("openssl_ccs_injection", lambda r: "VULNERABLE" if r["is_vulnerable_to_ccs_injection"] else "not vulnerable"),
        ("robot", lambda r: r["robot_result"]),
        ("tls_compression", lambda r: "SUPPORTED (CRIME)" if r["supports_compression"] else "not supported"),
        ("session_renegotiation", lambda r: f"client-initiated: {'ACCEPTED' if r['is_vulnerable_to_client_renegotiation_dos'] else 'refused'}, secure renegotiation: {r['supports_secure_renegotiation']}"),
        ("tls_fallback_scsv", lambda r: f"downgrade protection: {r['supports_fallback_scsv']}"),
        ("tls_1_3_early_data", lambda r: f"0-RTT early data: {r['supports_early_data']}"),
        ("tls_extended_master_secret", lambda r: f"extended master secret: {r['supports_ems_extension']}"),
        ("elliptic_curves", lambda r: "groups: " + ", ".join(c["name"] for c in (r.get("supported_curves") or []))),
        ("session_resumption", lambda r: f"resumption: {r.get('session_id_resumption_result')}, tickets: {r.get('tls_ticket_resumption_result')}"),
        ("http_headers", lambda r: f"HSTS: {(r.get('strict_transport_security_header') or {}).get('max_age')}"),
    ]
    for name, fmt in checks:
        r = result(cmds, name)
        if r is None:
            print(f"  {name:22} not completed")
            continue
        try:
            print(f"  {name:22} {fmt(r)}")
        except (KeyError, TypeError) as e:
            print(f"  {name:22} (unexpected result shape: {e})")
PY
log "full result: $JSON_OUT"
