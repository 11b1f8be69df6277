package skewless

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	skewlessv1 "github.com/skewless/skewless/clients/go/gen/skewless/v1"
)

func TestEntityColumnsBuildTypedValues(t *testing.T) {
	req := FeatureService("svc").Request(Int64s("driver_id", 1001, 1002), Strings("city", "Zürich"))
	if req.GetFeatureService() != "svc" || req.GetFullFeatureNames() {
		t.Fatalf("unexpected selection: %v", req)
	}
	ids := req.GetEntities()["driver_id"].GetValues()
	if len(ids) != 2 || ids[0].GetInt64Value() != 1001 || ids[1].GetInt64Value() != 1002 {
		t.Fatalf("driver_id column = %v", ids)
	}
	if got := req.GetEntities()["city"].GetValues()[0].GetStringValue(); got != "Zürich" {
		t.Fatalf("city = %q", got)
	}
	list := Features("v:a", "v").WithFullFeatureNames().Request(Int32s("k", 7))
	if got := list.GetFeatures().GetFeatures(); len(got) != 2 || got[0] != "v:a" || !list.GetFullFeatureNames() {
		t.Fatalf("feature list request = %v", list)
	}
	if list.GetEntities()["k"].GetValues()[0].GetInt32Value() != 7 {
		t.Fatalf("int32 column = %v", list.GetEntities()["k"])
	}
}

func TestOnlineResultReadsByName(t *testing.T) {
	when := time.Date(2025, 6, 1, 12, 0, 0, 123456000, time.UTC)
	res := NewOnlineResult(&skewlessv1.GetOnlineFeaturesResponse{Results: []*skewlessv1.FeatureVector{{
		Name: "conv_rate",
		Values: []*skewlessv1.Value{
			{Kind: &skewlessv1.Value_DoubleValue{DoubleValue: 0.85}}, {},
		},
		Statuses: []skewlessv1.FeatureStatus{
			skewlessv1.FeatureStatus_FEATURE_STATUS_PRESENT, skewlessv1.FeatureStatus_FEATURE_STATUS_NOT_FOUND,
		},
		EventTimes: []*timestamppb.Timestamp{timestamppb.New(when), {}},
	}}})
	if res.Rows() != 2 || !res.Has("conv_rate") || res.Names()[0] != "conv_rate" {
		t.Fatalf("rows=%d names=%v", res.Rows(), res.Names())
	}
	v := res.Get("conv_rate", 0)
	if f, ok := v.Float64(); !ok || f != 0.85 || !v.Present() || !v.EventTime.Equal(when) {
		t.Fatalf("row 0 = %+v", v)
	}
	missing := res.Get("conv_rate", 1)
	if missing.Present() || !missing.IsNull() || !missing.EventTime.IsZero() {
		t.Fatalf("row 1 = %+v", missing)
	}
	if res.Get("nope", 0).Status != skewlessv1.FeatureStatus_FEATURE_STATUS_UNSPECIFIED {
		t.Fatal("unknown feature should read as UNSPECIFIED")
	}
}

func TestFromErrorParsesRichStatus(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "driver_id must be INT64").WithDetails(
		&errdetails.ErrorInfo{Reason: "INVALID_ARGUMENT", Domain: "skewless.dev", Metadata: map[string]string{"key": "driver_id"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "entities.driver_id", Description: "wrong type"}}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(200 * time.Millisecond)},
	)
	if err != nil {
		t.Fatal(err)
	}
	var e *Error
	if !errors.As(FromError(st.Err()), &e) {
		t.Fatal("not an *Error")
	}
	if e.Code != codes.InvalidArgument || e.Reason != "INVALID_ARGUMENT" || e.Domain != "skewless.dev" ||
		e.Metadata["key"] != "driver_id" || len(e.FieldViolations) != 1 ||
		e.FieldViolations[0].Field != "entities.driver_id" || e.RetryDelay != 200*time.Millisecond {
		t.Fatalf("parsed = %+v", e)
	}
	if status.Code(e) != codes.InvalidArgument {
		t.Fatal("status.Code should see through *Error")
	}
	if FromError(nil) != nil || !errors.Is(FromError(context.Canceled), context.Canceled) {
		t.Fatal("nil and context errors pass through")
	}
}

func TestDialNeedsTransportChoice(t *testing.T) {
	if _, err := Dial("127.0.0.1:1"); err == nil {
		t.Fatal("Dial without WithTLS/WithInsecure must fail")
	}
	c, err := Dial("127.0.0.1:1", WithTLS(nil))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}

func TestHistoricalQueryBuildsTheGeneratedMessage(t *testing.T) {
	q := HistoricalQuery{
		Selection:       Features("v:a", "w").WithFullFeatureNames(),
		Path:            "rows/*.parquet",
		LabelTimeColumn: "label_time",
		BatchSize:       500,
		Compression:     skewlessv1.ArrowCompression_ARROW_COMPRESSION_ZSTD,
	}
	msg, err := q.Proto()
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.GetFeatures().GetFeatures(); len(got) != 2 || got[1] != "w" || !msg.GetFullFeatureNames() ||
		msg.GetPath() != "rows/*.parquet" || msg.GetLabelTimeColumn() != "label_time" || msg.GetBatchSize() != 500 ||
		msg.GetCompression() != skewlessv1.ArrowCompression_ARROW_COMPRESSION_ZSTD {
		t.Fatalf("query = %v", msg)
	}
	msg, err = HistoricalQuery{Selection: FeatureService("svc"), SQL: "SELECT * FROM labels"}.Proto()
	if err != nil || msg.GetFeatureService() != "svc" || msg.GetSql() != "SELECT * FROM labels" {
		t.Fatalf("sql query = %v (%v)", msg, err)
	}
	for _, bad := range []HistoricalQuery{
		{Selection: FeatureService("svc")},
		{Selection: FeatureService("svc"), Path: "a.parquet", SQL: "SELECT 1"},
	} {
		if _, err := bad.Proto(); err == nil {
			t.Fatalf("%+v: want an error (exactly one of Path or SQL)", bad)
		}
	}
}
