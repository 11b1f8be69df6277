// Package skewless is a thin, idiomatic Go client for the skewless feature store.
//
// It wraps the stubs generated from protos/ (package skewlessv1) and adds only what a
// production service needs around them: dialing with TLS or without, a default per-call
// deadline, helpers to build entity columns, results read by feature name with their
// status and event time, historical results as Arrow record batches, and errors that
// expose the gRPC status and its google.rpc details (ErrorInfo, BadRequest, RetryInfo).
// The wire format is the generated one: no feature logic lives here.
//
//	client, err := skewless.Dial("localhost:6566", skewless.WithInsecure())
//	if err != nil { ... }
//	defer client.Close()
//	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
//	defer cancel()
//	res, err := client.OnlineFeatures(ctx, skewless.FeatureService("driver_activity"),
//		skewless.Int64s("driver_id", 1001, 1002))
//	if err != nil { ... }
//	v := res.Get("conv_rate", 0)
//	if v.Present() { rate, _ := v.Float64(); ... }
//
// Historical retrieval (point-in-time-correct training data) returns Apache Arrow record
// batches, decoded with Arrow Go from the Arrow IPC messages of the response stream; the
// server reads the entity rows from a file path or a DuckDB query:
//
//	hist, err := client.HistoricalFeatures(ctx, skewless.HistoricalQuery{
//		Selection: skewless.FeatureService("driver_activity"), Path: "labels.parquet"})
//	if err != nil { ... }
//	defer hist.Release()
//	table := hist.Table() // or client.HistoricalBatches(ctx, q) to stream the batches
package skewless
