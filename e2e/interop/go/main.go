// Command go-peer is an independent TLS 1.3 peer for the interop tests: Go's crypto/tls (Go >= 1.27,
// which verifies and signs with ML-DSA and offers X25519MLKEM768 by default) as a mutual-TLS client or
// echo server. Every handshake is reported as one JSON line on stdout:
//
//	{"ok":true,"version":"TLSv1.3","group":"X25519MLKEM768","peerSignatureAlgorithm":"ML-DSA-65",...}
//
// Usage:
//
//	go-peer server -cert tls.crt -key tls.key [-cert tls-ecdsa.crt -key tls-ecdsa.key] -ca ca.crt [-addr 127.0.0.1:0] [-count N]
//	go-peer client -connect HOST:PORT -cert tls.crt -key tls.key [-cert ... -key ...] -ca ca.crt [-servername NAME]
//
// -cert and -key repeat: one pair per key type (a dual certificate's ML-DSA tls.crt and ECDSA
// tls-ecdsa.crt). Go then presents, per handshake, the first certificate the peer can verify: the server
// the first its ClientHello's signature_algorithms allow, the client the first the server's
// CertificateRequest allows. Each report names the certificate this side presented (localKey), the
// peer's (peerKeyAlgorithm), the TLS 1.3 signature scheme that key signs with, and, on the server, the
// schemes the client offered.
//
// The server first prints {"listening":PORT}. The client exits 1 when the handshake fails.
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/mldsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

type report struct {
	OK                     bool     `json:"ok"`
	Error                  string   `json:"error,omitempty"`
	Version                string   `json:"version,omitempty"`
	Cipher                 string   `json:"cipher,omitempty"`
	Group                  string   `json:"group,omitempty"`
	PeerSubjects           []string `json:"peerChain,omitempty"`
	PeerSignatureAlgorithm string   `json:"peerSignatureAlgorithm,omitempty"`
	PeerKey                string   `json:"peerKey,omitempty"`
	PeerKeyAlgorithm       string   `json:"peerKeyAlgorithm,omitempty"`
	PeerSignatureScheme    string   `json:"peerSignatureScheme,omitempty"`
	LocalKey               string   `json:"localKeyAlgorithm,omitempty"`
	OfferedSchemes         []string `json:"offeredSignatureSchemes,omitempty"`
	Echo                   string   `json:"echo,omitempty"`
}

// files collects a repeatable flag.
type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

// keyLabel names a certificate's key as the operator does: ML-DSA-65, ECDSA-P256, RSA-2048, Ed25519.
func keyLabel(cert *x509.Certificate) string {
	switch k := cert.PublicKey.(type) {
	case *mldsa.PublicKey:
		return k.Parameters().String()
	case *ecdsa.PublicKey:
		return fmt.Sprintf("ECDSA-P%d", k.Curve.Params().BitSize)
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return cert.PublicKeyAlgorithm.String()
}

// scheme is the TLS 1.3 signature scheme (IANA name) a certificate's key signs CertificateVerify with:
// one per ML-DSA parameter set, ECDSA curve and EdDSA key; RSA keys sign with RSA-PSS (hash negotiated).
func scheme(cert *x509.Certificate) string {
	switch label := keyLabel(cert); label {
	case "ML-DSA-44", "ML-DSA-65", "ML-DSA-87":
		return "mldsa" + label[len("ML-DSA-"):]
	case "ECDSA-P256":
		return "ecdsa_secp256r1_sha256"
	case "ECDSA-P384":
		return "ecdsa_secp384r1_sha384"
	case "ECDSA-P521":
		return "ecdsa_secp521r1_sha512"
	case "Ed25519":
		return "ed25519"
	}
	return "rsa_pss_rsae_*"
}

var schemeNames = map[tls.SignatureScheme]string{
	tls.MLDSA44: "mldsa44", tls.MLDSA65: "mldsa65", tls.MLDSA87: "mldsa87",
	tls.ECDSAWithP256AndSHA256: "ecdsa_secp256r1_sha256", tls.ECDSAWithP384AndSHA384: "ecdsa_secp384r1_sha384",
	tls.ECDSAWithP521AndSHA512: "ecdsa_secp521r1_sha512", tls.Ed25519: "ed25519",
	tls.PSSWithSHA256: "rsa_pss_rsae_sha256", tls.PSSWithSHA384: "rsa_pss_rsae_sha384",
	tls.PSSWithSHA512: "rsa_pss_rsae_sha512", tls.PKCS1WithSHA256: "rsa_pkcs1_sha256",
	tls.PKCS1WithSHA384: "rsa_pkcs1_sha384", tls.PKCS1WithSHA512: "rsa_pkcs1_sha512",
	0x0808: "ed448", 0x0809: "rsa_pss_pss_sha256", 0x080a: "rsa_pss_pss_sha384", 0x080b: "rsa_pss_pss_sha512",
}

func schemeList(in []tls.SignatureScheme) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if name, ok := schemeNames[s]; ok {
			out = append(out, name)
		} else {
			out = append(out, fmt.Sprintf("0x%04x", uint16(s)))
		}
	}
	return out
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func describe(st tls.ConnectionState) report {
	r := report{
		OK:      true,
		Version: tls.VersionName(st.Version),
		Cipher:  tls.CipherSuiteName(st.CipherSuite),
		Group:   st.CurveID.String(),
	}
	for _, c := range st.PeerCertificates {
		r.PeerSubjects = append(r.PeerSubjects, c.Subject.String())
	}
	if len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		r.PeerSignatureAlgorithm = leaf.SignatureAlgorithm.String()
		r.PeerKey = leaf.PublicKeyAlgorithm.String()
		r.PeerKeyAlgorithm = keyLabel(leaf)
		r.PeerSignatureScheme = scheme(leaf)
	}
	if len(st.LocalCertificate) > 0 {
		if local, err := x509.ParseCertificate(st.LocalCertificate[0]); err == nil {
			r.LocalKey = keyLabel(local)
		}
	}
	return r
}

func config(certs, keys files, ca string) (*tls.Config, error) {
	if len(certs) == 0 || len(certs) != len(keys) {
		return nil, fmt.Errorf("give one -key for each -cert (%d -cert, %d -key)", len(certs), len(keys))
	}
	pairs := make([]tls.Certificate, 0, len(certs))
	for i := range certs {
		pair, err := tls.LoadX509KeyPair(certs[i], keys[i])
		if err != nil {
			return nil, fmt.Errorf("cannot load %s and %s: %w", certs[i], keys[i], err)
		}
		pairs = append(pairs, pair)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", ca)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: pairs,
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	// The handshake secrets, for tests that read what was negotiated off the wire (NSS key log format,
	// as OpenSSL, curl and Node write it): Go writes them only to a KeyLogWriter.
	if path := os.Getenv("SSLKEYLOGFILE"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("SSLKEYLOGFILE: %w", err)
		}
		cfg.KeyLogWriter = f
	}
	return cfg, nil
}

func client(args []string) int {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	connect := fs.String("connect", "", "HOST:PORT")
	var cert, key files
	fs.Var(&cert, "cert", "certificate chain (PEM); repeat with -key for each key type")
	fs.Var(&key, "key", "private key (PEM, PKCS#8)")
	ca := fs.String("ca", "", "trusted CA certificates (PEM)")
	name := fs.String("servername", "", "server name to send and verify")
	send := fs.String("send", "", "send this after the handshake and read the answer to its end (default: ping, read the echo)")
	_ = fs.Parse(args)
	cfg, err := config(cert, key, *ca)
	if err != nil {
		emit(report{Error: err.Error()})
		return 2
	}
	cfg.ServerName = *name
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(dialer, "tcp", *connect, cfg)
	if err != nil {
		emit(report{Error: err.Error()})
		return 1
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := describe(conn.ConnectionState())
	message := "ping\n"
	if *send != "" {
		message = *send
	}
	if _, err := conn.Write([]byte(message)); err != nil {
		r.OK, r.Error = false, err.Error()
		emit(r)
		return 1
	}
	var answer []byte
	if *send != "" { // a request: read the whole answer (the server closes)
		answer, err = io.ReadAll(io.LimitReader(conn, 4096))
	} else {
		buf := make([]byte, 64)
		var n int
		n, err = conn.Read(buf)
		answer = buf[:n]
	}
	if err != nil && !errors.Is(err, io.EOF) || len(answer) == 0 {
		r.OK, r.Error = false, fmt.Sprintf("no answer: %v", err)
		emit(r)
		return 1
	}
	r.Echo = string(answer)
	emit(r)
	return 0
}

func server(args []string) int {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	var cert, key files
	fs.Var(&cert, "cert", "certificate chain (PEM); repeat with -key for each key type")
	fs.Var(&key, "key", "private key (PEM, PKCS#8)")
	ca := fs.String("ca", "", "CA certificates that client certificates must chain to (PEM)")
	count := fs.Int("count", 0, "exit after this many connections (0: serve until killed)")
	_ = fs.Parse(args)
	cfg, err := config(cert, key, *ca)
	if err != nil {
		emit(report{Error: err.Error()})
		return 2
	}
	// Connections are served one at a time: remember what the current client offered.
	var offered []tls.SignatureScheme
	cfg.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		offered = chi.SignatureSchemes
		return nil, nil
	}
	ln, err := tls.Listen("tcp", *addr, cfg)
	if err != nil {
		emit(report{Error: err.Error()})
		return 2
	}
	emit(map[string]int{"listening": ln.Addr().(*net.TCPAddr).Port})
	for i := 0; *count == 0 || i < *count; i++ {
		raw, err := ln.Accept()
		if err != nil {
			return 1
		}
		conn := raw.(*tls.Conn)
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if err := conn.Handshake(); err != nil {
			emit(report{Error: err.Error(), OfferedSchemes: schemeList(offered)})
			conn.Close()
			continue
		}
		r := describe(conn.ConnectionState())
		r.OfferedSchemes = schemeList(offered)
		buf := make([]byte, 64)
		if n, err := conn.Read(buf); err == nil {
			_, _ = conn.Write(buf[:n])
			r.Echo = string(buf[:n])
		}
		emit(r)
		conn.Close()
	}
	return 0
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go-peer server|client [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		os.Exit(server(os.Args[2:]))
	case "client":
		os.Exit(client(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q: use server or client\n", os.Args[1])
		os.Exit(2)
	}
}
