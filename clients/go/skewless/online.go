package skewless

import (
	"context"
	"time"

	skewlessv1 "github.com/skewless/skewless/clients/go/gen/skewless/v1"
)

// Selection says which features an online request returns: a feature service or an
// explicit list of references. Build it with FeatureService or Features.
type Selection struct {
	service          string
	features         []string
	fullFeatureNames bool
}

// FeatureService selects the features of a registered feature service.
func FeatureService(name string) Selection { return Selection{service: name} }

// Features selects features by reference: "view:feature", or "view" for all of a view's.
func Features(refs ...string) Selection { return Selection{features: refs} }

// WithFullFeatureNames names the results "view__feature" instead of "feature".
func (s Selection) WithFullFeatureNames() Selection {
	s.fullFeatureNames = true
	return s
}

// Request builds the generated request message for this selection and entities.
func (s Selection) Request(entities ...EntityColumn) *skewlessv1.GetOnlineFeaturesRequest {
	req := &skewlessv1.GetOnlineFeaturesRequest{
		Entities:         entityMap(entities),
		FullFeatureNames: s.fullFeatureNames,
	}
	if s.service != "" {
		req.Kind = &skewlessv1.GetOnlineFeaturesRequest_FeatureService{FeatureService: s.service}
	} else {
		req.Kind = &skewlessv1.GetOnlineFeaturesRequest_Features{
			Features: &skewlessv1.FeatureList{Features: s.features},
		}
	}
	return req
}

// OnlineFeatures returns the latest feature values of the given entities. The call
// ends at ctx's deadline (or after the client's default timeout when ctx has none).
// A failed call returns an *Error holding the gRPC status and its details.
func (c *Client) OnlineFeatures(ctx context.Context, sel Selection, entities ...EntityColumn) (*OnlineResult, error) {
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	resp, err := c.Online.GetOnlineFeatures(ctx, sel.Request(entities...))
	if err != nil {
		return nil, FromError(err)
	}
	return NewOnlineResult(resp), nil
}

// OnlineResult is a GetOnlineFeatures response indexed by feature name.
type OnlineResult struct {
	// Response is the message as received.
	Response *skewlessv1.GetOnlineFeaturesResponse
	byName   map[string]*skewlessv1.FeatureVector
}

// NewOnlineResult indexes a response by feature name.
func NewOnlineResult(resp *skewlessv1.GetOnlineFeaturesResponse) *OnlineResult {
	r := &OnlineResult{Response: resp, byName: make(map[string]*skewlessv1.FeatureVector, len(resp.GetResults()))}
	for _, v := range resp.GetResults() {
		r.byName[v.GetName()] = v
	}
	return r
}

// Names returns the feature names in response order.
func (r *OnlineResult) Names() []string {
	names := make([]string, 0, len(r.Response.GetResults()))
	for _, v := range r.Response.GetResults() {
		names = append(names, v.GetName())
	}
	return names
}

// Rows returns the number of entity rows.
func (r *OnlineResult) Rows() int {
	results := r.Response.GetResults()
	if len(results) == 0 {
		return 0
	}
	return len(results[0].GetStatuses())
}

// Has reports whether the response holds a feature of that name.
func (r *OnlineResult) Has(feature string) bool {
	_, ok := r.byName[feature]
	return ok
}

// Get returns one feature's value for one entity row (rows in request order). An
// unknown name or an out-of-range row gives a FeatureValue with status UNSPECIFIED.
func (r *OnlineResult) Get(feature string, row int) FeatureValue {
	v, ok := r.byName[feature]
	if !ok || row < 0 || row >= len(v.GetStatuses()) {
		return FeatureValue{}
	}
	fv := FeatureValue{Status: v.GetStatuses()[row]}
	if row < len(v.GetValues()) {
		fv.Value = v.GetValues()[row]
	}
	if row < len(v.GetEventTimes()) {
		if ts := v.GetEventTimes()[row]; ts != nil && (ts.GetSeconds() != 0 || ts.GetNanos() != 0) {
			fv.EventTime = ts.AsTime()
		}
	}
	return fv
}

// FeatureValue is one feature of one entity row: value, status and event time.
type FeatureValue struct {
	// Value is the stored value; null unless Status is PRESENT.
	Value *skewlessv1.Value
	// Status says whether the value is present, null, missing or too old.
	Status skewlessv1.FeatureStatus
	// EventTime is the event time of the stored row (UTC); zero when NOT_FOUND.
	EventTime time.Time
}

// Present reports whether the status is PRESENT.
func (v FeatureValue) Present() bool {
	return v.Status == skewlessv1.FeatureStatus_FEATURE_STATUS_PRESENT
}

// IsNull reports whether the value is null (for any status).
func (v FeatureValue) IsNull() bool {
	if v.Value == nil || v.Value.GetKind() == nil {
		return true
	}
	_, null := v.Value.GetKind().(*skewlessv1.Value_NullValue)
	return null
}

// Int64 returns an INT64 (or INT32) value; ok is false for null or another type.
func (v FeatureValue) Int64() (int64, bool) {
	switch k := v.Value.GetKind().(type) {
	case *skewlessv1.Value_Int64Value:
		return k.Int64Value, true
	case *skewlessv1.Value_Int32Value:
		return int64(k.Int32Value), true
	}
	return 0, false
}

// Float64 returns a FLOAT64 (or FLOAT32) value; ok is false for null or another type.
func (v FeatureValue) Float64() (float64, bool) {
	switch k := v.Value.GetKind().(type) {
	case *skewlessv1.Value_DoubleValue:
		return k.DoubleValue, true
	case *skewlessv1.Value_FloatValue:
		return float64(k.FloatValue), true
	}
	return 0, false
}

// Str returns a STRING value; ok is false for null or another type.
func (v FeatureValue) Str() (string, bool) {
	k, ok := v.Value.GetKind().(*skewlessv1.Value_StringValue)
	if !ok {
		return "", false
	}
	return k.StringValue, true
}

// Bool returns a BOOL value; ok is false for null or another type.
func (v FeatureValue) Bool() (bool, bool) {
	k, ok := v.Value.GetKind().(*skewlessv1.Value_BoolValue)
	if !ok {
		return false, false
	}
	return k.BoolValue, true
}

// Interface returns the value as a plain Go value: nil, int32, int64, float32, float64,
// string, []byte, bool, time.Time, or a slice of one of these for list types.
func (v FeatureValue) Interface() any { return ValueInterface(v.Value) }

// ValueInterface converts a generated Value to a plain Go value (see FeatureValue.Interface).
func ValueInterface(value *skewlessv1.Value) any {
	switch k := value.GetKind().(type) {
	case *skewlessv1.Value_Int32Value:
		return k.Int32Value
	case *skewlessv1.Value_Int64Value:
		return k.Int64Value
	case *skewlessv1.Value_FloatValue:
		return k.FloatValue
	case *skewlessv1.Value_DoubleValue:
		return k.DoubleValue
	case *skewlessv1.Value_StringValue:
		return k.StringValue
	case *skewlessv1.Value_BytesValue:
		return k.BytesValue
	case *skewlessv1.Value_BoolValue:
		return k.BoolValue
	case *skewlessv1.Value_TimestampValue:
		return k.TimestampValue.AsTime()
	case *skewlessv1.Value_Int32ListValue:
		return k.Int32ListValue.GetValues()
	case *skewlessv1.Value_Int64ListValue:
		return k.Int64ListValue.GetValues()
	case *skewlessv1.Value_FloatListValue:
		return k.FloatListValue.GetValues()
	case *skewlessv1.Value_DoubleListValue:
		return k.DoubleListValue.GetValues()
	case *skewlessv1.Value_StringListValue:
		return k.StringListValue.GetValues()
	case *skewlessv1.Value_BytesListValue:
		return k.BytesListValue.GetValues()
	case *skewlessv1.Value_BoolListValue:
		return k.BoolListValue.GetValues()
	case *skewlessv1.Value_TimestampListValue:
		out := make([]time.Time, len(k.TimestampListValue.GetValues()))
		for i, ts := range k.TimestampListValue.GetValues() {
			out[i] = ts.AsTime()
		}
		return out
	}
	return nil
}
