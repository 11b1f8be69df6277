package skewless

// Historical retrieval against a live server holding the contract fixture, whose offline
// history and entity rows file come from tests/integration/contract_history.py
// (docs/clients.md). Like the other live tests they run when SKEWLESS_ADDR is set.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	skewlessv1 "github.com/skewless/skewless/clients/go/gen/skewless/v1"
)

// historicalRows is the contract fixture's entity rows file (relative to the server's repository).
const historicalRows = "historical_rows.parquet"

// The avg_daily_trips and current_balance the point-in-time join must give each entity
// row (NaN: null): the T1 rows, an earlier row, a stored null at an inclusive label
// time, a row outside the TTL and one inside it, an unknown driver, a label time before
// all history, an event-time tie broken by created time, an exact event time, the newest rows.
var (
	wantTrips   = []float64{42, 40, 7, math.NaN(), 3, math.NaN(), math.NaN(), 2, 42, 44}
	wantBalance = []float64{12.5, math.NaN(), -3.25, 12.5, math.NaN(), 0.1, math.NaN(), 12.5, 12.5, 13.0}
)

func historicalQuery(sel Selection) HistoricalQuery {
	return HistoricalQuery{Selection: sel, Path: historicalRows}
}

// column returns a result column as float64s (NaN for null) with the rows of every batch.
func column(t *testing.T, res *HistoricalResult, name string) []float64 {
	t.Helper()
	idx := res.Schema.FieldIndices(name)
	if len(idx) != 1 {
		t.Fatalf("no column %q in %v", name, res.Schema)
	}
	var out []float64
	for _, b := range res.Batches {
		col := b.Column(idx[0])
		for i := 0; i < col.Len(); i++ {
			if col.IsNull(i) {
				out = append(out, math.NaN())
				continue
			}
			switch a := col.(type) {
			case *array.Int64:
				out = append(out, float64(a.Value(i)))
			case *array.Float32:
				out = append(out, float64(a.Value(i)))
			case *array.Float64:
				out = append(out, a.Value(i))
			default:
				t.Fatalf("column %q has type %s", name, col.DataType())
			}
		}
	}
	return out
}

func sameFloats(got, want []float64) bool {
	return slices.EqualFunc(got, want, func(a, b float64) bool {
		return a == b || (math.IsNaN(a) && math.IsNaN(b))
	})
}

func TestLiveHistoricalFeatureService(t *testing.T) {
	c := liveClient(t)
	q := historicalQuery(FeatureService("driver_ranking"))
	q.BatchSize = 4
	res, err := c.HistoricalFeatures(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	names := make([]string, 0, res.Schema.NumFields())
	for _, f := range res.Schema.Fields() {
		names = append(names, f.Name)
	}
	want := []string{"driver_id", "customer_id", "event_timestamp", "trip_id", "label",
		"conv_rate", "acc_rate", "avg_daily_trips", "current_balance", "is_premium"}
	if !slices.Equal(names, want) {
		t.Fatalf("columns = %v, want %v", names, want)
	}
	var sizes []int64
	for _, b := range res.Batches {
		sizes = append(sizes, b.NumRows())
	}
	if !slices.Equal(sizes, []int64{4, 4, 2}) || res.NumRows() != 10 {
		t.Fatalf("batch rows = %v, want [4 4 2]", sizes)
	}
	if got := column(t, res, "avg_daily_trips"); !sameFloats(got, wantTrips) {
		t.Fatalf("avg_daily_trips = %v, want %v", got, wantTrips)
	}
	if got := column(t, res, "current_balance"); !sameFloats(got, wantBalance) {
		t.Fatalf("current_balance = %v, want %v", got, wantBalance)
	}
	rates := column(t, res, "conv_rate")
	if rates[0] != float64(float32(0.85)) || !math.IsNaN(rates[2]) || !math.IsNaN(rates[3]) || rates[4] != float64(float32(0.1)) {
		t.Fatalf("conv_rate = %v (want 0.85, a stored null, outside the TTL, inside it)", rates)
	}

	table := res.Table()
	defer table.Release()
	if table.NumRows() != 10 {
		t.Fatalf("table rows = %d", table.NumRows())
	}
	// Input columns come back as sent, in input order; label times keep their microseconds.
	first := res.Batches[0]
	ts := first.Column(2).(*array.Timestamp)
	unit := first.Schema().Field(2).Type.(*arrow.TimestampType).Unit
	if got := ts.Value(0).ToTime(unit); !got.Equal(time.Date(2025, 6, 1, 13, 0, 0, 123456000, time.UTC)) {
		t.Fatalf("event_timestamp[0] = %v", got)
	}
	if id := first.Column(3).(*array.String).Value(1); id != "t1" {
		t.Fatalf("trip_id[1] = %q", id)
	}
	premium := first.Column(9).(*array.Boolean)
	if !premium.Value(0) || !premium.IsNull(2) {
		t.Fatalf("is_premium = %v (want true, then a stored null)", premium)
	}
}

func TestLiveHistoricalFeatureListCompressed(t *testing.T) {
	c := liveClient(t)
	sel := Features("driver_stats:conv_rate", "customer_profile:segment").WithFullFeatureNames()
	var segments [][]string
	for _, comp := range []skewlessv1.ArrowCompression{
		skewlessv1.ArrowCompression_ARROW_COMPRESSION_NONE,
		skewlessv1.ArrowCompression_ARROW_COMPRESSION_LZ4_FRAME,
		skewlessv1.ArrowCompression_ARROW_COMPRESSION_ZSTD,
	} {
		q := historicalQuery(sel)
		q.Compression = comp
		q.BatchSize = 3
		r, err := c.HistoricalBatches(context.Background(), q)
		if err != nil {
			t.Fatal(comp, err)
		}
		if n := r.Schema().NumFields(); n != 7 || r.Schema().Field(6).Name != "customer_profile__segment" {
			t.Fatalf("%v: schema %v", comp, r.Schema())
		}
		var seg []string
		for r.Next() {
			col := r.RecordBatch().Column(6).(*array.String)
			for i := 0; i < col.Len(); i++ {
				if col.IsNull(i) {
					seg = append(seg, "<null>")
				} else {
					seg = append(seg, col.Value(i))
				}
			}
		}
		if err := r.Err(); err != nil {
			t.Fatal(comp, err)
		}
		if r.Rows() != 10 {
			t.Fatalf("%v: %d rows", comp, r.Rows())
		}
		_ = r.Close()
		segments = append(segments, seg)
	}
	want := []string{"premium", "<null>", "budget", "premium", "<null>", "économie ✓", "<null>", "premium", "premium", "premium"}
	for i, seg := range segments {
		if !slices.Equal(seg, want) {
			t.Fatalf("segments (compression #%d) = %q, want %q", i, seg, want)
		}
	}
}

// recordingCodec is the proto codec that also keeps the raw bytes of every response.
type recordingCodec struct {
	encoding.CodecV2
	raw [][]byte
}

func (c *recordingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c.raw = append(c.raw, data.Materialize())
	return c.CodecV2.Unmarshal(data, v)
}

func TestLiveHistoricalResponsesParseWithTheGeneratedTypes(t *testing.T) {
	c := liveClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	codec := &recordingCodec{CodecV2: encoding.GetCodecV2("proto")}
	stream, err := c.Historical.GetHistoricalFeatures(ctx, grpc.ForceCodecV2(codec))
	if err != nil {
		t.Fatal(err)
	}
	query, err := historicalQuery(FeatureService("driver_ranking")).Proto()
	if err != nil {
		t.Fatal(err)
	}
	query.BatchSize = 3
	if err := stream.Send(&skewlessv1.GetHistoricalFeaturesRequest{Query: query}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var responses []*skewlessv1.GetHistoricalFeaturesResponse
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(FromError(err))
		}
		responses = append(responses, resp)
	}
	if len(responses) != 5 || len(codec.raw) != 5 {
		t.Fatalf("%d responses (%d raw), want a schema and 4 batches", len(responses), len(codec.raw))
	}
	if responses[0].GetArrowSchema() == nil || responses[0].GetArrowRecordBatch() != nil {
		t.Fatalf("first response is not the schema alone: %v", responses[0])
	}
	var rows int64
	for i, resp := range responses[1:] {
		batch := resp.GetArrowRecordBatch()
		if batch == nil || resp.GetArrowSchema() != nil || len(resp.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("response %d is not one record batch", i+1)
		}
		rows += batch.GetRowCount()
		raw := codec.raw[i+1]
		// The server's pre-built encoding is not Go's (its length varints are padded so
		// that the IPC message sits 8-byte aligned in the response), yet it parses to the
		// same message, and Go's own encoding of it parses back equal.
		if len(raw) <= proto.Size(resp) {
			t.Fatalf("response %d: %d bytes, no larger than the minimal %d", i+1, len(raw), proto.Size(resp))
		}
		if at := bytes.Index(raw, batch.GetSerializedRecordBatch()); at < 0 || at%8 != 0 {
			t.Fatalf("response %d: IPC message at offset %d", i+1, at)
		}
		again := &skewlessv1.GetHistoricalFeaturesResponse{}
		if data, err := proto.Marshal(resp); err != nil || proto.Unmarshal(data, again) != nil || !proto.Equal(again, resp) {
			t.Fatalf("response %d does not round-trip through the generated type", i+1)
		}
	}
	if rows != 10 {
		t.Fatalf("row_count adds up to %d, want the 10 entity rows", rows)
	}
}

func TestLiveHistoricalErrors(t *testing.T) {
	c := liveClient(t)
	_, err := c.HistoricalFeatures(context.Background(), historicalQuery(Features("driver_stats:no_such_feature")))
	var e *Error
	if !errors.As(err, &e) || e.Code != codes.NotFound || e.Reason != "FEATURE_NOT_FOUND" {
		t.Fatalf("unknown feature: err = %#v", err)
	}
	q := historicalQuery(FeatureService("driver_ranking"))
	q.Path = "no_rows.parquet"
	_, err = c.HistoricalBatches(context.Background(), q)
	if !errors.As(err, &e) || e.Code != codes.InvalidArgument || len(e.FieldViolations) == 0 ||
		e.FieldViolations[0].Field != "query.path" {
		t.Fatalf("missing entity rows: err = %#v", err)
	}
}

func TestLiveHistoricalCloseEarlyCancels(t *testing.T) {
	c := liveClient(t)
	q := historicalQuery(FeatureService("driver_ranking"))
	q.BatchSize = 1
	r, err := c.HistoricalBatches(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Next() || r.RecordBatch().NumRows() != 1 {
		t.Fatalf("first batch: %v", r.Err())
	}
	if err := r.Close(); err != nil || r.Next() {
		t.Fatalf("after Close: err=%v", err)
	}
	// The server keeps serving.
	res, err := c.HistoricalFeatures(context.Background(), historicalQuery(FeatureService("driver_ranking")))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	if res.NumRows() != 10 || len(res.Batches) != 1 {
		t.Fatalf("%d rows in %d batches", res.NumRows(), len(res.Batches))
	}
}
