// Command go-peer is an independent TLS 1.3 peer for the interop tests: Go's crypto/tls (Go >= 1.27,
// which verifies and signs with ML-DSA and offers X25519MLKEM768 by default) as a mutual-TLS client or
// echo server. Every handshake is reported as one JSON line on stdout:
//
//	{"ok":true,"version":"TLSv1.3","group":"X25519MLKEM768","peerSignatureAlgorithm":"ML-DSA-65",...}
//
// Usage:
//
//	go-peer server -cert tls.crt -key tls.key -ca ca.crt [-addr 127.0.0.1:0] [-count N]
//	go-peer client -connect HOST:PORT -cert tls.crt -key tls.key -ca ca.crt [-servername NAME]
//
// The server first prints {"listening":PORT}. The client exits 1 when the handshake fails.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
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
	Echo                   string   `json:"echo,omitempty"`
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
	}
	return r
}

func config(cert, key, ca string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("cannot load %s and %s: %w", cert, key, err)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", ca)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

func client(args []string) int {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	connect := fs.String("connect", "", "HOST:PORT")
	cert := fs.String("cert", "", "certificate chain (PEM)")
	key := fs.String("key", "", "private key (PEM, PKCS#8)")
	ca := fs.String("ca", "", "trusted CA certificates (PEM)")
	name := fs.String("servername", "", "server name to send and verify")
	_ = fs.Parse(args)
	cfg, err := config(*cert, *key, *ca)
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
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		r.OK, r.Error = false, err.Error()
		emit(r)
		return 1
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil && !errors.Is(err, io.EOF) || n == 0 {
		r.OK, r.Error = false, fmt.Sprintf("no echo: %v", err)
		emit(r)
		return 1
	}
	r.Echo = string(buf[:n])
	emit(r)
	return 0
}

func server(args []string) int {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	cert := fs.String("cert", "", "certificate chain (PEM)")
	key := fs.String("key", "", "private key (PEM, PKCS#8)")
	ca := fs.String("ca", "", "CA certificates that client certificates must chain to (PEM)")
	count := fs.Int("count", 0, "exit after this many connections (0: serve until killed)")
	_ = fs.Parse(args)
	cfg, err := config(*cert, *key, *ca)
	if err != nil {
		emit(report{Error: err.Error()})
		return 2
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
			emit(report{Error: err.Error()})
			conn.Close()
			continue
		}
		r := describe(conn.ConnectionState())
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
