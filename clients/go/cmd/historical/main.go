// Command historical asks the historical questions of the cross-language contract test
// against a live skewless server holding the contract fixture and prints their canonical
// JSON form (docs/clients.md), the same form the Python and Java legs print: per question
// the rows of each Arrow record batch and every column's name, type and values, or the
// error of a failed call.
//
//	go run ./cmd/historical -addr 127.0.0.1:6566
package main

import (
	"context"
	"flag"
	"time"

	"github.com/skewless/skewless/clients/go/internal/canonical"
	"github.com/skewless/skewless/clients/go/skewless"
)

// question is one GetHistoricalFeatures call of the contract test.
type question struct {
	name  string
	query skewless.HistoricalQuery
}

// questions are the calls every client makes (tests/integration/historical_harness.py
// holds the same list for Python); rows is the entity rows file the server reads.
func questions(rows string) []question {
	return []question{
		{"feature_service", skewless.HistoricalQuery{
			Selection: skewless.FeatureService("driver_ranking"), Path: rows, BatchSize: 4}},
		{"feature_list", skewless.HistoricalQuery{
			Selection: skewless.Features("driver_stats:conv_rate", "customer_profile:segment").WithFullFeatureNames(),
			Path:      rows}},
		{"unknown_feature", skewless.HistoricalQuery{
			Selection: skewless.Features("driver_stats:no_such_feature"), Path: rows}},
		{"missing_rows", skewless.HistoricalQuery{
			Selection: skewless.FeatureService("driver_ranking"), Path: "no_rows.parquet"}},
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6566", "server address host:port")
	rows := flag.String("rows", "historical_rows.parquet", "entity rows file, as the server reads it")
	timeout := flag.Duration("timeout", 30*time.Second, "deadline of each call")
	flag.Parse()

	client, err := skewless.Dial(*addr, skewless.WithInsecure())
	if err != nil {
		canonical.Fatal(err)
	}
	defer client.Close()

	out := make([]map[string]any, 0, 4)
	for _, q := range questions(*rows) {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		res, err := client.HistoricalFeatures(ctx, q.query)
		cancel()
		out = append(out, canonical.Answer(q.name, err, func(entry map[string]any) {
			for k, v := range canonical.Batches(res.Schema, res.Batches) {
				entry[k] = v
			}
			res.Release()
		}))
	}
	canonical.Print("queries", out)
}
