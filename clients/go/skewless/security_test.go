package skewless

// Tests of the transport and call credentials against a small gRPC server on loopback
// that records the authorization header of every call (plaintext, and TLS with a
// certificate made by the test).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	skewlessv1 "github.com/skewless/skewless/clients/go/gen/skewless/v1"
)

// headerServer answers GetOnlineFeatures with an empty response and keeps the
// authorization header of each call.
type headerServer struct {
	skewlessv1.UnimplementedOnlineServiceServer
	mu      sync.Mutex
	headers []string
}

func (s *headerServer) GetOnlineFeatures(ctx context.Context, _ *skewlessv1.GetOnlineFeaturesRequest) (*skewlessv1.GetOnlineFeaturesResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.headers = append(s.headers, fmt.Sprint(md.Get("authorization")))
	return &skewlessv1.GetOnlineFeaturesResponse{}, nil
}

func (s *headerServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.headers...)
}

// startHeaderServer serves on 127.0.0.1 (TLS when creds is set) until the test ends.
func startHeaderServer(t *testing.T, creds credentials.TransportCredentials) (*headerServer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	server := grpc.NewServer(opts...)
	recorder := &headerServer{}
	skewlessv1.RegisterOnlineServiceServer(server, recorder)
	go func() { _ = server.Serve(lis) }()
	t.Cleanup(server.Stop)
	return recorder, lis.Addr().String()
}

func call(t *testing.T, addr string, opts ...Option) {
	t.Helper()
	c, err := Dial(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.OnlineFeatures(context.Background(), Features("v:f"), Int64s("k", 1)); err != nil {
		t.Fatal(err)
	}
}

func TestWithTokenSendsTheBearerHeader(t *testing.T) {
	recorder, addr := startHeaderServer(t, nil)
	call(t, addr, WithInsecure(), WithToken("static-token"))
	call(t, addr, WithInsecure())
	got := recorder.seen()
	if len(got) != 2 || got[0] != "[Bearer static-token]" || got[1] != "[]" {
		t.Fatalf("authorization headers = %v", got)
	}
}

func TestWithTokenSourceIsAskedForEveryCall(t *testing.T) {
	recorder, addr := startHeaderServer(t, nil)
	n := 0
	source := func(context.Context) (string, error) { n++; return fmt.Sprintf("token-%d", n), nil }
	c, err := Dial(addr, WithInsecure(), WithTokenSource(source))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		if _, err := c.OnlineFeatures(context.Background(), Features("v:f"), Int64s("k", 1)); err != nil {
			t.Fatal(err)
		}
	}
	got := recorder.seen()
	want := []string{"[Bearer token-1]", "[Bearer token-2]", "[Bearer token-3]"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("authorization headers = %v, want %v", got, want)
	}
}

func TestFailingTokenSourceFailsTheCallUnavailable(t *testing.T) {
	recorder, addr := startHeaderServer(t, nil)
	source := func(context.Context) (string, error) { return "", errors.New("token service down") }
	c, err := Dial(addr, WithInsecure(), WithTokenSource(source))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.OnlineFeatures(context.Background(), Features("v:f"), Int64s("k", 1))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want UNAVAILABLE", err)
	}
	if got := recorder.seen(); len(got) != 0 {
		t.Fatalf("the call reached the server: %v", got)
	}
}

// staticCreds is a caller's own PerRPCCredentials.
type staticCreds map[string]string

func (s staticCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return s, nil
}
func (staticCreds) RequireTransportSecurity() bool { return true }

func TestTokenAndCallCredentialsOverTLSFiles(t *testing.T) {
	dir := t.TempDir()
	caFile, serverCert := writeTestCA(t, dir)
	recorder, addr := startHeaderServer(t, credentials.NewServerTLSFromCert(&serverCert))
	call(t, addr, WithTLSFiles(caFile, "", ""), WithToken("tls-token"))
	call(t, addr, WithTLSFiles(caFile, "", ""),
		WithPerRPCCredentials(staticCreds{"authorization": "Bearer from-creds"}))
	got := recorder.seen()
	if len(got) != 2 || got[0] != "[Bearer tls-token]" || got[1] != "[Bearer from-creds]" {
		t.Fatalf("authorization headers = %v", got)
	}
	// A server the CA did not sign is refused.
	_, untrusted := startHeaderServer(t, credentials.NewServerTLSFromCert(&serverCert))
	otherCA, _ := writeTestCA(t, t.TempDir())
	c, err := Dial(untrusted, WithTLSFiles(otherCA, "", ""), WithDefaultTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.OnlineFeatures(context.Background(), Features("v:f"), Int64s("k", 1)); err == nil {
		t.Fatal("a server signed by another CA was trusted")
	}
}

func TestWithTLSFilesReportsUnusableFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := Dial("127.0.0.1:1", WithTLSFiles(filepath.Join(dir, "none.pem"), "", "")); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
	notPEM := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial("127.0.0.1:1", WithTLSFiles(notPEM, "", "")); err == nil {
		t.Fatal("a CA file without PEM was accepted")
	}
	if _, err := Dial("127.0.0.1:1", WithTLSFiles("", notPEM, "")); err == nil {
		t.Fatal("a client certificate without its key was accepted")
	}
}

// writeTestCA writes a self-signed CA for 127.0.0.1 to dir/ca.pem and returns it with
// the certificate a server presents.
func writeTestCA(t *testing.T, dir string) (string, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "skewless test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return path, pair
}
