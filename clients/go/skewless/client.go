package skewless

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	skewlessv1 "github.com/skewless/skewless/clients/go/gen/skewless/v1"
)

// DefaultTimeout is the deadline given to a call whose context has none.
const DefaultTimeout = 5 * time.Second

// Client talks to one skewless server. It is safe for concurrent use; create one per
// process and Close it on shutdown.
type Client struct {
	conn    *grpc.ClientConn
	timeout time.Duration

	// Online is the generated OnlineService stub, for calls the helpers do not cover.
	Online skewlessv1.OnlineServiceClient
	// Registry is the generated RegistryService stub.
	Registry skewlessv1.RegistryServiceClient
	// Historical is the generated HistoricalService stub.
	Historical skewlessv1.HistoricalServiceClient
	// Materialization is the generated MaterializationService stub.
	Materialization skewlessv1.MaterializationServiceClient
}

type options struct {
	creds       credentials.TransportCredentials
	perRPC      []credentials.PerRPCCredentials
	timeout     time.Duration
	dialOptions []grpc.DialOption
	err         error
}

// Option configures Dial.
type Option func(*options)

// WithTLS connects over TLS with the given configuration (nil: the system roots).
func WithTLS(config *tls.Config) Option {
	return func(o *options) {
		if config == nil {
			config = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.creds = credentials.NewTLS(config)
	}
}

// WithInsecure connects in plaintext (local development, or a trusted sidecar network).
func WithInsecure() Option {
	return func(o *options) { o.creds = insecure.NewCredentials() }
}

// WithDefaultTimeout sets the deadline of calls whose context has none (DefaultTimeout
// otherwise; 0 leaves such calls without a deadline).
func WithDefaultTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// WithDialOptions passes extra options to grpc.NewClient (interceptors, keepalive, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// Dial creates a client for the server at addr ("host:port"). The connection is made
// lazily, on the first call. One of WithTLS, WithTLSFiles or WithInsecure must be
// given, so that plaintext is always a visible choice; WithToken, WithTokenSource or
// WithPerRPCCredentials add credentials to every call.
func Dial(addr string, opts ...Option) (*Client, error) {
	o := options{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.err != nil {
		return nil, o.err
	}
	if o.creds == nil {
		return nil, errors.New("skewless: Dial needs WithTLS(...), WithTLSFiles(...) or WithInsecure()")
	}
	dialOptions := []grpc.DialOption{grpc.WithTransportCredentials(o.creds)}
	for _, creds := range o.perRPC {
		dialOptions = append(dialOptions, grpc.WithPerRPCCredentials(creds))
	}
	dialOptions = append(dialOptions, o.dialOptions...)
	conn, err := grpc.NewClient(addr, dialOptions...)
	if err != nil {
		return nil, err
	}
	return &Client{
		conn:            conn,
		timeout:         o.timeout,
		Online:          skewlessv1.NewOnlineServiceClient(conn),
		Registry:        skewlessv1.NewRegistryServiceClient(conn),
		Historical:      skewlessv1.NewHistoricalServiceClient(conn),
		Materialization: skewlessv1.NewMaterializationServiceClient(conn),
	}, nil
}

// Conn returns the underlying connection (to build other stubs on it).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// withDeadline applies the default timeout when ctx has no deadline.
func (c *Client) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}
