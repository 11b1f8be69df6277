// Package canonical renders answers in the canonical JSON form of the cross-language
// contract test (docs/clients.md), the form every language's example prints: online
// results, Arrow record batches of historical retrieval, and errors.
package canonical

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/types/known/timestamppb"

	skewlessv1 "github.com/skewless/skewless/clients/go/gen/skewless/v1"
	"github.com/skewless/skewless/clients/go/skewless"
)

// Results renders every feature vector: name, values, statuses, event times.
func Results(res *skewless.OnlineResult) []map[string]any {
	results := make([]map[string]any, 0, len(res.Response.GetResults()))
	for _, vec := range res.Response.GetResults() {
		values := make([]any, len(vec.GetValues()))
		for i, v := range vec.GetValues() {
			values[i] = Value(v)
		}
		statuses := make([]string, len(vec.GetStatuses()))
		for i, s := range vec.GetStatuses() {
			statuses[i] = s.String()
		}
		times := make([]any, len(vec.GetEventTimes()))
		for i, ts := range vec.GetEventTimes() {
			times[i] = Time(ts)
		}
		results = append(results, map[string]any{
			"name": vec.GetName(), "values": values, "statuses": statuses, "event_times": times,
		})
	}
	return results
}

// Time is RFC 3339 in UTC with exactly six fractional digits; unset is null.
func Time(ts *timestamppb.Timestamp) any {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return nil
	}
	return ts.AsTime().UTC().Format(timeLayout) + "Z"
}

const timeLayout = "2006-01-02T15:04:05.000000"

// Value maps a Value to JSON: null, number, string, bool, base64 bytes, canonical
// time, or a list of these.
func Value(v *skewlessv1.Value) any {
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
		return Time(k.TimestampValue)
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
			out[i] = Time(ts)
		}
		return out
	}
	return nil
}

// Error renders the status code name, ErrorInfo reason, message and BadRequest fields.
func Error(e *skewless.Error) map[string]any {
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

// Answer is one named answer: `fill` adds the result when err is nil; a *skewless.Error
// becomes its canonical error; any other error is fatal (printed, exit status 1).
func Answer(name string, err error, fill func(entry map[string]any)) map[string]any {
	entry := map[string]any{"name": name}
	var e *skewless.Error
	switch {
	case err == nil:
		fill(entry)
	case errors.As(err, &e):
		entry["error"] = Error(e)
	default:
		Fatal(err)
	}
	return entry
}

// Print writes {key: answers} to standard output as one JSON line (non-ASCII kept).
func Print(key string, answers []map[string]any) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{key: answers}); err != nil {
		Fatal(err)
	}
}

// Fatal prints err to standard error and exits with status 1.
func Fatal(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
