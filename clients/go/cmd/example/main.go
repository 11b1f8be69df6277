// Command example performs the lookups of the cross-language contract test against a
// live skewless server and prints their canonical JSON form (docs/clients.md), the same
// form the Python, Java and grpcurl legs print.
//
//	go run ./cmd/example -addr 127.0.0.1:6566
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/types/known/timestamppb"

	skewlessv1 "github.com/skewless/skewless/clients/go/gen/skewless/v1"
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
	useTLS := flag.Bool("tls", false, "connect over TLS (system roots)")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of each call")
	flag.Parse()

	mode := skewless.WithInsecure()
	if *useTLS {
		mode = skewless.WithTLS(nil)
	}
	client, err := skewless.Dial(*addr, mode)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer client.Close()

	out := make([]map[string]any, 0, 4)
	for _, l := range lookups {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		res, err := client.OnlineFeatures(ctx, l.sel, l.entities...)
		cancel()
		entry := map[string]any{"name": l.name}
		var e *skewless.Error
		switch {
		case err == nil:
			entry["results"] = canonicalResults(res)
		case errors.As(err, &e):
			entry["error"] = canonicalError(e)
		default:
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out = append(out, entry)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"lookups": out}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// canonicalResults renders every feature vector: name, values, statuses, event times.
func canonicalResults(res *skewless.OnlineResult) []map[string]any {
	results := make([]map[string]any, 0, len(res.Response.GetResults()))
	for _, vec := range res.Response.GetResults() {
		values := make([]any, len(vec.GetValues()))
		for i, v := range vec.GetValues() {
			values[i] = canonicalValue(v)
		}
		statuses := make([]string, len(vec.GetStatuses()))
		for i, s := range vec.GetStatuses() {
			statuses[i] = s.String()
		}
		times := make([]any, len(vec.GetEventTimes()))
		for i, ts := range vec.GetEventTimes() {
			times[i] = canonicalTime(ts)
		}
		results = append(results, map[string]any{
			"name": vec.GetName(), "values": values, "statuses": statuses, "event_times": times,
		})
	}
	return results
}

// canonicalTime is RFC 3339 in UTC with exactly six fractional digits; unset is null.
func canonicalTime(ts *timestamppb.Timestamp) any {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return nil
	}
	return ts.AsTime().UTC().Format("2006-01-02T15:04:05.000000") + "Z"
}

// canonicalValue maps a Value to JSON: null, number, string, bool, base64 bytes,
// canonical time, or a list of these.
func canonicalValue(v *skewlessv1.Value) any {
	switch k := v.GetKind().(type) {
	case *skewlessv1.Value_Int32Value:
		return k.Int32Value
	case *skewlessv1.Value_Int64Value:
		return k.Int64Value
	case *skewlessv1.Value_FloatValue:
		return float64(k.FloatValue)
	case *skewlessv1.Value_DoubleValue:
		return k.DoubleValue
	case *skewlessv1.Value_StringValue:
		return k.StringValue
	case *skewlessv1.Value_BytesValue:
		return base64.StdEncoding.EncodeToString(k.BytesValue)
	case *skewlessv1.Value_BoolValue:
		return k.BoolValue
	case *skewlessv1.Value_TimestampValue:
		return canonicalTime(k.TimestampValue)
	case *skewlessv1.Value_Int32ListValue:
		return k.Int32ListValue.GetValues()
	case *skewlessv1.Value_Int64ListValue:
		return k.Int64ListValue.GetValues()
	case *skewlessv1.Value_FloatListValue:
		out := make([]float64, len(k.FloatListValue.GetValues()))
		for i, f := range k.FloatListValue.GetValues() {
			out[i] = float64(f)
		}
		return out
	case *skewlessv1.Value_DoubleListValue:
		return k.DoubleListValue.GetValues()
	case *skewlessv1.Value_StringListValue:
		return k.StringListValue.GetValues()
	case *skewlessv1.Value_BytesListValue:
		out := make([]string, len(k.BytesListValue.GetValues()))
		for i, b := range k.BytesListValue.GetValues() {
			out[i] = base64.StdEncoding.EncodeToString(b)
		}
		return out
	case *skewlessv1.Value_BoolListValue:
		return k.BoolListValue.GetValues()
	case *skewlessv1.Value_TimestampListValue:
		out := make([]any, len(k.TimestampListValue.GetValues()))
		for i, ts := range k.TimestampListValue.GetValues() {
			out[i] = canonicalTime(ts)
		}
		return out
	}
	return nil
}

// canonicalError renders the status code name, ErrorInfo reason and BadRequest fields.
func canonicalError(e *skewless.Error) map[string]any {
	fields := make([]string, 0, len(e.FieldViolations))
	for _, v := range e.FieldViolations {
		fields = append(fields, v.Field)
	}
	return map[string]any{
		"code":    strings.ToUpper(code.Code(e.Code).String()),
		"reason":  e.Reason,
		"message": e.Message,
		"fields":  fields,
	}
}
