// An independent TLS 1.3 peer for the interop tests: Node.js's tls module (Node >= 24 on OpenSSL 3.5,
// which signs and verifies ML-DSA and offers X25519MLKEM768 by default), as a mutual-TLS client or echo
// server. Every handshake is reported as one JSON line on stdout:
//   {"ok":true,"version":"TLSv1.3","group":"X25519MLKEM768","peerSignatureAlgorithm":"ML-DSA-65",...}
//
//   node peer.mjs server --cert tls.crt --key tls.key --ca ca.crt [--count N]   (prints {"listening":PORT})
//   node peer.mjs client --connect HOST:PORT --cert tls.crt --key tls.key --ca ca.crt [--servername NAME]
//   node peer.mjs key --key tls.key --cert tls.crt   (loads the key, signs, verifies with the certificate)
// --cert and --key repeat (server and client): one pair per key type, e.g. a dual certificate's ML-DSA tls.crt
// and ECDSA tls-ecdsa.crt; OpenSSL presents the one the peer can verify. Reports name the certificate this
// side presented (localKeyAlgorithm) and the peer's (peerKeyAlgorithm, signing with peerSignatureScheme).
import { readFileSync } from "node:fs";
import crypto from "node:crypto";
import tls from "node:tls";
import { parseArgs } from "node:util";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    cert: { type: "string", multiple: true },
    key: { type: "string", multiple: true },
    ca: { type: "string" },
    connect: { type: "string" },
    servername: { type: "string" },
    count: { type: "string", default: "0" },
  },
});

const emit = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");

// A certificate's key as the operator names it: ML-DSA-65, ECDSA-P256, RSA-2048, Ed25519.
function keyLabel(x509) {
  if (!x509) return null;
  const key = x509.publicKey;
  const type = key.asymmetricKeyType;
  if (type.startsWith("ml-dsa-")) return `ML-DSA-${type.slice(7)}`;
  if (type === "ec") {
    const curves = { prime256v1: 256, secp384r1: 384, secp521r1: 521 };
    return `ECDSA-P${curves[key.asymmetricKeyDetails.namedCurve] || key.asymmetricKeyDetails.namedCurve}`;
  }
  if (type === "rsa") return `RSA-${key.asymmetricKeyDetails.modulusLength}`;
  if (type === "ed25519") return "Ed25519";
  return type;
}

// The TLS 1.3 signature scheme (IANA name) a certificate's key signs CertificateVerify with: one per
// ML-DSA parameter set, ECDSA curve and EdDSA key; RSA keys sign with RSA-PSS (hash negotiated).
function scheme(label) {
  if (!label) return null;
  if (label.startsWith("ML-DSA-")) return `mldsa${label.slice(7)}`;
  const ecdsa = {
    "ECDSA-P256": "ecdsa_secp256r1_sha256",
    "ECDSA-P384": "ecdsa_secp384r1_sha384",
    "ECDSA-P521": "ecdsa_secp521r1_sha512",
  };
  if (label in ecdsa) return ecdsa[label];
  return label === "Ed25519" ? "ed25519" : "rsa_pss_rsae_*";
}

function describe(socket) {
  const peer = socket.getPeerX509Certificate();
  const chain = [];
  for (let c = socket.getPeerCertificate(true), seen = new Set(); c && c.raw && !seen.has(c.fingerprint256); c = c.issuerCertificate) {
    seen.add(c.fingerprint256);
    chain.push(c.subject ? Object.entries(c.subject).map(([k, v]) => `${k}=${v}`).join(",") : "");
  }
  const eph = socket.getEphemeralKeyInfo ? socket.getEphemeralKeyInfo() : null;
  return {
    ok: true,
    version: socket.getProtocol(),
    cipher: socket.getCipher().standardName,
    group: (eph && eph.name) || null,
    peerChain: chain,
    peerSignatureAlgorithm: peer ? peer.signatureAlgorithm : null,
    peerKey: peer ? peer.publicKey.asymmetricKeyType : null,
    peerKeyAlgorithm: keyLabel(peer),
    peerSignatureScheme: scheme(keyLabel(peer)),
    localKeyAlgorithm: keyLabel(socket.getX509Certificate ? socket.getX509Certificate() : null),
    sharedSigalgs: socket.getSharedSigalgs ? socket.getSharedSigalgs() : null,
  };
}

function options() {
  return {
    cert: values.cert.map((f) => readFileSync(f)),
    key: values.key.map((f) => readFileSync(f)),
    ca: readFileSync(values.ca),
    minVersion: "TLSv1.3",
  };
}

const mode = positionals[0];
if (mode === "client") {
  const [host, port] = [values.connect.slice(0, values.connect.lastIndexOf(":")), Number(values.connect.slice(values.connect.lastIndexOf(":") + 1))];
  let report = null;
  const socket = tls.connect({ ...options(), host, port, servername: values.servername || undefined, timeout: 5000 }, () => {
    report = describe(socket);
    socket.write("ping\n");
  });
  socket.on("data", (data) => {
    report.echo = data.toString();
    emit(report);
    socket.end();
    process.exitCode = 0;
  });
  socket.on("timeout", () => socket.destroy(new Error("timed out")));
  socket.on("error", (err) => {
    emit({ ...(report || {}), ok: false, error: `${err.code || ""} ${err.message}`.trim() });
    process.exitCode = 1;
  });
  socket.on("close", () => {
    if (report && report.echo === undefined && process.exitCode === undefined) {
      emit({ ...report, ok: false, error: "the server closed the connection without answering" });
      process.exitCode = 1;
    }
  });
} else if (mode === "server") {
  const limit = Number(values.count);
  let served = 0;
  const done = () => { if (limit && ++served >= limit) server.close(); };
  const server = tls.createServer({ ...options(), requestCert: true, rejectUnauthorized: true }, (socket) => {
    const report = describe(socket);
    socket.setTimeout(5000, () => socket.destroy());
    socket.once("data", (data) => {
      socket.end(data);
      emit({ ...report, echo: data.toString() });
      done();
    });
  });
  server.on("tlsClientError", (err) => {
    emit({ ok: false, error: `${err.code || ""} ${err.message}`.trim() });
    done();
  });
  server.listen(0, "127.0.0.1", () => emit({ listening: server.address().port }));
} else if (mode === "key") {
  const key = crypto.createPrivateKey(readFileSync(values.key[0]));
  const cert = new crypto.X509Certificate(readFileSync(values.cert[0]));
  const message = Buffer.from("mtls-operator interop");
  const signature = crypto.sign(null, message, key);
  emit({
    asymmetricKeyType: key.asymmetricKeyType,
    certificateKeyType: cert.publicKey.asymmetricKeyType,
    matches: cert.checkPrivateKey(key),
    verifies: crypto.verify(null, message, cert.publicKey, signature),
    signatureLength: signature.length,
  });
} else {
  process.stderr.write("usage: node peer.mjs server|client|key [options]\n");
  process.exitCode = 2;
}
