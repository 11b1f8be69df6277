// Command example performs the lookups of the cross-language contract test against a
// live skewless server and prints their canonical JSON form (docs/clients.md), the same
// form the Python, Java and grpcurl legs print.
//
//	go run ./cmd/example -addr 127.0.0.1:6566
//	go run ./cmd/example -addr features.internal:6566 -cacert ca.pem -cert client.pem -key client.key -token "$TOKEN"
package main

import (
	"context"
	"flag"
	"time"

	"github.com/skewless/skewless/clients/go/internal/canonical"
	"github.com/skewless/skewless/clients/go/skewless"
)

// lookup is one question of the contract test.
type lookup struct {
	name     string
	sel      skewless.Selection
	entities []skewless.EntityColumn
}

// lookups are the questions every client asks, against the `examples/rides` names
// (tests/integration/client_harness.py holds the same list for Python and grpcurl).
var lookups = []lookup{
	{"feature_service", skewless.FeatureService("driver_ranking"), []skewless.EntityColumn{
		skewless.Int64s("driver_id", 1001, 1002, 1003, 9999),
		skewless.Int64s("customer_id", 2001, 2002, 8888, 2004),
	}},
	{"feature_list", skewless.Features("driver_stats:conv_rate", "customer_profile:segment").WithFullFeatureNames(),
		[]skewless.EntityColumn{
			skewless.Int64s("driver_id", 1002, 1001),
			skewless.Int64s("customer_id", 2002, 2001),
		}},
	{"unknown_feature", skewless.Features("driver_stats:no_such_feature"),
		[]skewless.EntityColumn{skewless.Int64s("driver_id", 1001)}},
	{"wrong_key_type", skewless.Features("driver_stats"),
		[]skewless.EntityColumn{skewless.Strings("driver_id", "1001")}},
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6566", "server address host:port")
	useTLS := flag.Bool("tls", false, "connect over TLS (system roots unless -cacert)")
	caFile := flag.String("cacert", "", "PEM CA bundle that verifies the server (implies -tls)")
	certFile := flag.String("cert", "", "PEM client certificate, for mutual TLS (implies -tls)")
	keyFile := flag.String("key", "", "PEM private key of -cert")
	token := flag.String("token", "", "bearer token sent with every call")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of each call")
	flag.Parse()

	opts := []skewless.Option{skewless.WithInsecure()}
	if *useTLS || *caFile != "" || *certFile != "" {
		opts = []skewless.Option{skewless.WithTLSFiles(*caFile, *certFile, *keyFile)}
	}
	if *token != "" {
		opts = append(opts, skewless.WithToken(*token))
	}
	client, err := skewless.Dial(*addr, opts...)
	if err != nil {
		canonical.Fatal(err)
	}
	defer client.Close()

	out := make([]map[string]any, 0, 4)
	for _, l := range lookups {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		res, err := client.OnlineFeatures(ctx, l.sel, l.entities...)
		cancel()
		out = append(out, canonical.Answer(l.name, err, func(entry map[string]any) {
			entry["results"] = canonical.Results(res)
		}))
	}
	canonical.Print("lookups", out)
}
