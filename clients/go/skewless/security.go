package skewless

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// WithTLSFiles connects over TLS, verifying the server with the PEM CA bundle in caFile
// ("" for the system roots) and, when certFile and keyFile are set, presenting that
// client certificate (for a server that requires mutual TLS). Dial reports a file that
// cannot be read or parsed.
func WithTLSFiles(caFile, certFile, keyFile string) Option {
	return func(o *options) {
		config, err := tlsConfigFromFiles(caFile, certFile, keyFile)
		if err != nil {
			o.err = err
			return
		}
		o.creds = credentials.NewTLS(config)
	}
}

func tlsConfigFromFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("skewless: reading the CA file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("skewless: no PEM certificate in the CA file %s", caFile)
		}
		config.RootCAs = roots
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("skewless: WithTLSFiles needs both a client certificate and its key, or neither")
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("skewless: loading the client certificate: %w", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return config, nil
}

// WithToken sends "authorization: Bearer <token>" with every call.
func WithToken(token string) Option {
	return WithTokenSource(func(context.Context) (string, error) { return token, nil })
}

// WithTokenSource sends "authorization: Bearer <token>" with every call, asking source
// for the token each time, so that it can refresh a token before it expires. An error
// from source fails the call before anything is sent, as UNAVAILABLE (as in the Python
// and Java clients) unless it is a gRPC status error (status.Error), whose code is kept.
func WithTokenSource(source func(ctx context.Context) (string, error)) Option {
	return WithPerRPCCredentials(bearer{source: source})
}

// WithPerRPCCredentials attaches credentials to every call (for example
// google.golang.org/grpc/credentials/oauth token sources, or your own). Several may be
// given; their metadata is merged.
func WithPerRPCCredentials(creds credentials.PerRPCCredentials) Option {
	return func(o *options) { o.perRPC = append(o.perRPC, creds) }
}

// bearer is the PerRPCCredentials of WithToken and WithTokenSource.
type bearer struct {
	source func(ctx context.Context) (string, error)
}

func (b bearer) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	token, err := b.source(ctx)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Unavailable, "skewless: could not get a bearer token: %v", err)
	}
	if token == "" || strings.TrimSpace(token) != token || strings.ContainsAny(token, "\r\n") {
		return nil, status.Error(codes.Unavailable, "skewless: the bearer token is empty or has surrounding whitespace")
	}
	return map[string]string{"authorization": "Bearer " + token}, nil
}

// RequireTransportSecurity is false so that tokens also reach a plaintext server that
// was chosen explicitly with WithInsecure (a loopback or sidecar connection). Use
// WithTLS or WithTLSFiles for anything that crosses a network.
func (bearer) RequireTransportSecurity() bool { return false }
