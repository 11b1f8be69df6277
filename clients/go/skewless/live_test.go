package skewless

// Integration tests against a live server holding the contract fixture
// (tests/integration/client_harness.py, described in docs/clients.md). They run when
// SKEWLESS_ADDR=host:port is set and are skipped otherwise.

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	skewlessv1 "github.com/skewless/skewless/clients/go/gen/skewless/v1"
)

func liveClient(t *testing.T) *Client {
	t.Helper()
	addr := os.Getenv("SKEWLESS_ADDR")
	if addr == "" {
		t.Skip("SKEWLESS_ADDR is not set: no live server to test against")
	}
	c, err := Dial(addr, WithInsecure(), WithDefaultTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

var (
	present = skewlessv1.FeatureStatus_FEATURE_STATUS_PRESENT
	null    = skewlessv1.FeatureStatus_FEATURE_STATUS_NULL_VALUE
	missing = skewlessv1.FeatureStatus_FEATURE_STATUS_NOT_FOUND
	stale   = skewlessv1.FeatureStatus_FEATURE_STATUS_OUTSIDE_MAX_AGE
)

func TestLiveFeatureService(t *testing.T) {
	c := liveClient(t)
	res, err := c.OnlineFeatures(context.Background(), FeatureService("driver_ranking"),
		Int64s("driver_id", 1001, 1002, 1003, 9999), Int64s("customer_id", 2001, 2002, 8888, 2004))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"conv_rate", "acc_rate", "avg_daily_trips", "current_balance", "is_premium"}
	if got := res.Names(); len(got) != len(want) || res.Rows() != 4 {
		t.Fatalf("names = %v (rows %d), want %v", got, res.Rows(), want)
	}
	for i, name := range res.Names() {
		if name != want[i] {
			t.Fatalf("names = %v, want %v", res.Names(), want)
		}
	}
	t1 := time.Date(2025, 6, 1, 12, 0, 0, 123456000, time.UTC)
	t2 := time.Date(2025, 6, 1, 13, 30, 0, 0, time.UTC)
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

	// Driver 1001: every value present, microsecond event time kept.
	if v := res.Get("conv_rate", 0); !v.Present() || !v.EventTime.Equal(t1) {
		t.Fatalf("1001 conv_rate = %+v", v)
	} else if f, _ := v.Float64(); f != float64(float32(0.85)) {
		t.Fatalf("1001 conv_rate = %v", f)
	}
	if v := res.Get("avg_daily_trips", 0); v.Status != present {
		t.Fatalf("1001 avg_daily_trips = %+v", v)
	} else if n, _ := v.Int64(); n != 42 {
		t.Fatalf("1001 avg_daily_trips = %d", n)
	}
	// Driver 1002: conv_rate stored as null; the row's event time is still returned.
	if v := res.Get("conv_rate", 1); v.Status != null || !v.IsNull() || !v.EventTime.Equal(t2) {
		t.Fatalf("1002 conv_rate (stored null) = %+v", v)
	}
	if f, _ := res.Get("acc_rate", 1).Float64(); f != 0.75 {
		t.Fatalf("1002 acc_rate = %v", f)
	}
	// Driver 1003: older than the TTL; driver 9999: never stored.
	for _, name := range want[:3] {
		if v := res.Get(name, 2); v.Status != stale || !v.IsNull() || !v.EventTime.Equal(old) {
			t.Fatalf("1003 %s (stale) = %+v", name, v)
		}
		if v := res.Get(name, 3); v.Status != missing || !v.IsNull() || !v.EventTime.IsZero() {
			t.Fatalf("9999 %s (missing) = %+v", name, v)
		}
	}
	// Customers: 2001 premium, 8888 missing, 2004 stored null.
	if b, ok := res.Get("is_premium", 0).Bool(); !ok || !b {
		t.Fatalf("2001 is_premium = %+v", res.Get("is_premium", 0))
	}
	if v := res.Get("current_balance", 2); v.Status != missing {
		t.Fatalf("8888 current_balance = %+v", v)
	}
	if v := res.Get("is_premium", 3); v.Status != null || !v.EventTime.Equal(t1) {
		t.Fatalf("2004 is_premium = %+v", v)
	}
	if f, _ := res.Get("current_balance", 3).Float64(); f != -3.25 {
		t.Fatalf("2004 current_balance = %v", f)
	}
}

func TestLiveFeatureListWithFullNames(t *testing.T) {
	c := liveClient(t)
	res, err := c.OnlineFeatures(context.Background(),
		Features("driver_stats:conv_rate", "customer_profile:segment").WithFullFeatureNames(),
		Int64s("driver_id", 1002, 1001), Int64s("customer_id", 2002, 2001))
	if err != nil {
		t.Fatal(err)
	}
	names := res.Names()
	if len(names) != 2 || names[0] != "driver_stats__conv_rate" || names[1] != "customer_profile__segment" {
		t.Fatalf("names = %v", names)
	}
	if s, _ := res.Get("customer_profile__segment", 0).Str(); s != "économie ✓" {
		t.Fatalf("2002 segment = %q", s)
	}
	if f, _ := res.Get("driver_stats__conv_rate", 1).Float64(); f != float64(float32(0.85)) {
		t.Fatalf("1001 conv_rate = %v", f)
	}
}

func TestLiveUnknownFeatureIsNotFound(t *testing.T) {
	c := liveClient(t)
	_, err := c.OnlineFeatures(context.Background(), Features("driver_stats:no_such_feature"),
		Int64s("driver_id", 1001))
	var e *Error
	if !errors.As(err, &e) || e.Code != codes.NotFound || e.Reason == "" || e.Domain != "skewless.dev" {
		t.Fatalf("err = %#v", err)
	}
}

func TestLiveWrongKeyTypeIsInvalidArgument(t *testing.T) {
	c := liveClient(t)
	_, err := c.OnlineFeatures(context.Background(), Features("driver_stats"), Strings("driver_id", "1001"))
	var e *Error
	if !errors.As(err, &e) || e.Code != codes.InvalidArgument || len(e.FieldViolations) == 0 {
		t.Fatalf("err = %#v", err)
	}
}

func TestLiveDeadlineIsEnforced(t *testing.T) {
	c := liveClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	time.Sleep(time.Millisecond)
	_, err := c.OnlineFeatures(ctx, Features("driver_stats"), Int64s("driver_id", 1001))
	var e *Error
	if !errors.As(err, &e) || e.Code != codes.DeadlineExceeded {
		t.Fatalf("err = %#v", err)
	}
}

func TestLiveRegistryThroughGeneratedStub(t *testing.T) {
	c := liveClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Registry.ListFeatureViews(ctx, &skewlessv1.ListFeatureViewsRequest{})
	if err != nil {
		t.Fatal(FromError(err))
	}
	found := false
	for _, v := range resp.GetFeatureViews() {
		found = found || v.GetName() == "driver_stats"
	}
	if !found {
		t.Fatalf("driver_stats not listed: %v", resp.GetFeatureViews())
	}
}
